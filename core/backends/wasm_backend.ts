/**
 * The `wasm` TensorFlow.js backend, the portable fallback: no native library, but
 * single-threaded in Deno (tfjs forces its thread flag off outside browsers) and slow on
 * transposed matmuls (~0.7 GFLOP/s against ~11–19 for plain ones), so those are rewritten here
 * as an explicit Transpose followed by a plain matmul.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { UserError } from "../user_error.ts";

const WASM_FILES = [
  "tfjs-backend-wasm.wasm",
  "tfjs-backend-wasm-simd.wasm",
  "tfjs-backend-wasm-threaded-simd.wasm",
] as const;

let registered = false;

/** Swaps the last two axes of a wasm tensor with the wasm Transpose kernel. */
function transposeLast2(x: tf.TensorInfo, backend: tf.KernelBackend): tf.TensorInfo {
  const perm = [...x.shape.keys()];
  [perm[perm.length - 2], perm[perm.length - 1]] = [perm[perm.length - 1], perm[perm.length - 2]];
  const transpose = tf.getKernel("Transpose", "wasm")!.kernelFunc;
  return transpose({ inputs: { x }, backend, attrs: { perm } }) as tf.TensorInfo;
}

const ACTIVATION_KERNELS: Record<string, string> = {
  relu: "Relu",
  relu6: "Relu6",
  sigmoid: "Sigmoid",
  elu: "Elu",
  leakyrelu: "LeakyRelu",
  prelu: "Prelu",
};

/** _FusedMatMul with a bias of rank ≠ 1 (the wasm kernel rejects it): matmul, Add, activation. */
function unfuseBias(args: Parameters<tf.KernelFunc>[0], backend: tf.KernelBackend): tf.TensorInfo {
  const run = (name: string, inputs: tf.NamedTensorInfoMap, attrs: tf.NamedAttrMap = {}) =>
    tf.getKernel(name, "wasm")!.kernelFunc({ inputs, backend, attrs }) as tf.TensorInfo;
  const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo>;
  const { transposeA, transposeB, activation, leakyreluAlpha } = args.attrs as Record<
    string,
    unknown
  >;
  const product = run("BatchMatMul", { a, b }, { transposeA, transposeB } as tf.NamedAttrMap);
  const summed = run("Add", { a: product, b: bias });
  backend.disposeData(product.dataId);
  const act = ACTIVATION_KERNELS[activation as string];
  if (!act) return summed;
  const out = act === "Prelu"
    ? run(act, { x: summed, alpha: preluActivationWeights })
    : run(act, { x: summed }, { alpha: leakyreluAlpha } as tf.NamedAttrMap);
  backend.disposeData(summed.dataId);
  return out;
}

/** Re-registers a wasm matmul kernel so transposed operands are transposed explicitly first. */
function untransposeMatMul(kernelName: string): void {
  const kernel = tf.getKernel(kernelName, "wasm");
  if (!kernel) throw new Error(`The wasm backend has no ${kernelName} kernel`);
  const stock = kernel.kernelFunc;
  tf.unregisterKernel(kernelName, "wasm");
  tf.registerKernel({
    ...kernel,
    kernelFunc: (args) => {
      const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
      const backend = args.backend as tf.KernelBackend;
      const bias = args.inputs.bias as tf.TensorInfo | undefined;
      if (bias && bias.shape.length !== 1) return unfuseBias(args, backend);
      if (!transposeA && !transposeB) return stock(args);
      const inputs = { ...args.inputs } as Record<string, tf.TensorInfo>;
      const temporaries: tf.TensorInfo[] = [];
      for (const [key, flag] of [["a", transposeA], ["b", transposeB]] as const) {
        if (!flag) continue;
        inputs[key] = transposeLast2(inputs[key], backend);
        temporaries.push(inputs[key]);
      }
      const out = stock({
        ...args,
        inputs,
        attrs: { ...args.attrs, transposeA: false, transposeB: false },
      });
      for (const t of temporaries) backend.disposeData(t.dataId);
      return out;
    },
  });
}

/**
 * Points the wasm backend at its .wasm files inside the installed npm package (Deno has no
 * bundler to copy them next to the script) and patches its transposed matmuls. Once per process.
 *
 * @returns The folder the .wasm files are read from.
 * @throws {UserError} When the package is not in a node_modules folder.
 */
export function registerWasmBackend(): string {
  const entry = new URL(import.meta.resolve("@tensorflow/tfjs-backend-wasm"));
  if (entry.protocol !== "file:") {
    throw new UserError(
      `Cannot find the .wasm files of @tensorflow/tfjs-backend-wasm: it resolved to "${entry}", ` +
        `not a file; run with a node_modules folder ("nodeModulesDir": "auto" in deno.json)`,
    );
  }
  const dir = new URL(".", entry).pathname;
  if (registered) return dir;
  setWasmPaths(Object.fromEntries(WASM_FILES.map((f) => [f, dir + f])));
  untransposeMatMul("BatchMatMul");
  untransposeMatMul("_FusedMatMul");
  registered = true;
  return dir;
}
