/**
 * The Learnable Concept-Based model (LCBLM, SPEC section 4): K learnable concept prototypes
 * h_k ∈ R^E, an encoder μ(x) ∈ R^{K×E}, Bernoulli gates α_k = σ(s·sim(μ_k, h_k)) and a decoder
 * from the gated embeddings back to the d-dimensional input.
 *
 * Weights use PyTorch's layout and names (`lcblm.encoder.0.weight` is [out, in], `nn.Sequential`
 * indices), so the safetensors of {@linkcode Lcblm.toTensors} load into the equivalent module.
 * tfjs variable names are global: dispose one model before building another.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Config } from "../core/config_schema.ts";
import { Rng } from "../core/rng.ts";
import type { Adam } from "../core/train/adam.ts";
import type { NamedTensor } from "../core/train/safetensors.ts";
import {
  bernoulliEntropy,
  bernoulliKl,
  expandLast,
  gelu,
  linear,
  NOISE_CLAMP,
  orthogonality,
  sigmoid,
  similarity,
  stopGradient,
  sumLast,
} from "./_lcblm_ops.ts";

/** The `[lcblm]` settings. */
export type LcblmConfig = Config["lcblm"];

/** Hidden width of the "mlp" encoder (SPEC: Linear d→256, ReLU, Linear 256→KE). */
const MLP_HIDDEN = 256;
/** Loss terms, in the order {@linkcode Lcblm.trainStep} reports them. */
const TERMS = ["mse", "condKl", "sparsityKl", "entropy", "ortho", "total"] as const;

/** The noise of one training forward, injected instead of sampled (tests, reproduction). */
export interface LcblmNoise {
  /** Uniform draws u ∈ (0, 1) of the relaxed Bernoulli gates [B, K] (clamped to 1e-6). */
  u: tf.Tensor2D;
  /** Standard normal draws ε of the embedding noise [B, K, E]. */
  eps: tf.Tensor3D;
}

/** How to run {@linkcode Lcblm.forward}. */
export interface LcblmForwardOptions {
  /** Training: relaxed Bernoulli gates and noisy embeddings; evaluation: c = α, z = μ. */
  training: boolean;
  /** Seed of the training noise (a safe integer; derive it from the run seed and step). */
  seed?: number;
  /** Noise to use instead of sampling it (training only). */
  noise?: LcblmNoise;
}

/** Loss terms, each a scalar; total = mse + γ·condKl + β·sparsityKl + λ_ent·entropy + λ_ortho·ortho. */
export type LcblmLosses = Record<(typeof TERMS)[number], tf.Scalar>;

/** What {@linkcode Lcblm.forward} returns. */
export interface LcblmOutput {
  /** Reconstruction [B, d]. */
  xHat: tf.Tensor2D;
  /** Gates c [B, K]: relaxed Bernoulli samples in training, α in evaluation. */
  gates: tf.Tensor2D;
  /** Gate probabilities α [B, K]. */
  probs: tf.Tensor2D;
  /** Concept embeddings z [B, K, E]: μ + σ₀ε in training, μ in evaluation. */
  z: tf.Tensor3D;
  losses: LcblmLosses;
}

/**
 * The LCBLM. Loss = MSE + γ·CondKL + β·SparsityKL + λ_ent·Entropy + λ_ortho·Ortho:
 * - MSE: mean over all B·d elements of (x̂ − x)².
 * - CondKL: mean over the batch of Σ_k [α̂_k‖μ_k − h_k‖² + (1 − α̂_k)‖μ_k‖²], α̂ = stop-grad(α).
 * - SparsityKL: Σ_k KL(Bern(ᾱ_k) ‖ Bern(π)), ᾱ_k = batch mean of α_k clamped to [1e-6, 1 − 1e-6].
 * - Entropy: mean over the batch of Σ_k H(α_k), from the logits (exact when saturated).
 * - Ortho: Σ_{i<j} ‖B̂_iᵀB̂_j‖²_F over the decoder's E-column blocks, vectorised; computed only
 *   when λ_ortho > 0 (it needs topology "stacked"), reported as 0 otherwise.
 *
 * Training gates are relaxed Bernoulli samples c_k = σ((ℓ_k + logit u)/τ), u ~ U(0, 1): logistic
 * noise, as SPEC prescribes (the original study drew log u₁ − log u₂, Laplace noise).
 *
 * @example An evaluation forward reconstructs [B, d] from K gates per token
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { LcblmSchema } from "../core/config_schema.ts";
 * import { Lcblm } from "./lcblm.ts";
 * await tf.setBackend("cpu");
 * const model = new Lcblm(6, LcblmSchema.parse({ concepts: 4, embedding_dim: 3, prior: 0.5 }), 1);
 * const x = tf.randomNormal([5, 6], 0, 1, "float32", 7) as tf.Tensor2D;
 * const out = model.forward(x, { training: false });
 * if (out.xHat.shape.join() !== "5,6" || out.gates.shape.join() !== "5,4") throw new Error("Shape");
 * model.dispose();
 * ```
 */
