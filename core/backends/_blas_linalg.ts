/**
 * Kernels of the `blas` backend that call OpenBLAS: BatchMatMul and _FusedMatMul (`sgemm`,
 * transposes as flags, bias pre-filled with beta = 1), Transpose (`somatcopy`), Sum and Mean
 * (`sgemv` with a ones vector, after at most one transpose).
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { BlasBackend } from "./_blas_store.ts";
import { NO_TRANS, ROW_MAJOR, TRANS } from "./openblas.ts";
import { BINARY_OPS, runBinary } from "./_blas_elementwise.ts";

/** out[batch] = op(a[batch])·op(b[batch]) (+ out when `beta` is 1), batch dims as in tfjs cpu. */
function gemm(
  backend: BlasBackend,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  transposeA: boolean,
  transposeB: boolean,
  out: Float32Array,
  beta: number,
): number[] {
  const ra = a.shape.length, rb = b.shape.length;
  const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
  const k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
  const kb = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
  const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (k !== kb) {
    throw new Error(
      `Error in matMul: inner shapes (${k}) and (${kb}) of Tensors with shapes ${a.shape} and ` +
        `${b.shape} and transposeA=${transposeA} and transposeB=${transposeB} must match.`,
    );
  }
  const outer = tf.backend_util.assertAndGetBroadcastShape(
    a.shape.slice(0, -2),
    b.shape.slice(0, -2),
  );
  const batchA = tf.util.sizeFromShape(a.shape.slice(0, -2));
  const batchB = tf.util.sizeFromShape(b.shape.slice(0, -2));
  const batch = Math.max(batchA, batchB);
  const av = backend.f32(a), bv = backend.f32(b);
  const lda = transposeA ? m : k, ldb = transposeB ? k : n;
  const ta = transposeA ? TRANS : NO_TRANS, tb = transposeB ? TRANS : NO_TRANS;
  for (let i = 0; i < batch; i++) {
    const o = out.subarray(i * m * n, (i + 1) * m * n);
    if (k === 0) {
      if (beta === 0) o.fill(0);
      continue;
    }
    if (m === 0 || n === 0) continue;
    const pa = av.subarray((i % batchA) * m * k, ((i % batchA) + 1) * m * k);
    const pb = bv.subarray((i % batchB) * k * n, ((i % batchB) + 1) * k * n);
    backend.blas.lib.cblas_sgemm(ROW_MAJOR, ta, tb, m, n, k, 1, pa, lda, pb, ldb, beta, o, n);
  }
  return [...outer, m, n];
}

function matMulShape(a: tf.TensorInfo, b: tf.TensorInfo, ta: boolean, tb: boolean): number[] {
  const ra = a.shape.length, rb = b.shape.length;
  const outer = tf.backend_util.assertAndGetBroadcastShape(
    a.shape.slice(0, -2),
    b.shape.slice(0, -2),
  );
  return [...outer, ta ? a.shape[ra - 1] : a.shape[ra - 2], tb ? b.shape[rb - 2] : b.shape[rb - 1]];
}

/** BatchMatMul through `cblas_sgemm`. */
export function batchMatMulKernel(stock: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as BlasBackend;
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    if (a.dtype !== "float32" || b.dtype !== "float32") return stock(args);
    const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
    const shape = matMulShape(a, b, transposeA, transposeB);
    const out = backend.alloc(tf.util.sizeFromShape(shape));
    gemm(backend, a, b, transposeA, transposeB, out, 0);
    return backend.output(out, shape);
  };
}

const ACTIVATIONS: Record<string, string> = {
  linear: "",
  relu: "Relu",
  relu6: "Relu6",
  leakyrelu: "LeakyRelu",
  sigmoid: "Sigmoid",
};

/**
 * _FusedMatMul: a bias of one row is copied into every output row and `sgemm` adds to it
 * (beta = 1); other biases are added after; the activation runs in place.
 */
