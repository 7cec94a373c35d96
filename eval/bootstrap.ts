/**
 * Mean, median and a seeded percentile-bootstrap confidence interval of the mean, the summary
 * reported for per-text perplexities (SPEC section 6).
 * @module
 */
import { Rng } from "../core/rng.ts";

/** A summarised sample. */
export interface BootstrapSummary {
  n: number;
  mean: number;
  median: number;
  /** Bounds of the bootstrap CI of the mean (NaN when n = 0). */
  ciLow: number;
  ciHigh: number;
}

/** Options of {@link bootstrapMean}. */
export interface BootstrapOptions {
  /** Resamples (default 2000). */
  resamples?: number;
  /** Seed of the resampling (default 0). */
  seed?: number;
  /** Coverage of the interval (default 0.95). */
  level?: number;
}

/**
 * Mean, median and percentile-bootstrap CI of the mean.
 *
 * @param values The sample (NaN values are an error: filter them first).
 * @param options Resamples, seed and level.
 * @returns The summary; all NaN for an empty sample.
 * @example
 * ```ts
 * import { ok, strictEqual } from "node:assert";
 * const s = bootstrapMean([1, 2, 3, 4, 100]);
 * strictEqual(s.mean, 22);
 * strictEqual(s.median, 3);
 * ok(s.ciLow < s.mean && s.mean < s.ciHigh);
 * ```
 */
export function bootstrapMean(values: number[], options: BootstrapOptions = {}): BootstrapSummary {
  const { resamples = 2000, seed = 0, level = 0.95 } = options;
  if (values.some(Number.isNaN)) throw new RangeError("Cannot bootstrap NaN values");
  if (!(level > 0 && level < 1)) {
    throw new RangeError(`Cannot bootstrap at level ${level}: expected a number in (0, 1)`);
  }
  const n = values.length;
  if (n === 0) return { n, mean: NaN, median: NaN, ciLow: NaN, ciHigh: NaN };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const rng = new Rng(seed);
  const means = new Float64Array(resamples);
  for (let r = 0; r < resamples; r++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += values[rng.int(n)];
    means[r] = sum / n;
  }
  means.sort();
  const tail = (1 - level) / 2;
  return {
    n,
    mean,
    median: quantile(Float64Array.from(values).sort(), 0.5),
    ciLow: quantile(means, tail),
    ciHigh: quantile(means, 1 - tail),
  };
}

/** Quantile of sorted values with linear interpolation (type 7, NumPy's default). */
function quantile(sorted: Float64Array, q: number): number {
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (at - lo) * (sorted[hi] - sorted[lo]);
}
