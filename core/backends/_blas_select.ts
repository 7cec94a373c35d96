/**
 * Row loops of the `blas` backend's sparse kernels (TopK, GatherV2, ScatterNd), shared by the
 * main thread and its helper threads (this file must not import tfjs: helper threads load it).
 * @module
 */

/** Smallest finite float32: anything not ≥ it is NaN or −∞. */
const LOWEST = -3.4028234663852886e38;

/**
 * Top `k` of each row of `x` [rows, n], sorted like the stock cpu TopK: by value descending, equal
 * values by index ascending (−0 and +0 count as equal). A bounded min-heap per row keyed on that
 * order: the root is the worst kept entry, and a later index with an equal value never beats it,
 * so the scan needs one comparison per element.
 *
 * @param x Rows of n values (row r at r·n).
 * @param n Row length.
 * @param k 1 ≤ k ≤ n.
 * @param vals [rows, k] output values.
 * @param idx [rows, k] output indices.
 * @param bad Set to bad[0] = 1 (and the loop stops) on a NaN or ±∞, whose stock order is not a
 *   total order: the caller then runs the stock kernel.
 */
export function topkRows(
  x: Float32Array,
  n: number,
  k: number,
  vals: Float32Array,
  idx: Int32Array,
  bad: Int32Array,
): void {
  const rows = vals.length / k;
  const hv = new Float32Array(k), hi = new Int32Array(k);
  // Is heap slot a worse than slot b: smaller value, or equal value and larger index.
  const siftDown = (p: number, size: number) => {
    const v = hv[p], i = hi[p];
    for (;;) {
      let c = 2 * p + 1;
      if (c >= size) break;
      const r = c + 1;
      if (r < size && (hv[r] < hv[c] || (hv[r] === hv[c] && hi[r] > hi[c]))) c = r;
      const cv = hv[c];
      if (cv < v || (cv === v && hi[c] > i)) {
        hv[p] = cv;
        hi[p] = hi[c];
        p = c;
      } else break;
    }
    hv[p] = v;
    hi[p] = i;
  };
  for (let row = 0; row < rows; row++) {
    const off = row * n;
    for (let j = 0; j < k; j++) {
      const v = x[off + j];
      if (v - v !== 0) {
        bad[0] = 1;
        return;
      }
      hv[j] = v;
      hi[j] = j;
    }
    for (let p = (k >> 1) - 1; p >= 0; p--) siftDown(p, k);
    let threshold = hv[0];
    for (let j = k; j < n; j++) {
      const v = x[off + j];
      if (v > threshold) {
        if (v === Infinity) {
          bad[0] = 1;
          return;
        }
        hv[0] = v;
        hi[0] = j;
        siftDown(0, k);
        threshold = hv[0];
      } else if (!(v >= LOWEST)) {
        bad[0] = 1;
        return;
      }
    }
    // Pop the worst into the last free slot: best first.
    const o = row * k;
    for (let size = k; size > 0; size--) {
      vals[o + size - 1] = hv[0];
      idx[o + size - 1] = hi[0];
      hv[0] = hv[size - 1];
      hi[0] = hi[size - 1];
      siftDown(0, size - 1);
    }
  }
}

/**
 * Gather of slices: x is [batch, outer, dim, slice], indices [batch, nIdx]; writes
 * out [batch, outer, nIdx, slice] for the (batch·outer·nIdx) slices in [start, end).
 */
export function gatherSlices(
  x: ArrayLike<number> & { subarray(s: number, e: number): ArrayLike<number> },
  indices: ArrayLike<number>,
  out: { [i: number]: number; set(a: ArrayLike<number>, offset: number): void },
  outer: number,
  dim: number,
  nIdx: number,
  slice: number,
  start: number,
  end: number,
): void {
  for (let s = start; s < end; s++) {
    const i = s % nIdx, bo = (s - i) / nIdx; // bo = b·outer + o
    const b = Math.floor(bo / outer);
    const src = (bo * dim + indices[b * nIdx + i]) * slice;
    const dst = s * slice;
    if (slice >= 32) out.set(x.subarray(src, src + slice), dst);
    else for (let t = 0; t < slice; t++) out[dst + t] = x[src + t];
  }
}

/**
 * Scatter-add of updates [numUpdates, slice] into out [rows, slice] at the given flat rows, in
 * update order (as the stock kernel adds them), for target rows in [lo, hi) only: shares over
 * disjoint row ranges keep each row's order of additions.
 */
export function scatterAddRows(
  rowOf: Int32Array,
  updates: Float32Array,
  out: Float32Array,
  slice: number,
  lo: number,
  hi: number,
): void {
  for (let u = 0; u < rowOf.length; u++) {
    const r = rowOf[u];
    if (r < lo || r >= hi) continue;
    const dst = r * slice, src = u * slice;
    for (let t = 0; t < slice; t++) out[dst + t] += updates[src + t];
  }
}
