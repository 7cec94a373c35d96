/**
 * Minimum-cost assignment on a rectangular cost matrix (Hungarian / Kuhn–Munkres with potentials
 * and shortest augmenting paths, O(n²·m) for n ≤ m).
 * @module
 */

/**
 * Assigns each row to a distinct column (or each column to a distinct row when there are more
 * rows than columns) minimising the summed cost, like scipy's `linear_sum_assignment`.
 *
 * @param cost [rows, cols] row-major costs (float64; finite).
 * @param rows Number of rows.
 * @param cols Number of columns.
 * @returns rowToCol[i] = the column of row i, or −1 when row i is left out (rows > cols).
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * // Row 0 prefers column 1, row 1 column 0.
 * deepStrictEqual(hungarian(new Float64Array([4, 1, 2, 5]), 2, 2), new Int32Array([1, 0]));
 * ```
 */
export function hungarian(cost: ArrayLike<number>, rows: number, cols: number): Int32Array {
  if (cost.length !== rows * cols) {
    throw new RangeError(`Expected a ${rows}×${cols} cost matrix, got ${cost.length} values`);
  }
  for (let i = 0; i < cost.length; i++) {
    if (!Number.isFinite(cost[i])) {
      throw new RangeError(`Cannot assign with cost[${i}] = ${cost[i]}: expected finite costs`);
    }
  }
  if (rows > cols) {
    const transposed = new Float64Array(rows * cols);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) transposed[j * rows + i] = cost[i * cols + j];
    }
    const colToRow = solve(transposed, cols, rows);
    const rowToCol = new Int32Array(rows).fill(-1);
    colToRow.forEach((r, c) => rowToCol[r] = c);
    return rowToCol;
  }
  return solve(cost, rows, cols);
}

/** The n ≤ m case (1-based potentials u, v; p[j] = row matched to column j; way = the path). */
function solve(a: ArrayLike<number>, n: number, m: number): Int32Array {
  const u = new Float64Array(n + 1), v = new Float64Array(m + 1);
  const p = new Int32Array(m + 1), way = new Int32Array(m + 1);
  const minv = new Float64Array(m + 1);
  const used = new Uint8Array(m + 1);
  for (let i = 1; i <= n; i++) {
    // 1. Grow a shortest-path tree from row i until it reaches a free column.
    p[0] = i;
    let j0 = 0;
    minv.fill(Infinity);
    used.fill(0);
    do {
      used[j0] = 1;
      const i0 = p[j0];
      let delta = Infinity, j1 = 0;
      for (let j = 1; j <= m; j++) {
        if (used[j]) continue;
        const cur = a[(i0 - 1) * m + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      // 2. Shift the potentials so the new tight edge joins the tree.
      for (let j = 0; j <= m; j++) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] !== 0);
    // 3. Flip the matching along the augmenting path.
    do {
      const j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 !== 0);
  }
  const rowToCol = new Int32Array(n).fill(-1);
  for (let j = 1; j <= m; j++) if (p[j] !== 0) rowToCol[p[j] - 1] = j - 1;
  return rowToCol;
}
