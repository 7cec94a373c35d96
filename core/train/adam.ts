/**
 * Adam and AdamW (decoupled weight decay, Loshchilov & Hutter) with bias correction, matching
 * `torch.optim.AdamW`: p ← p·(1 − lr·wd) − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε).
 *
 * On the `blas` backend one fused loop updates each parameter, m and v in place (the stock
 * tfjs optimiser takes ~10 passes over every parameter). Elsewhere the same update runs as
 * tfjs ops. The moments are plain Float32Arrays in {@linkcode AdamState} so checkpoints can save
 * them.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { BlasBackend, sharedFloat32Array } from "../backends/blas_backend.ts";

/** Adam settings (PyTorch's defaults). */
export interface AdamOptions {
  /** Learning rate; may be changed between steps (schedules). */
  lr: number;
  /** First-moment decay β₁. */
  beta1?: number;
  /** Second-moment decay β₂. */
  beta2?: number;
  /** ε added to √v̂. */
  epsilon?: number;
  /** Decoupled weight decay (AdamW); 0 gives plain Adam. */
  weightDecay?: number;
}

/** Everything needed to resume: the step count and both moments per variable name. */
export interface AdamState {
  /** Steps taken so far (t in the bias corrections). */
  step: number;
  /** First moments by variable name. */
  m: Record<string, Float32Array>;
  /** Second moments by variable name. */
  v: Record<string, Float32Array>;
}

interface Slot {
  variable: tf.Variable;
  m: Float32Array;
  v: Float32Array;
  /** The moments as tensors, on backends other than blas. */
  mt?: tf.Variable;
  vt?: tf.Variable;
}

/**
 * Adam/AdamW over a fixed set of variables.
 *
 * @example One AdamW step on a scalar
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { Adam } from "./adam.ts";
 * await tf.setBackend("cpu");
 * const w = tf.variable(tf.scalar(1), true, "w");
 * const adam = new Adam([w], { lr: 0.1, weightDecay: 0.01 });
 * adam.step({ w: tf.scalar(0.5) });
 * // p·(1 − 0.1·0.01) − 0.1·m̂/(√v̂ + ε) with m̂ = 0.5, √v̂ = 0.5
 * if (Math.abs(w.dataSync()[0] - (0.999 - 0.1)) > 1e-6) throw new Error("Wrong step");
 * ```
 */
export class Adam {
  /** The settings; `lr` may be changed between steps. */
  readonly options: Required<AdamOptions>;
  #slots = new Map<string, Slot>();
  #step = 0;

