/**
 * Row loops of the `blas` backend's fused sparse products (the TopK SAE's gather / scatter-add
 * path, models/sparse_topk.ts), shared by the main thread and its helper threads (this file must
 * not import tfjs: helper threads load it). Each touches only the `k` rows of a [m, d] table that a
 * token selects, and forms no [n, k, d] intermediate.
 *
 * Products accumulate in float64 (JavaScript numbers) and round once on store.
 * @module
 */

/**
 * out[i] = Σ_κ c[i, κ] · w[idx[i, κ]] for rows i in [start, end); zero coefficients are skipped.
 *
 * @param c [n, k] coefficients.
 * @param w [m, d] table.
 * @param idx [n, k] table rows.
 * @param out [n, d] output (rows in range are overwritten).
 */
export function combineRows(
  c: Float32Array,
  w: Float32Array,
  idx: Int32Array,
  out: Float32Array,
  k: number,
  d: number,
  start: number,
  end: number,
): void {
  const acc = new Float64Array(d);
  for (let i = start; i < end; i++) {
    acc.fill(0);
    for (let s = i * k, e = s + k; s < e; s++) {
      const coef = c[s];
      if (coef === 0) continue;
      const base = idx[s] * d;
      for (let j = 0; j < d; j++) acc[j] += coef * w[base + j];
    }
    out.set(acc, i * d);
  }
}

/**
 * out[i, κ] = v[i] · w[idx[i, κ]] for rows i in [start, end).
 *
 * @param v [n, d] vectors.
 * @param w [m, d] table.
 * @param idx [n, k] table rows.
 * @param out [n, k] output.
 */
export function dotRows(
  v: Float32Array,
  w: Float32Array,
  idx: Int32Array,
  out: Float32Array,
  k: number,
  d: number,
  start: number,
  end: number,
): void {
  for (let i = start; i < end; i++) {
    const vb = i * d;
    for (let s = i * k, e = s + k; s < e; s++) {
      const wb = idx[s] * d;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0, j = 0;
      for (; j + 3 < d; j += 4) {
        a0 += v[vb + j] * w[wb + j];
        a1 += v[vb + j + 1] * w[wb + j + 1];
        a2 += v[vb + j + 2] * w[wb + j + 2];
        a3 += v[vb + j + 3] * w[wb + j + 3];
      }
      for (; j < d; j++) a0 += v[vb + j] * w[wb + j];
      out[s] = (a0 + a1) + (a2 + a3);
    }
  }
}

/**
 * Scatter-add of outer products: out[idx[i, κ]] += c[i, κ] · v[i], for target rows in [lo, hi)
 * only (zeroed first), adding in (i, κ) order — so shares over disjoint row ranges give the same
 * result as one thread.
 *
 * @param c [n, k] coefficients.
 * @param v [n, d] vectors.
 * @param idx [n, k] target rows.
 * @param out [m, d] output.
 */
export function scatterOuterRows(
  c: Float32Array,
  v: Float32Array,
  idx: Int32Array,
  out: Float32Array,
  d: number,
  k: number,
  lo: number,
  hi: number,
): void {
  out.fill(0, lo * d, hi * d);
  for (let s = 0; s < idx.length; s++) {
    const r = idx[s];
    const coef = c[s];
    if (r < lo || r >= hi || coef === 0) continue;
    const ob = r * d, vb = ((s / k) | 0) * d;
    for (let j = 0; j < d; j++) out[ob + j] += coef * v[vb + j];
  }
}
