/**
 * Per-feature mean and sum of squared deviations, merged batch by batch in float64 with Chan
 * et al.'s parallel update: one pass, no catastrophic cancellation.
 * @module
 */

/** Running per-feature moments of row-major [n, d] batches. */
export class FeatureMoments {
  readonly d: number;
  /** Rows seen. */
  n = 0;
  /** Per-feature mean. */
  readonly mean: Float64Array;
  /** Per-feature Σ (x − mean)². */
  readonly m2: Float64Array;

  /** @param d Feature count. */
  constructor(d: number) {
    this.d = d;
    this.mean = new Float64Array(d);
    this.m2 = new Float64Array(d);
  }

  /**
   * Merge a batch.
   *
   * @param x Rows [n, d].
   * @example
   * ```ts
   * import { deepStrictEqual } from "node:assert";
   * const m = new FeatureMoments(1);
   * m.add(new Float32Array([1, 3]));
   * m.add(new Float32Array([11, 13]));
   * deepStrictEqual([m.n, m.mean[0], m.m2[0]], [4, 7, 104]);
   * ```
   */
  add(x: Float32Array): void {
    const d = this.d;
    const n = x.length / d;
    if (!Number.isInteger(n)) {
      throw new RangeError(`Expected a multiple of d=${d} values, got ${x.length}`);
    }
    if (n === 0) return;
    const bMean = new Float64Array(d);
    for (let r = 0; r < n; r++) for (let j = 0; j < d; j++) bMean[j] += x[r * d + j];
    for (let j = 0; j < d; j++) bMean[j] /= n;
    const bM2 = new Float64Array(d);
    for (let r = 0; r < n; r++) {
      for (let j = 0; j < d; j++) {
        const c = x[r * d + j] - bMean[j];
        bM2[j] += c * c;
      }
    }
    const total = this.n + n;
    for (let j = 0; j < d; j++) {
      const delta = bMean[j] - this.mean[j];
      this.m2[j] += bM2[j] + delta * delta * this.n * n / total;
      this.mean[j] += delta * n / total;
    }
    this.n = total;
  }

  /** Σ over features of Σ (x − mean)²: the denominator of FVU. */
  totalSquaredDeviation(): number {
    return this.m2.reduce((a, b) => a + b, 0);
  }
}
