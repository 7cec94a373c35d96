/**
 * Sparse autoencoders (SPEC section 3): TopK + AuxK (Gao et al. 2024) with a sparse gather /
 * scatter-add path, and ReLU + L1 with unit-norm decoder rows. Pure TensorFlow.js, no I/O.
 *
 * Layout: the encoder W_e is kept as [m, d] (row i reads latent i, so the sparse encoder gradient
 * is a row scatter-add) and the decoder W_d as [m, d] (row i is latent i's direction — the
 * SPEC's "decoder columns" of a d×m matrix). b is the pre-encoder bias and the decoder bias.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Config } from "../core/config_schema.ts";
import type { Adam } from "../core/train/adam.ts";
import type { NamedTensor } from "../core/train/safetensors.ts";
import { DeadTracker, initialWeights } from "./_sae_init.ts";
import {
  reluL1Forward,
  type SaeLatents,
  type SaeOutput,
  type SaeWeights,
  scatterLatents,
  type SparseLatents,
  tangentialGradient,
  topkForward,
  unitRows,
} from "./_sae_losses.ts";

export type { SaeLatents, SaeLosses, SaeOutput, SparseLatents } from "./_sae_losses.ts";
import { gatherCombine, untaped } from "./sparse_topk.ts";

/** Construction options. */
export interface SaeOptions {
  /** TopK: gather/scatter path (default) or the dense [B, m] formulation, for checking. */
  sparse?: boolean;
  /** Variable-name prefix (default "sae"; "sae_2", "sae_3"… while that one is taken). */
  name?: string;
}

/** tf.tidy keeps every tensor of a returned record; its type just lacks an index signature. */
const asContainer = (o: SaeOutput) => o as unknown as tf.TensorContainer;

const isSparse = (l: SaeLatents): l is SparseLatents => !(l instanceof tf.Tensor);

/**
 * A sparse autoencoder on d-dimensional tokens.
 *
 * @example Encode and decode a batch
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { SaeSchema } from "../core/config_schema.ts";
 * import { Sae } from "./sae.ts";
 * await tf.setBackend("cpu");
 * const cfg = SaeSchema.parse({ expansion: 2, k: 2 });
 * const sae = new Sae(4, cfg, 1, new Float32Array(16).map((_, i) => i % 5));
 * const x = tf.randomNormal([3, 4]) as tf.Tensor2D;
 * const { xHat, latents } = sae.forward(x, { training: false });
 * if (xHat.shape[1] !== 4 || !("indices" in latents)) throw new Error("Wrong output");
 * sae.dispose();
 * ```
 */
