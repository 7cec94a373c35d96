/**
 * Sparse kernels of the `blas` backend, for the TopK SAE: TopK (a bounded heap per row instead of
 * the stock Floyd–Rivest select over an array of {value, index} objects), GatherV2 (slice copies
 * instead of an indexToLoc per element) and ScatterNd (row adds instead of a loc per element).
 * Each gives exactly the stock cpu kernel's result (same order, same float additions) and runs the
 * stock kernel for the cases it does not cover.
 *
 * And three fused kernels with no stock counterpart (see {@linkcode ROW_PRODUCT_KERNELS}), which
 * models/sparse_topk.ts uses where the active backend registers them.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { BlasBackend } from "./_blas_store.ts";
import { gatherSlices } from "./_blas_select.ts";
import {
  parallelFill,
  parallelGather,
  parallelRowProduct,
  parallelScatter,
  parallelScatterOuter,
  parallelTopk,
} from "./_blas_threads.ts";

const sharedInt32 = (n: number) => new Int32Array(new SharedArrayBuffer(n * 4));

/** `a` itself if it lives in a SharedArrayBuffer, else a shared int32 copy. */
function sharedIndices(a: ArrayLike<number> & { buffer?: ArrayBufferLike }): Int32Array {
  if (a instanceof Int32Array && a.buffer instanceof SharedArrayBuffer) return a;
  const out = sharedInt32(a.length);
  out.set(a);
  return out;
}

/**
 * TopK over the last axis of a float32 tensor with `sorted` (tf.topk's default): values
 * descending, equal values by lower index first — the stock cpu order. NaN or ±∞ anywhere,
 * `sorted: false` (whose order the stock select leaves arbitrary), other dtypes and k = 0 run the
 * stock kernel.
 */
export function topkKernel(stock: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as BlasBackend;
    const x = args.inputs.x as tf.TensorInfo;
    const { k, sorted } = args.attrs as unknown as { k: number; sorted: boolean };
    const n = x.shape[x.shape.length - 1];
    if (x.dtype !== "float32" || !sorted || k <= 0 || k > n || x.shape.length === 0) {
      return stock(args);
    }
    const rows = tf.util.sizeFromShape(x.shape) / n;
    const vals = backend.alloc(rows * k), idx = sharedInt32(rows * k);
    const bad = sharedInt32(1);
    parallelTopk(backend.f32(x), n, k, vals, idx, bad);
    if (bad[0] !== 0) {
      backend.recycle(vals);
      return stock(args);
    }
    const shape = [...x.shape.slice(0, -1), k];
    return [backend.output(vals, shape), backend.makeTensorInfo(shape, "int32", idx)];
  };
}

/**
 * GatherV2 on any axis and batchDims as slice copies (float32 split over the helper threads);
 * indices out of range throw the stock kernel's error. Strings and complex run the stock kernel.
 */
export function gatherKernel(stock: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as BlasBackend;
    const { x, indices } = args.inputs as { x: tf.TensorInfo; indices: tf.TensorInfo };
    const { axis, batchDims } = args.attrs as unknown as { axis: number; batchDims: number };
    if (!["float32", "int32", "bool"].includes(x.dtype) || indices.dtype === "string") {
      return stock(args);
    }
    const parsedAxis = tf.util.parseAxisParam(axis, x.shape)[0];
    const indexVals = backend.values(indices) as Int32Array;
    const axisDim = x.shape[parsedAxis];
    for (let i = 0; i < indexVals.length; ++i) {
      const index = indexVals[i];
      tf.util.assert(
        index <= axisDim - 1 && index >= 0,
        () => `GatherV2: the index value ${index} is not in [0, ${axisDim - 1}]`,
      );
    }
    const info = tf.backend_util.segment_util.collectGatherOpShapeInfo(
      x as tf.Tensor,
      indices as tf.Tensor,
      parsedAxis,
      batchDims ?? 0,
    );
    const size = tf.util.sizeFromShape(info.outputShape);
    if (size === 0) return stock(args);
    const nIdx = tf.util.sizeFromShape(indices.shape) / info.batchSize;
    const { outerSize: outer, dimSize: dim, sliceSize: slice } = info;
    if (x.dtype === "float32") {
      const out = backend.alloc(size);
      parallelGather(backend.f32(x), sharedIndices(indexVals), out, outer, dim, nIdx, slice);
      return backend.output(out, info.outputShape);
    }
    const xv = backend.values(x) as Int32Array | Uint8Array;
    const out = x.dtype === "int32" ? new Int32Array(size) : new Uint8Array(size);
    gatherSlices(xv, indexVals, out, outer, dim, nIdx, slice, 0, size / slice);
    return backend.makeTensorInfo(info.outputShape, x.dtype, out);
  };
}

/**
 * ScatterNd of float32 updates: zeroed output, then each update slice added in order into its
 * row (the stock additions in the stock order), split over the helper threads by target rows.
 * Invalid indices throw the stock kernel's error.
 */