  /**
   * Creates the optimiser with zero moments.
   *
   * @param variables The trainable variables, identified by their (unique) names.
   * @param options Learning rate, betas, ε, weight decay.
   */
  constructor(variables: tf.Variable[], options: AdamOptions) {
    this.options = { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0, ...options };
    for (const variable of variables) {
      if (this.#slots.has(variable.name)) {
        throw new Error(`Cannot optimise two variables named "${variable.name}"`);
      }
      const n = variable.size;
      this.#slots.set(variable.name, {
        variable,
        m: sharedFloat32Array(n),
        v: sharedFloat32Array(n),
      });
    }
  }

  /** Steps taken so far. */
  get iterations(): number {
    return this.#step;
  }

  /**
   * Applies one update. Variables without a gradient are left as they are (their moments too).
   * The gradients are not disposed.
   *
   * @param grads Gradients by variable name, e.g. the `grads` of `tf.variableGrads`.
   */
  step(grads: Record<string, tf.Tensor>): void {
    this.#step++;
    const backend = tf.backend();
    for (const [name, grad] of Object.entries(grads)) {
      const slot = this.#slots.get(name);
      if (!slot) {
        throw new Error(`Cannot apply a gradient for "${name}": not an optimised variable`);
      }
      if (backend instanceof BlasBackend && grad.dtype === "float32") {
        this.#fusedStep(backend, slot, grad);
      } else {
        this.#tfjsStep(slot, grad);
      }
    }
  }

  /**
   * A copy of the step count and moments, for a checkpoint.
   *
   * @returns The state; async because GPU backends read moments back asynchronously.
   */
  async getState(): Promise<AdamState> {
    const state: AdamState = { step: this.#step, m: {}, v: {} };
    for (const [name, slot] of this.#slots) {
      state.m[name] = slot.mt ? new Float32Array(await slot.mt.data()) : slot.m.slice();
      state.v[name] = slot.vt ? new Float32Array(await slot.vt.data()) : slot.v.slice();
    }
    return state;
  }

  /**
   * Restores a state from {@linkcode getState} (copied in).
   *
   * @param state The step count and moments of every variable, with matching sizes.
   */
  setState(state: AdamState): void {
    for (const [name, slot] of this.#slots) {
      const m = state.m[name], v = state.v[name];
      if (!m || !v || m.length !== slot.m.length || v.length !== slot.v.length) {
        throw new Error(
          `Cannot restore Adam state for "${name}": expected moments of ${slot.m.length} values`,
        );
      }
      slot.m.set(m);
      slot.v.set(v);
      slot.mt?.dispose();
      slot.vt?.dispose();
      slot.mt = slot.vt = undefined;
    }
    this.#step = state.step;
  }

  /** Frees the moment tensors of non-blas backends. */
  dispose(): void {
    for (const slot of this.#slots.values()) {
      slot.mt?.dispose();
      slot.vt?.dispose();
      slot.mt = slot.vt = undefined;
    }
  }

  #coefficients() {
    const { lr, beta1, beta2, epsilon, weightDecay } = this.options;
    return {
      stepSize: lr / (1 - beta1 ** this.#step),
      bc2Sqrt: Math.sqrt(1 - beta2 ** this.#step),
      decay: 1 - lr * weightDecay,
      beta1,
      beta2,
      epsilon,
    };
  }

  /** One pass over p, g, m, v. The variable gets its own array first if it shares one. */
  #fusedStep(backend: BlasBackend, slot: Slot, grad: tf.Tensor): void {
    this.#toArrays(slot);
    const variable = slot.variable;
    if (!backend.writableInPlace(variable)) {
      const copy = backend.alloc(variable.size);
      copy.set(backend.f32(variable));
      const owned = tf.engine().makeTensorFromTensorInfo(backend.output(copy, variable.shape));
      variable.assign(owned);
      owned.dispose();
    }
    backend.adamUpdate(
      backend.f32(variable),
      backend.f32(grad),
      slot.m,
      slot.v,
      this.#coefficients(),
    );
  }

  /** The same update as tfjs ops, with the moments kept as tensors on the active backend. */
  #tfjsStep(slot: Slot, grad: tf.Tensor): void {
    const { stepSize, bc2Sqrt, decay, beta1, beta2, epsilon } = this.#coefficients();
    const shape = slot.variable.shape;
    // In a tidy: tf.variable shares the initial tensor's data, and that tensor must not outlive it.
    slot.mt ??= tf.tidy(() => tf.variable(tf.tensor(slot.m.slice(), shape), false));
    slot.vt ??= tf.tidy(() => tf.variable(tf.tensor(slot.v.slice(), shape), false));
    const [mt, vt] = [slot.mt, slot.vt];
    tf.tidy(() => {
      const m = tf.add(tf.mul(mt, beta1), tf.mul(grad, 1 - beta1));
      const v = tf.add(tf.mul(vt, beta2), tf.mul(tf.square(grad), 1 - beta2));
      const denom = tf.add(tf.div(tf.sqrt(v), bc2Sqrt), epsilon);
      const p = tf.sub(tf.mul(slot.variable, decay), tf.mul(tf.div(m, denom), stepSize));
      mt.assign(m);
      vt.assign(v);
      slot.variable.assign(p);
    });
  }

  /** Moves moments held as tensors (after a backend switch) back into the arrays. */
  #toArrays(slot: Slot): void {
    if (!slot.mt || !slot.vt) return;
    slot.m.set(slot.mt.dataSync() as Float32Array);
    slot.v.set(slot.vt.dataSync() as Float32Array);
    slot.mt.dispose();
    slot.vt.dispose();
    slot.mt = slot.vt = undefined;
  }
}
