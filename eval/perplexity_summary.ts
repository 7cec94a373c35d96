/**
 * The perplexity table (SPEC section 6): per configuration and seed the mean, median and
 * bootstrap 95% CI of per-text judge perplexities, and per configuration the pooled figures plus
 * the mean ± 95% CI of the per-seed means.
 * @module
 */
import type { Row } from "../core/arrow_table.ts";
import { bootstrapMean } from "./bootstrap.ts";
import { formatSummary, seedSummary } from "./seed_stats.ts";

/** One scored text, as saved in `texts.arrow`. */
export type TextScore = {
  configuration: string;
  seed: number;
  sample: number;
  text: string;
  /** Backbone tokens generated (EOS not counted). */
  token_count: number;
  stopped_at_eos: boolean;
  /** Judge tokens scored. */
  judge_tokens: number;
  /** Mean token NLL under the judge (nats); NaN for an empty text. */
  nll: number;
  perplexity: number;
};

/**
 * Summarise scored texts. Empty texts (NaN perplexity) are counted, not averaged.
 *
 * @param texts Every scored text.
 * @param options Bootstrap resamples and seed.
 * @returns Summary rows (seed −1: all seeds pooled) and the printed table.
 * @example
 * ```ts
 * import { strictEqual } from "node:assert";
 * const t = (seed: number, perplexity: number) => ({
 *   configuration: "original", seed, sample: 0, text: "a", token_count: 1,
 *   stopped_at_eos: false, judge_tokens: 1, nll: Math.log(perplexity), perplexity,
 * });
 * const { rows } = summarizePerplexity([t(0, 10), t(0, 20), t(1, 30)], { resamples: 10, seed: 0 });
 * strictEqual(rows.length, 3);
 * strictEqual(rows[2].seed, -1);
 * strictEqual(rows[2].seed_mean, 22.5);
 * ```
 */
export function summarizePerplexity(
  texts: TextScore[],
  options: { resamples: number; seed: number },
): { rows: Row[]; table: string } {
  const rows: Row[] = [];
  const lines = [
    ["configuration", "seeds", "texts", "empty", "mean", "median", "95% CI", "mean over seeds"]
      .join("\t"),
  ];
  const ppl = (list: TextScore[]) => list.map((t) => t.perplexity).filter((v) => !isNaN(v));
  const summary = (list: TextScore[]) => {
    const s = bootstrapMean(ppl(list), options);
    return {
      n: s.n,
      empty: list.length - s.n,
      mean: s.mean,
      median: s.median,
      ci_low: s.ciLow,
      ci_high: s.ciHigh,
    };
  };
  for (const configuration of [...new Set(texts.map((t) => t.configuration))]) {
    const mine = texts.filter((t) => t.configuration === configuration);
    const seeds = [...new Set(mine.map((t) => t.seed))];
    const perSeed = seeds.map((seed) => ({
      configuration,
      seed,
      ...summary(mine.filter((t) => t.seed === seed)),
    }));
    const pooled = summary(mine);
    const over = seedSummary(perSeed.map((r) => r.mean).filter((v) => !isNaN(v)));
    rows.push(...perSeed, {
      configuration,
      seed: -1,
      ...pooled,
      seed_mean: over.mean,
      seed_ci95: over.ci95,
    });
    const f = (v: number) => v.toPrecision(4);
    lines.push([
      configuration,
      String(seeds.length),
      String(mine.length),
      String(pooled.empty),
      f(pooled.mean),
      f(pooled.median),
      `[${f(pooled.ci_low)}, ${f(pooled.ci_high)}]`,
      formatSummary(over),
    ].join("\t"));
  }
  return { rows, table: lines.join("\n") };
}