export class Lcblm {
  /** Input width d. */
  readonly d: number;
  /** Number of concepts K. */
  readonly k: number;
  /** Concept embedding width E. */
  readonly e: number;
  /** The settings it was built with. */
  readonly cfg: LcblmConfig;
  #vars = new Map<string, tf.Variable>();

  /**
   * Builds the model with PyTorch's default initialisation for the linear layers
   * (U(±1/√fan_in) for weights and biases), prototypes ~ N(0, 1), θ = log 10 and b = √(2E).
   * Warns (console.warn, once per model) when K·π is outside [2, 7]: too few or too many
   * concepts expected per token.
   *
   * @param d Input width.
   * @param cfg The `[lcblm]` settings.
   * @param seed Seed of the initialisation (a safe integer).
   */
  constructor(d: number, cfg: LcblmConfig, seed: number) {
    if (cfg.ortho > 0 && cfg.topology !== "stacked") {
      throw new Error(`Cannot use ortho = ${cfg.ortho} with topology "summed": expected 0`);
    }
    this.d = d;
    this.k = cfg.concepts;
    this.e = cfg.embedding_dim;
    this.cfg = cfg;
    const ke = this.k * this.e;
    const rng = new Rng(seed);
    const next = () => Math.floor(rng.next() * 2 ** 32);
    const shapes: Array<[string, number[], () => tf.Tensor]> = [];
    const linearLayer = (name: string, out: number, inp: number) => {
      const bound = 1 / Math.sqrt(inp);
      const [ws, bs] = [next(), next()];
      shapes.push([
        `${name}.weight`,
        [out, inp],
        () => tf.randomUniform([out, inp], -bound, bound, "float32", ws),
      ]);
      shapes.push([
        `${name}.bias`,
        [out],
        () => tf.randomUniform([out], -bound, bound, "float32", bs),
      ]);
    };
    if (cfg.encoder === "mlp") {
      linearLayer("lcblm.encoder.0", MLP_HIDDEN, d);
      linearLayer("lcblm.encoder.2", ke, MLP_HIDDEN);
    } else {
      linearLayer("lcblm.encoder.0", ke, d);
    }
    const ps = next();
    shapes.push([
      "lcblm.prototypes",
      [this.k, this.e],
      () => tf.randomNormal([this.k, this.e], 0, 1, "float32", ps),
    ]);
    shapes.push(["lcblm.logit_scale", [], () => tf.scalar(Math.log(10))]);
    if (cfg.similarity === "distance") {
      shapes.push(["lcblm.distance_bias", [], () => tf.scalar(Math.sqrt(2 * this.e))]);
    }
    linearLayer("lcblm.decoder", d, cfg.topology === "stacked" ? ke : this.e);
    const taken = shapes.map(([name]) => name).filter((n) => tf.engine().registeredVariables[n]);
    if (taken.length > 0) {
      throw new Error(
        `Cannot build an Lcblm while variable "${
          taken[0]
        }" exists: dispose() the other model first`,
      );
    }
    for (const [name, , init] of shapes) {
      this.#vars.set(name, tf.tidy(() => tf.variable(init(), true, name)));
    }
    const kp = this.k * cfg.prior;
    if (kp < 2 || kp > 7) {
      console.warn(
        `lcblm: K·π = ${this.k}·${cfg.prior} = ${kp.toPrecision(3)} expected concepts per token ` +
          `is outside [2, 7]; consider [lcblm].prior = ${(4 / this.k).toPrecision(2)}`,
      );
    }
  }

