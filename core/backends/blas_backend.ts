/**
 * The `blas` TensorFlow.js backend: every `cpu` kernel, with the ones that dominate SAE
 * training replaced — matmuls by OpenBLAS `sgemm`, Transpose by `somatcopy`, Sum/Mean by
 * `sgemv`, broadcasting binary ops, comparisons and unary ops by generated loops, and the
 * ReLU/Abs/Square/Sum/Mean gradients by one-pass kernels, and TopK, GatherV2 and ScatterNd by
 * row kernels (_blas_sparse.ts) — over a pool of reused arrays. It adds the fused gather/scatter
 * products of the TopK SAE (`ROW_PRODUCT_KERNELS`).
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { BlasBackend } from "./_blas_store.ts";
import {
  addNKernel,
  BINARY_KERNELS,
  BINARY_OPS,
  binaryKernel,
  runBinary,
  UNARY_KERNELS,
  unaryKernel,
} from "./_blas_elementwise.ts";
import {
  batchMatMulKernel,
  fusedMatMulKernel,
  reduceKernel,
  transposeKernel,
} from "./_blas_linalg.ts";
import { installBlasGradients } from "./_blas_gradients.ts";
import { gatherKernel, ROW_PRODUCT_KERNELS, scatterNdKernel, topkKernel } from "./_blas_sparse.ts";
import { parallelFill } from "./_blas_threads.ts";
import { loadOpenBlas, type OpenBlas } from "./openblas.ts";

export { BlasBackend, sharedFloat32Array } from "./_blas_store.ts";

/** The kernels the blas backend replaces, as (stock cpu kernel) → replacement. */
function overrides(): Map<string, (stock: tf.KernelFunc) => tf.KernelFunc> {
  const unary = (name: string) => unaryKernel(name, stockKernel(name));
  const table = new Map<string, (stock: tf.KernelFunc) => tf.KernelFunc>([
    ["BatchMatMul", batchMatMulKernel],
    ["_FusedMatMul", (stock) => fusedMatMulKernel(stock, unary)],
    ["Transpose", transposeKernel],
    ["Sum", (stock) => reduceKernel(stock, false)],
    ["Mean", (stock) => reduceKernel(stock, true)],
    ["AddN", addNKernel],
    ["TopK", topkKernel],
    ["GatherV2", gatherKernel],
    ["ScatterNd", scatterNdKernel],
  ]);
  for (const name of BINARY_KERNELS) {
    if (!name.startsWith("Blas")) table.set(name, (stock) => binaryKernel(name, stock));
  }
  for (const name of UNARY_KERNELS) table.set(name, (stock) => unaryKernel(name, stock));
  return table;
}

function stockKernel(name: string): tf.KernelFunc {
  const kernel = tf.getKernel(name, "cpu");
  if (!kernel) throw new Error(`The cpu backend has no ${name} kernel`);
  return kernel.kernelFunc;
}

/** dy (shape with 1s on reduced axes) broadcast to `shape` and scaled: Sum/Mean gradients. */
const broadcastScaleKernel: tf.KernelFunc = (args) => {
  const backend = args.backend as BlasBackend;
  const x = args.inputs.x as tf.TensorInfo;
  const { shape, scale } = args.attrs as { shape: number[]; scale: number };
  const out = backend.alloc(tf.util.sizeFromShape(shape));
  const xv = backend.f32(x);
  if (xv.length === 1) parallelFill(out, xv[0] * scale);
  else runBinary(BINARY_OPS.Multiply, xv, x.shape, new Float32Array([scale]), [], shape, out);
  return backend.output(out, shape);
};

let registered: OpenBlas | undefined;

/**
 * Loads OpenBLAS and registers the "blas" backend and its kernels (once per process).
 * Does not make it active: call `tf.setBackend("blas")` (or use `selectBackend`).
 *
 * @param libraryPath libopenblas to load; "" searches the usual system paths.
 * @returns The loaded library.
 * @throws {UserError} When OpenBLAS cannot be loaded (the message says how to install it).
 */
export function registerBlasBackend(libraryPath = ""): OpenBlas {
  if (registered) return registered;
  const blas = loadOpenBlas(libraryPath);
  tf.registerBackend("blas", () => new BlasBackend(blas), 0);
  const table = overrides();
  for (const kernel of tf.getKernelsForBackend("cpu")) {
    const replace = table.get(kernel.kernelName);
    const stock = kernel.kernelFunc;
    const kernelFunc: tf.KernelFunc = replace ? replace(stock) : (args) => {
      const out = stock(args);
      (args.backend as BlasBackend).pinViews(args.inputs, out);
      return out;
    };
    tf.registerKernel({ ...kernel, backendName: "blas", kernelFunc });
  }
  for (const name of BINARY_KERNELS.filter((n) => n.startsWith("Blas"))) {
    tf.registerKernel({ kernelName: name, backendName: "blas", kernelFunc: binaryKernel(name) });
  }
  tf.registerKernel({
    kernelName: "BlasBroadcastScale",
    backendName: "blas",
    kernelFunc: broadcastScaleKernel,
  });
  for (const [kernelName, kernelFunc] of Object.entries(ROW_PRODUCT_KERNELS)) {
    tf.registerKernel({ kernelName, backendName: "blas", kernelFunc });
  }
  installBlasGradients();
  registered = blas;
  return blas;
}
