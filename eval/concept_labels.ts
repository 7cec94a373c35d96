/**
 * Concept labels of latents and their detection scores (SPEC section 6): the prompt that asks
 * for `{concept, alternatives}` JSON and its validation; detection — the labeller sees shuffled
 * held-out activating and non-activating contexts and says which fit the label — scored by
 * accuracy and F1, against a baseline where each latent gets another latent's label.
 * @module
 */
import { Rng } from "../core/rng.ts";
import type { ChatMessage, LlmClient } from "./llm_client.ts";

/** A concept label. */
export interface ConceptLabel {
  concept: string;
  alternatives: string[];
}

/** What the labeller sees of one latent. */
export interface LabelInput {
  /** Rendered contexts (peak token marked ⟦ ⟧), strongest first, with activations. */
  examples: Array<{ text: string; activation: number }>;
  maxActivation: number;
  /** Tokens the latent's head direction promotes (may be empty). */
  topTokens: string[];
  /** Tokens it fires on most often. */
  frequentTokens: string[];
}

/** A result, or why there is none. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; reason: string };

/** Something that names latents and judges contexts against a name. */
export interface Labeller {
  /** E.g. "llm:gpt-4o-mini" or "offline-top-tokens"; written into every output. */
  name: string;
  label(input: LabelInput): Promise<Outcome<ConceptLabel>>;
  /** Which of the contexts fit the label. */
  detect(label: ConceptLabel, contexts: string[]): Promise<Outcome<boolean[]>>;
}

/** Detection quality on one held-out set. */
export interface DetectionScore {
  n: number;
  accuracy: number;
  precision: number;
  recall: number;
  f1: number;
}

/** One latent to label and score. */
export interface LatentTask {
  input: LabelInput;
  heldOutActive: string[];
  heldOutInactive: string[];
}

/** How labelling and scoring ended for one latent. */
export interface LatentResult {
  status: "labelled" | "failed";
  label: ConceptLabel | null;
  /** Why labelling failed, else null. */
  reason: string | null;
  detection: DetectionScore | null;
  /** Detection with the label of latent `baselineFrom` (index into the tasks). */
  baseline: DetectionScore | null;
  baselineFrom: number | null;
  /** Why a detection score is missing, else null. */
  detectionReason: string | null;
}

const SYSTEM =
  "You are an interpretability researcher. You name the concept that one latent unit " +
  "of a language model responds to, from text excerpts where it fires. You answer with JSON only.";

/**
 * The labelling prompt.
 *
 * @param input Examples, activations and tokens of one latent.
 * @returns Chat messages asking for `{"concept": …, "alternatives": […]}`.
 */
export function labelMessages(input: LabelInput): ChatMessage[] {
  const scale = input.maxActivation > 0 ? input.maxActivation : 1;
  const lines = input.examples.map((e, i) =>
    `${i + 1}. (activation ${(e.activation / scale).toFixed(2)}) ${e.text}`
  );
  const quote = (ts: string[]) => ts.map((t) => JSON.stringify(t)).join(", ");
  const parts = [
    "Excerpts where the latent fires, strongest first. The token it fires on is marked ⟦like this⟧;",
    "activations are relative to its maximum.",
    "",
    ...lines,
    "",
    `Tokens it fires on most often: ${quote(input.frequentTokens)}`,
  ];
  if (input.topTokens.length > 0) {
    parts.push(`Next tokens it promotes most: ${quote(input.topTokens)}`);
  }
  parts.push(
    "",
    "Name the concept in 1 to 6 words. Reply with only this JSON object:",
    '{"concept": "<name>", "alternatives": ["<up to 3 other plausible names>"]}',
  );
  return [{ role: "system", content: SYSTEM }, { role: "user", content: parts.join("\n") }];
}

/**
 * Parse and validate a labelling answer (tolerates a markdown code fence and text around the
 * object).
 *
 * @param text The model's answer.
 * @returns The label, trimmed, with at most 5 distinct alternatives.
 * @throws {Error} Saying what is wrong, in words the model can act on.
 * @example
 * ```ts
 * import { deepStrictEqual, throws } from "node:assert";
 * const fence = "`".repeat(3);
 * const answer = `Sure!\n${fence}json\n{"concept": " whales ", "alternatives": ["sea"]}\n${fence}`;
 * deepStrictEqual(parseLabel(answer), { concept: "whales", alternatives: ["sea"] });
 * throws(() => parseLabel('{"name": "x"}'), /"concept" must be a non-empty string/);
 * ```
 */
