/**
 * The offline labeller, used when no LLM endpoint is configured: it names a latent by the tokens
 * it fires on most often and the tokens its head direction promotes, and "detects" a context when
 * the marked token is one of those frequent tokens. It is not an LLM label: every output it
 * touches carries its name, {@link OFFLINE_LABELLER}.
 * @module
 */
import type { ConceptLabel, Labeller } from "./concept_labels.ts";

/** The name written into every label, dictionary and table the offline labeller produced. */
export const OFFLINE_LABELLER = "offline-top-tokens";

/**
 * The offline labeller.
 *
 * @returns A labeller that never fails and needs no network.
 * @example
 * ```ts
 * import { deepStrictEqual, strictEqual } from "node:assert";
 * const l = offlineLabeller();
 * const input = { examples: [], maxActivation: 1, topTokens: [" sea"], frequentTokens: [" whale", " ship"] };
 * const got = await l.label(input);
 * strictEqual(got.ok && got.value.concept, 'offline-top-tokens: fires on " whale", " ship"; promotes " sea"');
 * const fits = got.ok && await l.detect(got.value, ["a⟦ whale⟧", "the⟦ cat⟧"]);
 * deepStrictEqual(fits && fits.ok && fits.value, [true, false]);
 * ```
 */
export function offlineLabeller(): Labeller {
  return {
    name: OFFLINE_LABELLER,
    label: (input) => {
      const quote = (ts: string[]) => ts.slice(0, 3).map((t) => JSON.stringify(t)).join(", ");
      const promotes = input.topTokens.length > 0 ? `; promotes ${quote(input.topTokens)}` : "";
      const concept = `${OFFLINE_LABELLER}: fires on ${quote(input.frequentTokens)}${promotes}`;
      const label: ConceptLabel = { concept, alternatives: input.frequentTokens.slice(0, 5) };
      return Promise.resolve({ ok: true, value: label });
    },
    detect: (label, contexts) => {
      const tokens = new Set(label.alternatives);
      const marked = (c: string) => /⟦([\s\S]*?)⟧/.exec(c)?.[1] ?? null;
      return Promise.resolve({
        ok: true,
        value: contexts.map((c) => {
          const t = marked(c);
          return t !== null && tokens.has(t);
        }),
      });
    },
  };
}
