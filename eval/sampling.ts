/**
 * Next-token choice from logits (SPEC section 6): repetition penalty, then temperature, top-k and
 * top-p (nucleus), then a seeded draw — the order Hugging Face `generate` applies them in.
 * Temperature 0 is greedy: the argmax of the penalised logits, the limit of sampling as the
 * temperature goes to 0.
 * @module
 */
import type { Rng } from "../core/rng.ts";

/** How the next token is chosen. */
export interface SamplingOptions {
  /** Logits are divided by it; 0 chooses greedily. */
  temperature: number;
  /** Keep only tokens whose logit is at least the k-th largest (ties kept); 0: off. */
  topK: number;
  /** Keep the smallest most-likely set whose probability reaches p; 1: off. */
  topP: number;
  /** Positive logits of already-used tokens are divided by it, negative ones multiplied; 1: off. */
  repetitionPenalty: number;
}

/** The tokens that may be drawn, most likely first, and their probabilities (summing to 1). */
export interface TokenDistribution {
  ids: number[];
  probs: number[];
}

/**
 * Check sampling options, throwing a RangeError that names the bad one.
 *
 * @param o The options.
 */
export function checkSamplingOptions(o: SamplingOptions): void {
  const bad = (what: string, v: number, allowed: string) => {
    throw new RangeError(`Cannot sample with ${what} ${v}: expected ${allowed}`);
  };
  if (!(o.temperature >= 0) || !Number.isFinite(o.temperature)) {
    bad("temperature", o.temperature, "a finite number >= 0");
  }
  if (!Number.isInteger(o.topK) || o.topK < 0) bad("top_k", o.topK, "an integer >= 0");
  if (!(o.topP > 0 && o.topP <= 1)) bad("top_p", o.topP, "a number in (0, 1]");
  if (!(o.repetitionPenalty > 0) || !Number.isFinite(o.repetitionPenalty)) {
    bad("repetition_penalty", o.repetitionPenalty, "a finite number > 0");
  }
}

/**
 * Apply the repetition penalty (CTRL, Keskar et al. 2019, as Hugging Face implements it).
 *
 * @param logits One row of logits [vocab].
 * @param used Token ids already in the sequence (prompt included).
 * @param penalty The penalty; 1 leaves the logits unchanged.
 * @returns A float64 copy with the used tokens penalised.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const out = penalizeRepetitions(Float32Array.of(3, -2, 1), [0, 1], 2);
 * deepStrictEqual(Array.from(out), [1.5, -4, 1]);
 * ```
 */
export function penalizeRepetitions(
  logits: ArrayLike<number>,
  used: Iterable<number>,
  penalty: number,
): Float64Array {
  const out = Float64Array.from(logits);
  if (penalty === 1) return out;
  for (const id of new Set(used)) {
    const v = out[id];
    out[id] = v > 0 ? v / penalty : v * penalty;
  }
  return out;
}

/**
 * The distribution a token is drawn from: penalty, temperature, top-k, top-p.
 *
 * @param logits One row of logits [vocab].
 * @param used Token ids already in the sequence.
 * @param o Sampling options; temperature 0 gives the one-token greedy distribution.
 * @returns The kept tokens, most likely first (ties by id), with renormalised probabilities.
 * @example Top-k 2 then top-p 0.5 on logits ln 4, ln 2, ln 1, ln 1
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const logits = [4, 2, 1, 1].map(Math.log);
 * const o = { temperature: 1, topK: 2, topP: 1, repetitionPenalty: 1 };
 * const d = tokenDistribution(logits, [], o);
 * deepStrictEqual(d.ids, [0, 1]);
 * deepStrictEqual(d.probs.map((p) => p.toFixed(6)), ["0.666667", "0.333333"]);
 * deepStrictEqual(tokenDistribution(logits, [], { ...o, topP: 0.5 }).ids, [0]);
 * ```
 */
export function tokenDistribution(
  logits: ArrayLike<number>,
  used: Iterable<number>,
  o: SamplingOptions,
): TokenDistribution {
  // 1. Repetition penalty; greedy stops here.
  const x = penalizeRepetitions(logits, used, o.repetitionPenalty);
  if (o.temperature === 0) return { ids: [argmax(x)], probs: [1] };
  // 2. Temperature, then top-k: keep logits >= the k-th largest (as HF, ties at the edge stay).
  for (let i = 0; i < x.length; i++) x[i] /= o.temperature;
  const floor = o.topK > 0 && o.topK < x.length ? kthLargest(x, o.topK) : -Infinity;
  const ids: number[] = [];
  for (let i = 0; i < x.length; i++) if (x[i] >= floor && x[i] > -Infinity) ids.push(i);
  if (ids.length === 0) return { ids: [argmax(x)], probs: [1] };
  ids.sort((a, b) => x[b] - x[a] || a - b);
  // 3. Softmax over the kept tokens (float64, max subtracted).
  const top = x[ids[0]];
  let probs = ids.map((i) => Math.exp(x[i] - top));
  let total = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / total);
  // 4. Top-p: keep a token while the mass before it is below p (the first one always).
  if (o.topP < 1) {
    let mass = 0;
    let keep = 0;
    while (keep < probs.length && (keep === 0 || mass < o.topP)) mass += probs[keep++];
    ids.length = keep;
    probs = probs.slice(0, keep);
    total = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / total);
  }
  return { ids, probs };
}

/**
 * Choose the next token.
 *
 * @param logits One row of logits [vocab].
 * @param used Token ids already in the sequence.
 * @param o Sampling options.
 * @param rng Source of the one uniform draw a sampled choice uses (greedy draws nothing).
 * @returns The token id.
 * @example Temperature 0 is the argmax, with the penalty applied first
 * ```ts
 * import { strictEqual } from "node:assert";
 * import { Rng } from "../core/rng.ts";
 * const o = { temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1.5 };
 * strictEqual(chooseToken([2, 1.5, 0], [], o, new Rng(0)), 0);
 * strictEqual(chooseToken([2, 1.5, 0], [0], o, new Rng(0)), 1);
 * ```
 */
export function chooseToken(
  logits: ArrayLike<number>,
  used: Iterable<number>,
  o: SamplingOptions,
  rng: Rng,
): number {
  const { ids, probs } = tokenDistribution(logits, used, o);
  if (ids.length === 1) return ids[0];
  const u = rng.next();
  let mass = 0;
  for (let i = 0; i < ids.length; i++) {
    mass += probs[i];
    if (u < mass) return ids[i];
  }
  return ids[ids.length - 1]; // rounding: the mass summed to just under 1
}

function argmax(x: Float64Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** The k-th largest value (1-based) by quickselect on a copy: O(vocab) per call. */
function kthLargest(x: Float64Array, k: number): number {
  const a = Float64Array.from(x);
  const target = k - 1;
  let [lo, hi] = [0, a.length - 1];
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1];
    let [i, j] = [lo, hi];
    while (i <= j) {
      while (a[i] > pivot) i++;
      while (a[j] < pivot) j--;
      if (i <= j) {
        [a[i], a[j]] = [a[j], a[i]];
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target];
  }
  return a[target];
}