export function parseLabel(text: string): ConceptLabel {
  const value = parseJsonObject(text);
  const concept = typeof value.concept === "string" ? value.concept.trim() : "";
  if (concept === "") throw new Error(`"concept" must be a non-empty string`);
  if (concept.length > 120) throw new Error(`"concept" must be at most 120 characters`);
  const alts = value.alternatives;
  if (!Array.isArray(alts) || alts.some((a) => typeof a !== "string")) {
    throw new Error(`"alternatives" must be an array of strings`);
  }
  const alternatives = [...new Set((alts as string[]).map((a) => a.trim()).filter((a) => a))]
    .filter((a) => a !== concept).slice(0, 5);
  return { concept, alternatives };
}

/**
 * The detection prompt: which numbered contexts fit the label.
 *
 * @param label The label under test.
 * @param contexts Rendered contexts, in the order they are numbered.
 * @returns Chat messages asking for `{"fits": [numbers]}`.
 */
export function detectionMessages(label: ConceptLabel, contexts: string[]): ChatMessage[] {
  const lines = contexts.map((c, i) => `${i + 1}. ${c}`);
  const content = [
    `A latent of a language model was labelled: ${JSON.stringify(label.concept)}.`,
    "For each excerpt, decide whether the marked token ⟦like this⟧ in its context fits that concept,",
    "i.e. whether the latent would fire there. Some excerpts fit, some do not.",
    "",
    ...lines,
    "",
    'Reply with only this JSON object: {"fits": [<numbers of the excerpts that fit>]}',
  ].join("\n");
  return [{ role: "system", content: SYSTEM }, { role: "user", content }];
}

/**
 * Parse a detection answer.
 *
 * @param text The model's answer.
 * @param n Number of contexts shown.
 * @returns Per context whether it was judged to fit.
 * @throws {Error} When `fits` is missing or holds anything but numbers 1..n.
 * @example
 * ```ts
 * import { deepStrictEqual, throws } from "node:assert";
 * deepStrictEqual(parseDetection('{"fits": [3, 1]}', 4), [true, false, true, false]);
 * throws(() => parseDetection('{"fits": [5]}', 4), /integers from 1 to 4/);
 * ```
 */
export function parseDetection(text: string, n: number): boolean[] {
  const fits = parseJsonObject(text).fits;
  if (!Array.isArray(fits) || fits.some((i) => !Number.isInteger(i) || i < 1 || i > n)) {
    throw new Error(`"fits" must be an array of integers from 1 to ${n}`);
  }
  const out = new Array<boolean>(n).fill(false);
  for (const i of fits as number[]) out[i - 1] = true;
  return out;
}

/**
 * Accuracy, precision, recall and F1 of predicted fits against the truth (activating or not).
 *
 * @param truth Per context: does the latent fire there.
 * @param predicted Per context: did the labeller say it fits.
 * @returns The scores; precision, recall or F1 with an empty denominator are 0.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * // tp 2, fn 1, fp 1, tn 2
 * deepStrictEqual(
 *   detectionScore([true, true, true, false, false, false], [true, true, false, true, false, false]),
 *   { n: 6, accuracy: 4 / 6, precision: 2 / 3, recall: 2 / 3, f1: 2 / 3 },
 * );
 * ```
 */
export function detectionScore(truth: boolean[], predicted: boolean[]): DetectionScore {
  if (truth.length !== predicted.length) {
    throw new RangeError(`Expected ${truth.length} predictions, got ${predicted.length}`);
  }
  let tp = 0, fp = 0, fn = 0, tn = 0;
  truth.forEach((t, i) => {
    if (t && predicted[i]) tp++;
    else if (t) fn++;
    else if (predicted[i]) fp++;
    else tn++;
  });
  const n = truth.length;
  const precision = tp + fp > 0 ? tp / (tp + fp) : 0;
  const recall = tp + fn > 0 ? tp / (tp + fn) : 0;
  const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
  return { n, accuracy: n > 0 ? (tp + tn) / n : 0, precision, recall, f1 };
}

