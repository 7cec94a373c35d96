/**
 * The geometric median of points (Weiszfeld's algorithm, float64): the SAE pre-encoder bias
 * initialisation (SPEC section 3), robust to the outlier tokens that drag the mean.
 * @module
 */

/**
 * Geometric median of rows [n, d]: argmin_m Σ‖x_i − m‖.
 *
 * @param x Points, row-major.
 * @param d Dimension.
 * @param iterations Maximum Weiszfeld iterations.
 * @param tolerance Stop when the estimate moves less than this (relative to its norm).
 * @returns The median [d].
 * @example
 * ```ts
 * import { ok } from "node:assert";
 * // Three points on a line and one far outlier: the median stays near the cluster.
 * const m = geometricMedian(new Float32Array([0, 0, 1, 0, 2, 0, 1000, 0]), 2);
 * ok(m[0] > 1 && m[0] < 2 && Math.abs(m[1]) < 1e-9);
 * ```
 */
export function geometricMedian(
  x: Float32Array,
  d: number,
  iterations = 100,
  tolerance = 1e-7,
): Float64Array {
  const n = x.length / d;
  if (!Number.isInteger(n) || n === 0) {
    throw new RangeError(`Expected a non-empty multiple of d=${d} values, got ${x.length}`);
  }
  const m = new Float64Array(d);
  for (let i = 0; i < x.length; i++) m[i % d] += x[i] / n; // start at the mean
  const next = new Float64Array(d);
  for (let it = 0; it < iterations; it++) {
    next.fill(0);
    let weights = 0;
    for (let r = 0; r < n; r++) {
      let dist = 0;
      for (let j = 0; j < d; j++) dist += (x[r * d + j] - m[j]) ** 2;
      const w = 1 / Math.max(Math.sqrt(dist), 1e-12); // a point at the estimate: tiny step
      weights += w;
      for (let j = 0; j < d; j++) next[j] += w * x[r * d + j];
    }
    let moved = 0;
    let norm = 0;
    for (let j = 0; j < d; j++) {
      const v = next[j] / weights;
      moved += (v - m[j]) ** 2;
      norm += v * v;
      m[j] = v;
    }
    if (Math.sqrt(moved) <= tolerance * Math.max(1, Math.sqrt(norm))) break;
  }
  return m;
}
