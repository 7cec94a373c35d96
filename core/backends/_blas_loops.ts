/**
 * The generated loops of the `blas` backend, shared by the main thread and its helper threads
 * (this file must not import tfjs: helper threads load it).
 *
 * Why generated: one shared loop calling `op(a, b)` per element is megamorphic, V8 cannot
 * inline it and the stock kernels pay ~5 ns per element for it; `new Function` gives each op
 * its own loop (~1 ns). Broadcasting never allocates per element: the common layouts (same
 * shape, scalar, row `[M,N]·[N]`, column `[M,N]·[M,1]`) have flat loops, the rest a strided one.
 * @module
 */
import { gatherSlices, scatterAddRows, topkRows } from "./_blas_select.ts";
import { combineRows, dotRows, scatterOuterRows } from "./_blas_row_products.ts";

/** Output arrays: float32, or bool as Uint8Array. */
export type Vals = Float32Array | Uint8Array;
/** Loop over one flat layout (see `FLAT_BODIES`). */
export type FlatLoop = (
  a: Float32Array,
  b: Float32Array,
  o: Vals,
  n: number,
  inner: number,
) => void;
/** Loop over any broadcast: out is [outer, last]; a and b advance by their own strides. */
export type StridedLoop = (
  a: Float32Array,
  b: Float32Array,
  o: Vals,
  outShape: number[],
  aStrides: number[],
  bStrides: number[],
) => void;
/** A unary loop; `p` is the op's attribute (alpha). */
export type UnaryLoop = (a: Float32Array, o: Float32Array, n: number, p: number) => void;

/** A compiled binary op. */
export interface BinaryOp {
  name: string;
  flat: FlatLoop[];
  strided: StridedLoop;
  bool: boolean;
}

// Expressions in `x` (from a) and `y` (from b); numbers convert to the output array type.
export const BINARY_EXPR: Record<string, string> = {
  Add: "x + y",
  Sub: "x - y",
  Multiply: "x * y",
  RealDiv: "x / y",
  Maximum: "Math.max(x, y)",
  Minimum: "Math.min(x, y)",
  SquaredDifference: "(x - y) * (x - y)",
  // Fused gradients (a = forward input x, b = dy): one pass instead of two or three.
  BlasReluGrad: "y * +(x > 0)",
  BlasAbsGrad: "y * (+(x > 0) - +(x < 0))",
  BlasSquareGrad: "2 * x * y",
};
export const COMPARE_EXPR: Record<string, string> = {
  Greater: "+(x > y)",
  GreaterEqual: "+(x >= y)",
  Less: "+(x < y)",
  LessEqual: "+(x <= y)",
  Equal: "+(x === y)",
  NotEqual: "+(x !== y)",
};

/** Flat layouts: 0 same shape; 1 b scalar; 2 a scalar; 3 b row; 4 a row; 5 b column; 6 a column. */
const FLAT_BODIES = [
  "for (let i = 0; i < n; i++) { const x = a[i], y = b[i]; o[i] = E; }",
  "const y = b[0]; for (let i = 0; i < n; i++) { const x = a[i]; o[i] = E; }",
  "const x = a[0]; for (let i = 0; i < n; i++) { const y = b[i]; o[i] = E; }",
  "for (let r = 0; r < n; r += inner) for (let j = 0; j < inner; j++) " +
  "{ const x = a[r + j], y = b[j]; o[r + j] = E; }",
  "for (let r = 0; r < n; r += inner) for (let j = 0; j < inner; j++) " +
  "{ const x = a[j], y = b[r + j]; o[r + j] = E; }",
  "for (let r = 0, k = 0; r < n; r += inner, k++) { const y = b[k]; " +
  "for (let j = 0; j < inner; j++) { const x = a[r + j]; o[r + j] = E; } }",
  "for (let r = 0, k = 0; r < n; r += inner, k++) { const x = a[k]; " +
  "for (let j = 0; j < inner; j++) { const y = b[r + j]; o[r + j] = E; } }",
];

