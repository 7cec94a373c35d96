/**
 * Elementwise kernels of the `blas` backend: broadcasting binary ops, comparisons and unary ops
 * on float32 tensors, with the loops of `_blas_loops.ts`, split over helper threads when large.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { BlasBackend } from "./_blas_store.ts";
import {
  BINARY_EXPR,
  BINARY_OPS,
  type BinaryOp,
  COMPARE_EXPR,
  UNARY_EXPR,
  type Vals,
} from "./_blas_loops.ts";
import { parallelBinary, parallelUnary } from "./_blas_threads.ts";

export { BINARY_OPS } from "./_blas_loops.ts";

/** Broadcast strides of `shape` (right-aligned) inside `outShape`: 0 on broadcast dims. */
function broadcastStrides(shape: number[], outShape: number[]): number[] {
  const pad = outShape.length - shape.length;
  const strides = new Array(outShape.length).fill(0);
  let s = 1;
  for (let d = outShape.length - 1; d >= pad; d--) {
    const size = shape[d - pad];
    strides[d] = size === 1 ? 0 : s;
    s *= size;
  }
  return strides;
}

/** How `shape` sits in `outShape`: full, scalar, a repeated row or a repeated column. */
function layout(shape: number[], outShape: number[]): { kind: string; inner: number } {
  const size = tf.util.sizeFromShape(shape);
  const total = tf.util.sizeFromShape(outShape);
  if (size === total) return { kind: "full", inner: 0 };
  if (size === 1) return { kind: "scalar", inner: 0 };
  const padded = [...new Array(outShape.length - shape.length).fill(1), ...shape];
  // Row: leading dims 1, the rest equal; column: leading dims equal, the rest 1.
  for (let k = 0; k < outShape.length; k++) {
    const head = padded.slice(0, k), tail = padded.slice(k);
    const outTail = outShape.slice(k);
    if (head.every((d) => d === 1) && tail.every((d, i) => d === outTail[i])) {
      return { kind: "row", inner: size };
    }
    if (head.every((d, i) => d === outShape[i]) && tail.every((d) => d === 1)) {
      return { kind: "column", inner: total / size };
    }
  }
  return { kind: "strided", inner: 0 };
}

const FLAT_MODE: Record<string, number> = {
  "full,full": 0,
  "full,scalar": 1,
  "scalar,full": 2,
  "full,row": 3,
  "row,full": 4,
  "full,column": 5,
  "column,full": 6,
};

/**
 * Runs a binary op with broadcasting into `out` (every element written).
 *
 * @returns `out`.
 */
export function runBinary(
  op: BinaryOp,
  a: Float32Array,
  aShape: number[],
  b: Float32Array,
  bShape: number[],
  outShape: number[],
  out: Vals,
): Vals {
  const n = tf.util.sizeFromShape(outShape);
  if (n === 0) return out;
  const la = layout(aShape, outShape), lb = layout(bShape, outShape);
  const mode = FLAT_MODE[`${la.kind},${lb.kind}`];
  if (mode !== undefined) {
    parallelBinary(op, mode, a, b, out, n, Math.max(la.inner, lb.inner));
  } else {
    const shape = outShape.length === 0 ? [1] : outShape;
    op.strided(a, b, out, shape, broadcastStrides(aShape, shape), broadcastStrides(bShape, shape));
  }
  return out;
}

/**
 * A kernel for a binary op: float32 inputs run the compiled loop, anything else the stock one.
 *
 * @param name The kernel name (a key of {@linkcode BINARY_OPS}).
 * @param stock The cpu kernel to fall back to (absent for the fused-gradient kernels).
 */
export function binaryKernel(name: string, stock?: tf.KernelFunc): tf.KernelFunc {
  const op = BINARY_OPS[name];
  const [first, second] = name.startsWith("Blas") ? ["x", "dy"] : ["a", "b"];
  return (args) => {
    const backend = args.backend as BlasBackend;
    const a = args.inputs[first] as tf.TensorInfo, b = args.inputs[second] as tf.TensorInfo;
    if (a.dtype !== "float32" || b.dtype !== "float32") {
      if (!stock) throw new Error(`${name} expects float32 inputs, got ${a.dtype} and ${b.dtype}`);
      return stock(args);
    }
    const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
    const n = tf.util.sizeFromShape(outShape);
    const out = op.bool ? new Uint8Array(n) : backend.alloc(n);
    runBinary(op, backend.f32(a), a.shape, backend.f32(b), b.shape, outShape, out);
    return backend.makeTensorInfo(outShape, op.bool ? "bool" : "float32", out);
  };
}

/** AddN over float32 tensors of one shape. */
export function addNKernel(stock: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as BlasBackend;
    const xs = args.inputs as unknown as tf.TensorInfo[];
    if (xs.some((x) => x.dtype !== "float32")) return stock(args);
    const n = tf.util.sizeFromShape(xs[0].shape);
    const out = backend.alloc(n);
    out.set(backend.f32(xs[0]));
    for (let k = 1; k < xs.length; k++) {
      const x = backend.f32(xs[k]);
      for (let i = 0; i < n; i++) out[i] += x[i];
    }
    return backend.output(out, xs[0].shape);
  };
}

/** Names of the unary kernels this file replaces. */
export const UNARY_KERNELS: readonly string[] = Object.freeze(Object.keys(UNARY_EXPR));
/** Names of the binary kernels this file replaces (the `Blas*` ones are new). */
export const BINARY_KERNELS: readonly string[] = Object.freeze([
  ...Object.keys(BINARY_EXPR),
  ...Object.keys(COMPARE_EXPR),
]);

/** A kernel for a unary op: float32 runs the compiled loop, anything else the stock one. */
export function unaryKernel(name: string, stock: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as BlasBackend;
    const x = args.inputs.x as tf.TensorInfo;
    if (x.dtype !== "float32") return stock(args);
    const n = tf.util.sizeFromShape(x.shape);
    const out = backend.alloc(n);
    const alpha = (args.attrs?.alpha as number | undefined) ?? 0;
    parallelUnary(name, backend.f32(x), out, alpha);
    return backend.output(out, x.shape);
  };
}