export class Sae {
  readonly d: number;
  /** Number of latents = expansion · d. */
  readonly m: number;
  readonly cfg: Config["sae"];
  /** Default path for topk: sparse gather/scatter or dense. */
  readonly sparse: boolean;
  #w: {
    we: tf.Variable<tf.Rank.R2>;
    be: tf.Variable<tf.Rank.R1>;
    wd: tf.Variable<tf.Rank.R2>;
    b: tf.Variable<tf.Rank.R1>;
  };
  #dead: DeadTracker;

  /**
   * @param d Input width.
   * @param cfg `[sae]` settings.
   * @param seed Seed of the initial directions.
   * @param sample [n, d] training tokens for the bias initialisation.
   * @param options Sparse or dense path; variable-name prefix.
   */
  constructor(
    d: number,
    cfg: Config["sae"],
    seed: number,
    sample: Float32Array,
    options: SaeOptions = {},
  ) {
    this.d = d;
    this.m = cfg.expansion * d;
    this.cfg = cfg;
    this.sparse = options.sparse ?? true;
    if (cfg.kind === "topk" && cfg.k > this.m) {
      throw new RangeError(
        `Cannot build a TopK SAE with [sae].k = ${cfg.k}: expected at most the ${this.m} latents`,
      );
    }
    const init = initialWeights(d, this.m, seed, sample, cfg.bias_init);
    const prefix = freePrefix(options.name ?? "sae");
    const m = this.m;
    // In a tidy: tf.variable shares the initial tensor's data, and that tensor must not outlive it.
    this.#w = tf.tidy(() => ({
      we: tf.variable(tf.tensor2d(init.encoder, [m, d]), true, `${prefix}.W_e`),
      be: tf.variable(tf.zeros([m]), true, `${prefix}.b_e`),
      wd: tf.variable(tf.tensor2d(init.decoder, [m, d]), true, `${prefix}.W_d`),
      b: tf.variable(tf.tensor1d(init.bias), true, `${prefix}.b`),
    }));
    this.#dead = new DeadTracker(m, cfg.dead_tokens);
  }

  /** The trainable variables: W_e, b_e, W_d, b. */
  variables(): tf.Variable[] {
    return [this.#w.we, this.#w.be, this.#w.wd, this.#w.b];
  }

  /**
   * Latents of a batch (not differentiable for topk; use {@linkcode forward} to train).
   *
   * @param x [B, d].
   * @returns topk: `{indices, values}` [B, k]; relu-l1: dense z [B, m].
   */
  encode(x: tf.Tensor2D): SaeLatents {
    return tf.tidy(() => {
      const pre = this.#preActivations(x);
      if (this.cfg.kind === "relu-l1") return tf.relu(pre) as tf.Tensor2D;
      const { values, indices } = tf.topk(pre, this.cfg.k);
      return { indices: indices as tf.Tensor2D, values: tf.relu(values) as tf.Tensor2D };
    });
  }

  /**
   * Dense latents of a batch.
   * @param x [B, d].
   * @returns [B, m], zero for inactive latents.
   */
  denseLatents(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const z = this.encode(x);
      return isSparse(z) ? scatterLatents(z.indices, z.values, this.m) : z;
    });
  }

  /**
   * Reconstruction from latents: W_dᵀz + b.
   * @param latents As returned by {@linkcode encode}.
   * @returns [B, d].
   */
  decode(latents: SaeLatents): tf.Tensor2D {
    return tf.tidy(() => {
      const decoded = isSparse(latents)
        ? gatherCombine(latents.values, this.#w.wd, latents.indices)
        : tf.matMul(latents, this.#w.wd);
      return tf.add(decoded, this.#w.b);
    });
  }

  /**
   * Reconstruction and losses, differentiable to {@linkcode variables} (tf.variableGrads).
   *
   * @param x [B, d].
   * @param options `training`: add AuxK over the current dead latents (topk); `sparse`: override
   *   the path chosen at construction.
   * @returns xHat, latents and the loss terms (see _sae_losses.ts for their normalisation).
   */
  forward(x: tf.Tensor2D, options: { training: boolean; sparse?: boolean }): SaeOutput {
    return tf.tidy(() => {
      const w = this.#w as SaeWeights;
      if (this.cfg.kind === "relu-l1") return asContainer(reluL1Forward(x, w, this.cfg.l1));
      const dead = options.training ? this.#dead.deadIndices() : null;
      const pre = this.#preActivations(x); // [B, m], constant
      const sparse = options.sparse ?? this.sparse;
      return asContainer(topkForward(x, w, pre, { ...this.cfg, dead, sparse }));
    }) as unknown as SaeOutput;
  }

  /**
   * One Adam step on a batch; updates the dead-latent counters. relu-l1: the decoder gradient
   * loses its radial component before the step and the rows are renormalised after it.
   *
   * @param x [B, d] batch.
   * @param adam An optimiser over {@linkcode variables}.
   * @returns mse, aux or l1, total (before the step), l0 and dead_fraction (after it).
   */
  trainStep(x: tf.Tensor2D, adam: Adam): Record<string, number> {
    const kept: tf.Tensor[] = [];
    try {
      return tf.tidy(() => {
        const { grads } = tf.variableGrads(() => {
          const out = this.forward(x, { training: true });
          const { mse, aux, l1, total } = out.losses;
          const l = out.latents;
          for (
            const t of [mse, aux ?? l1!, total, ...(isSparse(l) ? [l.indices, l.values] : [l])]
          ) {
            kept.push(tf.keep(t));
          }
          return total;
        }, this.variables());
        const wd = this.#w.wd;
        if (this.cfg.kind === "relu-l1") {
          grads[wd.name] = tangentialGradient(grads[wd.name] as tf.Tensor2D, wd);
        }
        adam.step(grads);
        if (this.cfg.kind === "relu-l1") wd.assign(unitRows(wd));
        const [mse, second, total] = kept.map((t) => t.dataSync()[0]);
        const l0 = this.#recordFiring(kept.slice(3), x.shape[0]);
        const dead = this.#dead.deadIndices().length / this.m;
        return {
          mse,
          [this.cfg.kind === "topk" ? "aux" : "l1"]: second,
          total,
          l0,
          dead_fraction: dead,
        };
      });
    } finally {
      kept.forEach((t) => t.dispose());
    }
  }

  /** Unit decoder rows [m, d], row-major: each latent's direction in input space. */
  featureDirections(): Float32Array {
    return tf.tidy(() => unitRows(this.#w.wd).dataSync() as Float32Array).slice();
  }

  /** Whether each latent is dead (≥ dead_tokens training tokens since it last fired). */
  deadMask(): Uint8Array {
    const mask = new Uint8Array(this.m);
    for (const i of this.#dead.deadIndices()) mask[i] = 1;
    return mask;
  }

  /** Weights and dead-latent counters, for a checkpoint (names without the variable prefix). */
  toTensors(): Record<string, NamedTensor> {
    const f32 = (t: tf.Tensor): NamedTensor => ({
      dtype: "F32",
      shape: t.shape.slice(),
      data: (t.dataSync() as Float32Array).slice(),
    });
    const { we, be, wd, b } = this.#w;
    return {
      W_e: f32(we),
      b_e: f32(be),
      W_d: f32(wd),
      b: f32(b),
      tokens_since_fired: { dtype: "F64", shape: [this.m], data: this.#dead.sinceFired.slice() },
    };
  }

  /**
   * Restores what {@linkcode toTensors} returned (copied in).
   * @param tensors Weights and counters of an SAE of the same shape.
   */
  loadTensors(tensors: Record<string, NamedTensor>): void {
    const { we, be, wd, b } = this.#w;
    const slots: Array<[string, tf.Variable | null, number[]]> = [
      ["W_e", we, we.shape],
      ["b_e", be, be.shape],
      ["W_d", wd, wd.shape],
      ["b", b, b.shape],
      ["tokens_since_fired", null, [this.m]],
    ];
    for (const [name, , shape] of slots) {
      const t = tensors[name];
      if (!t || t.shape.join() !== shape.join()) {
        throw new RangeError(
          `Cannot load SAE tensor "${name}": expected shape [${shape}], got ${
            t ? `[${t.shape}]` : "none"
          }`,
        );
      }
    }
    for (const [name, variable, shape] of slots) {
      if (variable) {
        tf.tidy(() => variable.assign(tf.tensor(Float32Array.from(tensors[name].data), shape)));
      }
    }
    this.#dead.sinceFired.set(tensors.tokens_since_fired.data);
  }

  /** Frees the variables. */
  dispose(): void {
    this.variables().forEach((v) => v.dispose());
  }

  /** W_e(x − b) + b_e [B, m], off the gradient tape. */
  #preActivations(x: tf.Tensor2D): tf.Tensor2D {
    const { we, be, b } = this.#w;
    return untaped(x, () => tf.add(tf.matMul(tf.sub(x, b), we, false, true), be)) as tf.Tensor2D;
  }

  /** Updates the dead counters from a step's latents; returns L0 (mean active per token). */
  #recordFiring(latents: tf.Tensor[], tokens: number): number {
    const fired = new Set<number>();
    let active = 0;
    if (latents.length === 2) {
      const idx = latents[0].dataSync(), values = latents[1].dataSync();
      for (let i = 0; i < idx.length; i++) {
        if (values[i] > 0) {
          fired.add(idx[i]);
          active++;
        }
      }
    } else {
      const counts = tf.tidy(() => tf.sum(tf.cast(tf.greater(latents[0], 0), "float32"), 0));
      const c = counts.dataSync();
      counts.dispose();
      for (let i = 0; i < c.length; i++) {
        if (c[i] > 0) fired.add(i);
        active += c[i];
      }
    }
    this.#dead.update(tokens, fired);
    return active / tokens;
  }
}

/** `base` if no variable "base.W_e" is registered, else the first free "base_2", "base_3"… */
function freePrefix(base: string): string {
  const taken = (p: string) => `${p}.W_e` in tf.engine().registeredVariables;
  if (!taken(base)) return base;
  let i = 2;
  while (taken(`${base}_${i}`)) i++;
  return `${base}_${i}`;
}
