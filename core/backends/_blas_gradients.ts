/**
 * Fused gradients for the `blas` backend. `tf.registerGradient` is global, so each replacement
 * runs its one-pass kernel only while "blas" is the active backend and otherwise calls the stock
 * gradient it replaced. The fused kernels have no gradient of their own (no second derivatives
 * through ReLU/Abs/Square/Sum/Mean on blas).
 * @module
 */
import * as tf from "@tensorflow/tfjs";

type GradFunc = tf.GradConfig["gradFunc"];

/** Wraps the stock gradient of `kernelName`: `fused` on blas, the stock one elsewhere. */
function replaceGradient(kernelName: string, fused: GradFunc): void {
  const stock = tf.getGradient(kernelName);
  if (!stock) throw new Error(`No stock gradient registered for ${kernelName}`);
  tf.registerGradient({
    ...stock,
    gradFunc: (dy, saved, attrs) =>
      tf.getBackend() === "blas" && saved.every((t) => t.dtype === "float32")
        ? fused(dy, saved, attrs)
        : stock.gradFunc(dy, saved, attrs),
  });
}

function pairGrad(kernel: string): GradFunc {
  return (dy, saved) => ({
    x: () => tf.engine().runKernel(kernel, { x: saved[0], dy: dy as tf.Tensor }) as tf.Tensor,
  });
}

/** dy broadcast back over the reduced axes, times `scale` (1 for Sum, 1/n for Mean). */
function reduceGrad(mean: boolean): GradFunc {
  return (dy, saved, attrs) => {
    const [x] = saved;
    const axes = tf.util.parseAxisParam(attrs.axis as number | number[], x.shape);
    const expanded = x.shape.map((d, i) => axes.includes(i) ? 1 : d);
    const n = axes.reduce((p, a) => p * x.shape[a], 1);
    return {
      x: () =>
        tf.engine().runKernel(
          "BlasBroadcastScale",
          { x: tf.reshape(dy as tf.Tensor, expanded) },
          { shape: x.shape, scale: mean ? 1 / n : 1 },
        ) as tf.Tensor,
    };
  };
}

let installed = false;

/** Installs the fused gradients once per process. */
export function installBlasGradients(): void {
  if (installed) return;
  installed = true;
  replaceGradient("Relu", pairGrad("BlasReluGrad"));
  replaceGradient("Abs", pairGrad("BlasAbsGrad"));
  replaceGradient("Square", pairGrad("BlasSquareGrad"));
  replaceGradient("Sum", reduceGrad(false));
  replaceGradient("Mean", reduceGrad(true));
}