export function scatterNdKernel(stock: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as BlasBackend;
    const { indices, updates } = args.inputs as { indices: tf.TensorInfo; updates: tf.TensorInfo };
    const { shape } = args.attrs as unknown as { shape: number[] };
    if (updates.dtype !== "float32" || indices.dtype === "string") return stock(args);
    const { sliceRank, numUpdates, sliceSize, strides, outputSize } = tf.backend_util
      .calculateShapes(updates, indices, shape);
    if (outputSize === 0 || sliceSize === 0) return stock(args);
    const rows = outputSize / sliceSize;
    const indexVals = backend.values(indices) as Int32Array;
    const rowOf = sharedInt32(numUpdates);
    for (let i = 0; i < numUpdates; i++) {
      let flat = 0;
      for (let j = 0; j < sliceRank; j++) flat += indexVals[i * sliceRank + j] * strides[j];
      if (flat < 0 || flat >= rows) {
        const index = Array.from(indexVals.subarray(i * sliceRank, (i + 1) * sliceRank));
        throw new Error(`Invalid indices: ${index} does not index into ${shape}`);
      }
      rowOf[i] = flat;
    }
    const out = backend.alloc(outputSize);
    parallelFill(out, 0);
    const upd = backend.f32(updates);
    // A rank-0 update is broadcast by the stock kernel's index arithmetic only for one update.
    if (upd.length !== numUpdates * sliceSize) {
      backend.recycle(out);
      return stock(args);
    }
    parallelScatter(rowOf, upd, out, sliceSize);
    return backend.output(out, shape);
  };
}

/**
 * The fused row-product kernels, for a table w [m, d] and rows idx [n, k] (int32):
 * - `BlasGatherCombine` {c [n, k], w, idx} → [n, d]: out[i] = Σ_κ c[i, κ] · w[idx[i, κ]];
 * - `BlasGatherDot` {v [n, d], w, idx} → [n, k]: out[i, κ] = v[i] · w[idx[i, κ]];
 * - `BlasScatterOuter` {c [n, k], v [n, d], idx}, attr `rows` = m → [m, d]:
 *   out[idx[i, κ]] += c[i, κ] · v[i].
 */
export const ROW_PRODUCT_KERNELS = {
  BlasGatherCombine: rowProductKernel("combine"),
  BlasGatherDot: rowProductKernel("dots"),
  BlasScatterOuter: scatterOuterKernel,
};

/** Checks that idx is int32 [n, k] with values in [0, rows); returns them (shared). */
function tableRows(backend: BlasBackend, idx: tf.TensorInfo, n: number, rows: number): Int32Array {
  if (idx.dtype !== "int32" || idx.shape.length !== 2 || idx.shape[0] !== n) {
    throw new Error(`Row indices must be int32 [${n}, k], got ${idx.dtype} [${idx.shape}]`);
  }
  const vals = backend.values(idx) as Int32Array;
  for (let i = 0; i < vals.length; i++) {
    if (!(vals[i] >= 0 && vals[i] < rows)) {
      throw new Error(`Row index ${vals[i]} is not in [0, ${rows - 1}]`);
    }
  }
  return sharedIndices(vals);
}

function rowProductKernel(kind: "combine" | "dots"): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as BlasBackend;
    const { a, w, idx } = args.inputs as Record<string, tf.TensorInfo>;
    const [m, d] = w.shape;
    const n = a.shape[0], k = idx.shape[1];
    const rows = tableRows(backend, idx, n, m);
    const expected = kind === "combine" ? k : d;
    if (a.shape.length !== 2 || a.shape[1] !== expected || w.shape.length !== 2) {
      throw new Error(
        `Cannot ${kind} [${a.shape}] with a table [${w.shape}] and rows [${idx.shape}]`,
      );
    }
    const width = kind === "combine" ? d : k;
    const out = backend.alloc(n * width);
    parallelRowProduct(kind, backend.f32(a), backend.f32(w), rows, out, k, d);
    return backend.output(out, [n, width]);
  };
}

function scatterOuterKernel(args: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const backend = args.backend as BlasBackend;
  const { c, v, idx } = args.inputs as Record<string, tf.TensorInfo>;
  const { rows } = args.attrs as unknown as { rows: number };
  const [n, d] = v.shape;
  const k = idx.shape[1];
  const targets = tableRows(backend, idx, n, rows);
  if (c.shape.join() !== idx.shape.join() || v.shape.length !== 2) {
    throw new Error(`Cannot scatter [${c.shape}] ⊗ [${v.shape}] into rows [${idx.shape}]`);
  }
  const out = backend.alloc(rows * d);
  parallelScatterOuter(backend.f32(c), backend.f32(v), targets, out, d, k);
  return backend.output(out, [rows, d]);
}