  /**
   * The trainable variables, in a fixed order.
   *
   * @returns Encoder, prototypes, logit scale, (distance bias), decoder.
   */
  variables(): tf.Variable[] {
    return [...this.#vars.values()];
  }

  /**
   * Evaluation-mode encoding.
   *
   * @param x Inputs [B, d].
   * @returns Gate probabilities α [B, K] and concept embeddings μ [B, K, E].
   */
  encode(x: tf.Tensor2D): { probs: tf.Tensor2D; mu: tf.Tensor3D } {
    return tf.tidy(() => {
      const mu = this.#mu(x);
      return { probs: sigmoid(this.#logits(mu)), mu };
    });
  }

  /**
   * Decodes gated concept embeddings: stacked flattens c_k·z_k to K·E, summed adds them to E.
   *
   * @param gates c [B, K].
   * @param z Embeddings [B, K, E].
   * @returns x̂ [B, d].
   */
  decode(gates: tf.Tensor2D, z: tf.Tensor3D): tf.Tensor2D {
    return tf.tidy(() => {
      const gated = tf.mul(z, expandLast(gates, this.e)) as tf.Tensor3D; // [B, K, E]
      const input = this.cfg.topology === "stacked"
        ? tf.reshape(gated, [gated.shape[0], this.k * this.e]) as tf.Tensor2D
        : tf.sum(gated, 1) as tf.Tensor2D;
      return linear(input, this.#v("decoder.weight"), this.#v("decoder.bias"));
    });
  }

  /**
   * The full forward pass with every loss term.
   *
   * @param x Inputs [B, d].
   * @param opts Training or evaluation; a seed or injected noise for training.
   * @returns Reconstruction, gates, probabilities, embeddings and losses (the caller disposes).
   */
  forward(x: tf.Tensor2D, opts: LcblmForwardOptions): LcblmOutput {
    const { cfg } = this;
    if (opts.training && opts.noise === undefined && opts.seed === undefined) {
      throw new Error("Cannot run a training forward without a seed or injected noise");
    }
    return tf.tidy(() => {
      const batch = x.shape[0];
      const mu = this.#mu(x); // [B, K, E]
      const logits = this.#logits(mu); // [B, K]
      const probs = sigmoid(logits);
      let gates = probs, z = mu;
      if (opts.training) {
        const { u, eps } = opts.noise ?? this.#sampleNoise(batch, opts.seed!);
        const uc = tf.clipByValue(u, NOISE_CLAMP, 1 - NOISE_CLAMP);
        const logistic = tf.sub(tf.log(uc), tf.log1p(tf.neg(uc))); // logit(u)
        gates = sigmoid(tf.div(tf.add(logits, logistic), cfg.tau));
        z = tf.add(mu, tf.mul(eps, cfg.z_noise));
      }
      const xHat = this.decode(gates, z);
      const mse = tf.mean(tf.squaredDifference(xHat, x)) as tf.Scalar;
      const aHat = stopGradient(probs);
      const near = sumLast(tf.square(tf.sub(mu, this.#v("prototypes")))); // [B, K]
      const far = sumLast(tf.square(mu));
      const cond = tf.add(tf.mul(aHat, near), tf.mul(tf.sub(1, aHat), far));
      const condKl = tf.div(tf.sum(cond), batch) as tf.Scalar;
      const sparsityKl = bernoulliKl(tf.mean(probs, 0), cfg.prior);
      const entropy = tf.div(tf.sum(bernoulliEntropy(logits)), batch) as tf.Scalar;
      const ortho = cfg.ortho > 0 ? orthogonality(this.#v("decoder.weight"), this.k) : tf.scalar(0);
      const total = tf.addN([
        mse,
        tf.mul(condKl, cfg.gamma),
        tf.mul(sparsityKl, cfg.beta),
        tf.mul(entropy, cfg.entropy),
        tf.mul(ortho, cfg.ortho),
      ]) as tf.Scalar;
      const losses = { mse, condKl, sparsityKl, entropy, ortho, total };
      return { xHat, gates, probs, z, losses };
    });
  }

  /**
   * One optimisation step on the total loss (training mode).
   *
   * @param x Inputs [B, d].
   * @param adam The optimiser over {@linkcode variables}.
   * @param seed Seed of this step's noise, e.g. `runSeed * 1_000_000 + step`.
   * @returns The loss terms before the update, as numbers.
   */
  trainStep(x: tf.Tensor2D, adam: Adam, seed: number): Record<string, number> {
    let terms: tf.Tensor | undefined;
    const { value, grads } = tf.variableGrads(() => {
      const { losses } = this.forward(x, { training: true, seed });
      terms = tf.keep(tf.stack(TERMS.map((t) => losses[t])));
      return losses.total;
    }, this.variables());
    adam.step(grads);
    const values = terms!.dataSync();
    tf.dispose([value, terms!, ...Object.values(grads)]);
    return Object.fromEntries(TERMS.map((t, i) => [t, values[i]]));
  }

  /**
   * L0: the mean number of gates above 0.5 per token.
   *
   * @param gates c or α [B, K].
   * @returns Mean active concepts per token.
   */
  l0(gates: tf.Tensor2D): number {
    const l0 = tf.tidy(() => tf.mean(tf.sum(tf.cast(tf.greater(gates, 0.5), "float32"), 1)));
    const value = l0.dataSync()[0];
    l0.dispose();
    return value;
  }

  /**
   * Concept directions in input space: row k = decoder(one-hot_k ⊗ h_k) − decoder(0), the
   * decoder's response to concept k alone at its prototype, without the decoder bias (a
   * direction, not a point): B_k·h_k for stacked, W·h_k for summed.
   *
   * @returns Directions [K, d], row-major.
   */
  conceptDirections(): Float32Array {
    const w = this.#v("decoder.weight"), h = this.#v("prototypes");
    return tf.tidy(() => {
      if (this.cfg.topology === "summed") return tf.matMul(h, w, false, true);
      const blocks = tf.reshape(w, [this.d, this.k, this.e]);
      return tf.transpose(tf.sum(tf.mul(blocks, h), 2)); // [K, d]
    }).dataSync() as Float32Array;
  }

  /**
   * The weights as safetensors entries, by variable name.
   *
   * @returns Copies of every variable (F32).
   */
  toTensors(): Record<string, NamedTensor> {
    const out: Record<string, NamedTensor> = {};
    for (const [name, v] of this.#vars) {
      out[name] = {
        dtype: "F32",
        shape: [...v.shape],
        data: (v.dataSync() as Float32Array).slice(),
      };
    }
    return out;
  }

  /**
   * Loads weights saved by {@linkcode toTensors}; other entries are ignored.
   *
   * @param tensors Tensors by name, with every variable present at its shape.
   */
  loadTensors(tensors: Record<string, NamedTensor>): void {
    for (const [name, v] of this.#vars) {
      const t = tensors[name];
      if (!t || t.dtype !== "F32" || t.shape.join() !== v.shape.join()) {
        const got = t ? `${t.dtype} [${t.shape}]` : "nothing";
        throw new Error(`Cannot load "${name}": expected F32 [${v.shape}], got ${got}`);
      }
    }
    for (const [name, v] of this.#vars) {
      tf.tidy(() => v.assign(tf.tensor(tensors[name].data, v.shape, "float32")));
    }
  }

  /** Frees the variables (their names become free for another model). */
  dispose(): void {
    for (const v of this.#vars.values()) v.dispose();
    this.#vars.clear();
  }

  #v<T extends tf.Tensor>(name: string): T {
    return this.#vars.get(`lcblm.${name}`) as unknown as T;
  }

  /** μ(x) [B, K, E]. */
  #mu(x: tf.Tensor2D): tf.Tensor3D {
    const first = linear(x, this.#v("encoder.0.weight"), this.#v("encoder.0.bias"));
    const out = this.cfg.encoder === "linear"
      ? first
      : this.cfg.encoder === "shallow"
      ? gelu(first)
      : linear(tf.relu(first), this.#v("encoder.2.weight"), this.#v("encoder.2.bias"));
    return tf.reshape(out, [x.shape[0], this.k, this.e]);
  }

  /** ℓ = s·sim(μ_k, h_k) with s = clamp(exp θ, 1, 100). */
  #logits(mu: tf.Tensor3D): tf.Tensor2D {
    const scale = tf.clipByValue(tf.exp(this.#v<tf.Scalar>("logit_scale")), 1, 100);
    const sim = similarity(
      mu,
      this.#v("prototypes"),
      this.cfg.similarity,
      this.cfg.similarity === "distance" ? this.#v("distance_bias") : undefined,
    );
    return tf.mul(sim, scale);
  }

  /** Uniform u [B, K] and normal ε [B, K, E] from two streams derived from the seed. */
  #sampleNoise(batch: number, seed: number): LcblmNoise {
    const rng = new Rng(seed);
    const [us, es] = [Math.floor(rng.next() * 2 ** 32), Math.floor(rng.next() * 2 ** 32)];
    return {
      u: tf.randomUniform([batch, this.k], 0, 1, "float32", us) as tf.Tensor2D,
      eps: tf.randomNormal([batch, this.k, this.e], 0, 1, "float32", es) as tf.Tensor3D,
    };
  }
}