const STRIDED_BODY = `
  const rank = outShape.length, last = outShape[rank - 1];
  const sa = aStrides[rank - 1], sb = bStrides[rank - 1];
  const idx = new Array(rank).fill(0);
  const total = outShape.reduce((p, d) => p * d, 1);
  let ia = 0, ib = 0;
  for (let o0 = 0; o0 < total; o0 += last) {
    for (let j = 0, pa = ia, pb = ib; j < last; j++, pa += sa, pb += sb) {
      const x = a[pa], y = b[pb]; o[o0 + j] = E;
    }
    for (let d = rank - 2; d >= 0; d--) {
      ia += aStrides[d]; ib += bStrides[d];
      if (++idx[d] < outShape[d]) break;
      ia -= aStrides[d] * outShape[d]; ib -= bStrides[d] * outShape[d]; idx[d] = 0;
    }
  }`;

function compileBinary(name: string, expr: string, bool: boolean): BinaryOp {
  const flat = FLAT_BODIES.map((body) =>
    new Function("a", "b", "o", "n", "inner", body.replaceAll("E", expr)) as FlatLoop
  );
  const strided = new Function(
    "a",
    "b",
    "o",
    "outShape",
    "aStrides",
    "bStrides",
    STRIDED_BODY.replaceAll("E", expr),
  ) as StridedLoop;
  return { name, flat, strided, bool };
}

// Unary expressions in `x` and the attribute `p` (alpha). Branch-free where data is random:
// ReLU as (x + |x|)/2 keeps NaN and avoids a mispredicted branch per element (Math.max is ~8×
// slower in V8); the −∞ test, almost never taken, maps −∞ to 0 instead of NaN.
export const UNARY_EXPR: Record<string, string> = {
  Relu: "x !== -Infinity ? (x + Math.abs(x)) * 0.5 : 0",
  Relu6: "Math.min(Math.max(x, 0), 6)",
  LeakyRelu: "x * (+(x >= 0) + p * +(x < 0))",
  Step: "x !== x ? NaN : p + (1 - p) * +(x > 0)",
  Abs: "Math.abs(x)",
  Sign: "+(x > 0) - +(x < 0)",
  Neg: "-x",
  Square: "x * x",
  Sqrt: "Math.sqrt(x)",
  Rsqrt: "1 / Math.sqrt(x)",
  Reciprocal: "1 / x",
  Exp: "Math.exp(x)",
  Log: "Math.log(x)",
  Sigmoid: "1 / (1 + Math.exp(-x))",
  Tanh: "Math.tanh(x)",
  // The stock kernel's Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7), same operations in the same
  // order, as one generated loop instead of a closure call per element (GELU in the LCBLM).
  Erf: "Math.sign(x) * (1 - ((t) => ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t " +
    "- 0.284496736) * t + 0.254829592) * t)(1 / (1 + 0.3275911 * Math.abs(x))) * Math.exp(-x * x))",
};

/** Every compiled unary loop by kernel name. */
export const UNARY_LOOPS: Record<string, UnaryLoop> = Object.fromEntries(
  Object.entries(UNARY_EXPR).map(([name, expr]) => [
    name,
    new Function(
      "a",
      "o",
      "n",
      "p",
      `for (let i = 0; i < n; i++) { const x = a[i]; o[i] = ${expr}; }`,
    ),
  ]),
) as Record<string, UnaryLoop>;

/** Every compiled binary op (including comparisons and fused gradients) by kernel name. */
export const BINARY_OPS: Readonly<Record<string, BinaryOp>> = Object.freeze({
  ...Object.fromEntries(
    Object.entries(BINARY_EXPR).map(([name, e]) => [name, compileBinary(name, e, false)]),
  ),
  ...Object.fromEntries(
    Object.entries(COMPARE_EXPR).map(([name, e]) => [name, compileBinary(name, e, true)]),
  ),
});