export function fusedMatMulKernel(
  stock: tf.KernelFunc,
  unary: (name: string) => tf.KernelFunc,
): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as BlasBackend;
    const { a, b, bias } = args.inputs as Record<string, tf.TensorInfo | undefined>;
    const { transposeA, transposeB, activation, leakyreluAlpha } = args.attrs as {
      transposeA: boolean;
      transposeB: boolean;
      activation: string;
      leakyreluAlpha: number;
    };
    const act = ACTIVATIONS[activation ?? "linear"];
    if (
      act === undefined || a!.dtype !== "float32" || b!.dtype !== "float32" ||
      (bias && bias.dtype !== "float32")
    ) {
      return stock(args);
    }
    const shape = matMulShape(a!, b!, transposeA, transposeB);
    const size = tf.util.sizeFromShape(shape);
    const n = shape[shape.length - 1];
    const out = backend.alloc(size);
    const biasSize = bias ? tf.util.sizeFromShape(bias.shape) : 0;
    const rowBias = bias !== undefined && biasSize === n && bias.shape[bias.shape.length - 1] === n;
    if (rowBias) {
      const bv = backend.f32(bias);
      for (let r = 0; r < size; r += n) out.set(bv, r);
    }
    gemm(backend, a!, b!, transposeA, transposeB, out, rowBias ? 1 : 0);
    let result = backend.output(out, shape);
    if (bias && !rowBias) {
      const outShape = tf.backend_util.assertAndGetBroadcastShape(shape, bias.shape);
      const summed = backend.alloc(tf.util.sizeFromShape(outShape));
      runBinary(BINARY_OPS.Add, out, shape, backend.f32(bias), bias.shape, outShape, summed);
      backend.disposeIntermediateTensorInfo(result);
      result = backend.output(summed, outShape);
    }
    if (act === "") return result;
    const activated = unary(act)({
      inputs: { x: result },
      backend,
      attrs: { alpha: leakyreluAlpha },
    }) as tf.TensorInfo;
    backend.disposeIntermediateTensorInfo(result);
    return activated;
  };
}

/** Merges runs of axes that stay adjacent under `perm`: [2,3,0,1] on 4-D becomes [1,0] on 2-D. */
function mergeAxes(shape: number[], perm: number[]): { shape: number[]; perm: number[] } {
  const keep = perm.filter((p) => shape[p] !== 1);
  const groups: number[][] = [];
  for (const p of keep) {
    const last = groups[groups.length - 1];
    if (last && last[last.length - 1] + 1 === p) last.push(p);
    else groups.push([p]);
  }
  const order = [...groups].sort((g, h) => g[0] - h[0]);
  const merged = order.map((g) => g.reduce((s, p) => s * shape[p], 1));
  return { shape: merged, perm: groups.map((g) => order.indexOf(g)) };
}

/**
 * Transposes float32 `x` (shape `shape`) by `perm` into `out`.
 *
 * @returns `out`.
 */
export function transposeInto(
  backend: BlasBackend,
  x: Float32Array,
  shape: number[],
  perm: number[],
  out: Float32Array,
): Float32Array {
  const m = mergeAxes(shape, perm);
  const rank = m.shape.length;
  const somatcopy = backend.blas.lib.cblas_somatcopy;
  if (rank <= 1 || m.perm.every((p, i) => p === i)) {
    out.set(x.subarray(0, out.length));
  } else if (rank === 2) {
    const [r, c] = m.shape;
    somatcopy(ROW_MAJOR, TRANS, r, c, 1, x, c, out, r);
  } else if (rank === 3 && m.perm[0] === 0 && m.perm[1] === 2) {
    const [batch, r, c] = m.shape;
    for (let i = 0; i < batch; i++) {
      somatcopy(
        ROW_MAJOR,
        TRANS,
        r,
        c,
        1,
        x.subarray(i * r * c, (i + 1) * r * c),
        c,
        out.subarray(i * r * c, (i + 1) * r * c),
        r,
      );
    }
  } else {
    const inStrides = [...tf.util.computeStrides(m.shape), 1];
    const outShape = m.perm.map((p) => m.shape[p]);
    const strides = m.perm.map((p) => inStrides[p]);
    const idx = new Array(rank).fill(0);
    for (let o = 0, i = 0; o < out.length; o++) {
      out[o] = x[i];
      for (let d = rank - 1; d >= 0; d--) {
        i += strides[d];
        if (++idx[d] < outShape[d]) break;
        i -= strides[d] * outShape[d];
        idx[d] = 0;
      }
    }
  }
  return out;
}