/**
 * A permutation without fixed points (Sattolo's algorithm: one random cycle), so every latent
 * gets another latent's label in the baseline.
 *
 * @param n Size (for n < 2 the identity: no baseline is possible).
 * @param rng Generator.
 * @returns perm[i] ≠ i for all i when n ≥ 2.
 */
export function derangement(n: number, rng: Rng): number[] {
  const perm = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i);
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  return perm;
}

/**
 * Label every latent, then score each label by detection on its held-out contexts, and each
 * latent again with another latent's label (the shuffled-label baseline). Calls run
 * concurrently; the labeller limits how many are in flight.
 *
 * @param tasks Latents to label.
 * @param labeller LLM or offline labeller.
 * @param seed Seed of the context shuffles and the label permutation.
 * @returns One result per task, in order.
 */
export async function labelAndScore(
  tasks: LatentTask[],
  labeller: Labeller,
  seed: number,
): Promise<LatentResult[]> {
  // 1. Labels first: the baseline needs every latent's label.
  const labels = await Promise.all(tasks.map((t) => labeller.label(t.input)));
  const labelled = labels.flatMap((l, i) => l.ok ? [i] : []);
  const perm = derangement(labelled.length, new Rng(seed));
  const borrowed = new Map(labelled.map((i, k) => [i, labelled[perm[k]]]));

  // 2. Detection with the own label and with the borrowed one, on the same shuffled contexts.
  return await Promise.all(tasks.map(async (task, i): Promise<LatentResult> => {
    const got = labels[i];
    if (!got.ok) {
      const none = { label: null, detection: null, baseline: null, baselineFrom: null };
      return { status: "failed", reason: got.reason, ...none, detectionReason: null };
    }
    const rng = new Rng(seed * 1_000_003 + i + 1);
    const shown = rng.shuffle([
      ...task.heldOutActive.map((text) => ({ text, fires: true })),
      ...task.heldOutInactive.map((text) => ({ text, fires: false })),
    ]);
    const texts = shown.map((s) => s.text), truth = shown.map((s) => s.fires);
    const from = borrowed.get(i)!;
    const other = labels[from] as { ok: true; value: ConceptLabel };
    const score = async (label: ConceptLabel) => {
      if (texts.length === 0) return { ok: false as const, reason: "no held-out contexts" };
      const r = await labeller.detect(label, texts);
      return r.ok ? { ok: true as const, value: detectionScore(truth, r.value) } : r;
    };
    const [own, base] = await Promise.all([
      score(got.value),
      from === i ? Promise.resolve(null) : score(other.value),
    ]);
    const reasons = [own, base].flatMap((r) => r && !r.ok ? [r.reason] : []);
    return {
      status: "labelled",
      label: got.value,
      reason: null,
      detection: own.ok ? own.value : null,
      baseline: base?.ok ? base.value : null,
      baselineFrom: from === i ? null : from,
      detectionReason: reasons.length > 0 ? [...new Set(reasons)].join("; ") : null,
    };
  }));
}

/**
 * A labeller backed by a chat endpoint.
 *
 * @param client The configured client.
 * @param model Model name, for the record.
 */
export function llmLabeller(client: LlmClient, model: string): Labeller {
  const outcome = <T>(r: { ok: true; value: T } | { ok: false; reason: string }): Outcome<T> =>
    r.ok ? { ok: true, value: r.value } : { ok: false, reason: r.reason };
  return {
    name: `llm:${model}`,
    label: async (input) => outcome(await client.complete(labelMessages(input), parseLabel)),
    detect: async (label, contexts) =>
      outcome(
        await client.complete(
          detectionMessages(label, contexts),
          (t) => parseDetection(t, contexts.length),
        ),
      ),
  };
}

// deno-lint-ignore no-explicit-any
function parseJsonObject(text: string): Record<string, any> {
  const unfenced = text.replace(/```(?:json)?/gi, "");
  const start = unfenced.indexOf("{"), end = unfenced.lastIndexOf("}");
  if (start < 0 || end < start) throw new Error("the answer holds no JSON object");
  let value;
  try {
    value = JSON.parse(unfenced.slice(start, end + 1));
  } catch (e) {
    throw new Error(`the answer is not valid JSON (${(e as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error("the answer must be a JSON object");
  }
  return value;
}