/** Adam coefficients for one step (see core/train/adam.ts). */
export interface AdamCoefficients {
  stepSize: number;
  bc2Sqrt: number;
  decay: number;
  beta1: number;
  beta2: number;
  epsilon: number;
}

/** The fused AdamW update of p, m, v in place from g. */
export function adamLoop(
  p: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  c: AdamCoefficients,
): void {
  const { stepSize, bc2Sqrt, decay, beta1, beta2, epsilon } = c;
  const c1 = 1 - beta1, c2 = 1 - beta2;
  for (let i = 0; i < p.length; i++) {
    const gi = g[i];
    const mi = beta1 * m[i] + c1 * gi;
    const vi = beta2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - stepSize * mi / (Math.sqrt(vi) / bc2Sqrt + epsilon);
  }
}

/** One share of a parallel kernel, as posted to a helper thread. */
export type Job =
  | {
    kind: "binary";
    name: string;
    mode: number;
    a: Float32Array;
    b: Float32Array;
    o: Vals;
    n: number;
    inner: number;
  }
  | { kind: "unary"; name: string; a: Float32Array; o: Float32Array; p: number }
  | {
    kind: "adam";
    p: Float32Array;
    g: Float32Array;
    m: Float32Array;
    v: Float32Array;
    c: AdamCoefficients;
  }
  | { kind: "fill"; o: Float32Array; value: number }
  | {
    kind: "topk";
    x: Float32Array;
    n: number;
    k: number;
    vals: Float32Array;
    idx: Int32Array;
    bad: Int32Array;
  }
  | {
    kind: "gather";
    x: Float32Array;
    indices: Int32Array;
    o: Float32Array;
    outer: number;
    dim: number;
    nIdx: number;
    slice: number;
    start: number;
    end: number;
  }
  | {
    kind: "scatter";
    rowOf: Int32Array;
    updates: Float32Array;
    o: Float32Array;
    slice: number;
    lo: number;
    hi: number;
  }
  | {
    /** combineRows (`a` = coefficients) or dotRows (`a` = vectors) over rows [start, end). */
    kind: "combine" | "dots";
    a: Float32Array;
    w: Float32Array;
    idx: Int32Array;
    out: Float32Array;
    k: number;
    d: number;
    start: number;
    end: number;
  }
  | {
    kind: "outer";
    c: Float32Array;
    v: Float32Array;
    idx: Int32Array;
    out: Float32Array;
    d: number;
    k: number;
    lo: number;
    hi: number;
  };

/** Runs one job on this thread. */
export function runJob(job: Job): void {
  switch (job.kind) {
    case "binary":
      BINARY_OPS[job.name].flat[job.mode](job.a, job.b, job.o, job.n, job.inner);
      break;
    case "unary":
      UNARY_LOOPS[job.name](job.a, job.o, job.o.length, job.p);
      break;
    case "adam":
      adamLoop(job.p, job.g, job.m, job.v, job.c);
      break;
    case "fill":
      job.o.fill(job.value);
      break;
    case "topk":
      topkRows(job.x, job.n, job.k, job.vals, job.idx, job.bad);
      break;
    case "gather":
      gatherSlices(
        job.x,
        job.indices,
        job.o,
        job.outer,
        job.dim,
        job.nIdx,
        job.slice,
        job.start,
        job.end,
      );
      break;
    case "scatter":
      scatterAddRows(job.rowOf, job.updates, job.o, job.slice, job.lo, job.hi);
      break;
    case "combine":
      combineRows(job.a, job.w, job.idx, job.out, job.k, job.d, job.start, job.end);
      break;
    case "dots":
      dotRows(job.a, job.w, job.idx, job.out, job.k, job.d, job.start, job.end);
      break;
    case "outer":
      scatterOuterRows(job.c, job.v, job.idx, job.out, job.d, job.k, job.lo, job.hi);
      break;
  }
}