/** Transpose through `cblas_somatcopy` where the permutation is a (batched) 2-D transpose. */
export function transposeKernel(stock: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as BlasBackend;
    const x = args.inputs.x as tf.TensorInfo;
    if (x.dtype !== "float32") return stock(args);
    const perm = args.attrs!.perm as number[];
    const shape = perm.map((p) => x.shape[p]);
    const out = backend.alloc(tf.util.sizeFromShape(shape));
    transposeInto(backend, backend.f32(x), x.shape, perm, out);
    return backend.output(out, shape);
  };
}

/**
 * Sums float32 `x` over `axes` times `scale` into a new pooled array: `sgemv` against ones when
 * the reduced axes are all inner or all outer, else after one transpose that makes them inner.
 */
export function reduceSum(
  backend: BlasBackend,
  x: tf.TensorInfo,
  axes: number[],
  scale: number,
): Float32Array {
  const rank = x.shape.length;
  const reduced = new Set(axes);
  const keptSize = x.shape.reduce((p, d, i) => reduced.has(i) ? p : p * d, 1);
  const size = tf.util.sizeFromShape(x.shape);
  const out = backend.alloc(keptSize);
  const redSize = keptSize === 0 ? 0 : size / keptSize;
  if (size === 0 || redSize === 0) return out.fill(0);
  const big = [...Array(rank).keys()].filter((i) => x.shape[i] !== 1);
  const flags = big.map((i) => reduced.has(i));
  const inner = flags.every((f, i) => !f || flags.slice(i).every(Boolean));
  const outer = flags.every((f, i) => f || flags.slice(i).every((g) => !g));
  const gemv = backend.blas.lib.cblas_sgemv;
  const xv = backend.f32(x);
  const ones = backend.ones(redSize);
  if (outer && !inner) {
    // Reduced axes first: a column sum, xᵀ·1.
    gemv(ROW_MAJOR, TRANS, redSize, keptSize, scale, xv, keptSize, ones, 1, 0, out, 1);
    return out;
  }
  // Reduced axes last (as given, or moved there): a row sum, x·1.
  const perm = [...[...Array(rank).keys()].filter((i) => !reduced.has(i)), ...axes];
  const rows = inner ? xv : transposeInto(backend, xv, x.shape, perm, backend.alloc(size));
  gemv(ROW_MAJOR, NO_TRANS, keptSize, redSize, scale, rows, redSize, ones, 1, 0, out, 1);
  if (rows !== xv) backend.recycle(rows);
  return out;
}

/** Sum or Mean (`mean` true) over float32 inputs via {@linkcode reduceSum}. */
export function reduceKernel(stock: tf.KernelFunc, mean: boolean): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as BlasBackend;
    const x = args.inputs.x as tf.TensorInfo;
    if (x.dtype !== "float32") return stock(args);
    const { axis, keepDims } = args.attrs as { axis: number | number[]; keepDims: boolean };
    const axes = [...new Set(tf.util.parseAxisParam(axis, x.shape))].sort((p, q) => p - q);
    const redSize = axes.reduce((p, a) => p * x.shape[a], 1);
    const scale = mean ? 1 / redSize : 1;
    const out = reduceSum(backend, x, axes, scale);
    const shape = keepDims
      ? x.shape.map((d, i) => axes.includes(i) ? 1 : d)
      : x.shape.filter((_, i) => !axes.includes(i));
    return backend.output(out, shape);
  };
}
