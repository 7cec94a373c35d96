/**
 * A trained SAE or LCBLM seen as latent activations of raw hidden states (for concept labelling):
 * SAE latents z (firing: z > 0) or LCBLM gate probabilities α (firing: α > 0.5, SPEC section 4),
 * and each latent's logit contribution through its latent head.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Config } from "../core/config_schema.ts";
import { decodeSafetensors, type NamedTensor } from "../core/train/safetensors.ts";
import { Standardizer } from "../core/train/standardizer.ts";
import { Lcblm } from "../models/lcblm.ts";
import { Sae } from "../models/sae.ts";

/** A loaded latent model. */
export interface LatentModel {
  kind: "sae" | "lcblm";
  seed: number;
  /** Number of latents m (SAE) or concepts K (LCBLM). */
  latents: number;
  /** A latent fires where its activation exceeds this. */
  threshold: number;
  /** What the activation is, in words. */
  activation: string;
  /**
   * Activations of raw hidden states.
   * @param x [n, d] raw (unstandardised) hidden states.
   * @returns [n, m].
   */
  activations(x: Float32Array, n: number): Float32Array;
  /**
   * [vocab, m]: the latent head's logits per unit of each latent (SAE: its weight column;
   * LCBLM: its K·E weight block applied to the concept's prototype h_k, the embedding μ_k is
   * pulled to when the gate is on). Null when no latent head was trained.
   */
  headLogits: Float32Array | null;
  dispose(): void;
}

/**
 * Load the SAE or LCBLM of one seed, if it was trained.
 *
 * @param config Resolved configuration (run dir and model settings).
 * @param d Hidden-state width.
 * @param kind Which model.
 * @param seed Training seed.
 * @returns The model, or null when `<run>/…/seed-<s>/model.safetensors` does not exist.
 */
export async function loadLatentModel(
  config: Config,
  d: number,
  kind: "sae" | "lcblm",
  seed: number,
): Promise<LatentModel | null> {
  const dir = latentModelDir(config, kind, seed);
  const t = await readTensors(`${dir}/model.safetensors`);
  if (!t) return null;
  const std = Standardizer.fromTensors(t);
  const head = await readTensors(`${dir}/latent_head/head.safetensors`);
  const headWeight = head ? head["latent_head.weight"].data as Float32Array : null;
  const standardized = (x: Float32Array, n: number) => tf.tensor2d(std.apply(x.slice()), [n, d]);
  if (kind === "sae") {
    const sae = new Sae(d, config.sae, seed, new Float32Array(d));
    sae.loadTensors(t);
    return {
      kind,
      seed,
      latents: sae.m,
      threshold: 0,
      activation: "SAE latent z; fires where z > 0",
      activations: (x, n) =>
        tf.tidy(() => sae.denseLatents(standardized(x, n)).dataSync() as Float32Array).slice(),
      headLogits: headWeight, // [vocab, m]
      dispose: () => sae.dispose(),
    };
  }
  const model = new Lcblm(d, config.lcblm, seed);
  model.loadTensors(t);
  const { k, e } = model;
  let headLogits: Float32Array | null = null;
  if (headWeight) {
    // [vocab, K, E] · [K, E] summed over E → [vocab, K].
    const protos = t["lcblm.prototypes"].data as Float32Array;
    headLogits = tf.tidy(() => {
      const w = tf.tensor3d(headWeight, [headWeight.length / (k * e), k, e]);
      return tf.sum(tf.mul(w, tf.tensor2d(protos, [k, e])), 2).dataSync() as Float32Array;
    }).slice();
  }
  return {
    kind,
    seed,
    latents: k,
    threshold: 0.5,
    activation: "LCBLM gate probability α; fires where α > 0.5",
    activations: (x, n) =>
      tf.tidy(() => model.encode(standardized(x, n)).probs.dataSync() as Float32Array).slice(),
    headLogits,
    dispose: () => model.dispose(),
  };
}

/** The artifact folder of a latent model, as the training stages write it. */
export function latentModelDir(config: Config, kind: "sae" | "lcblm", seed: number): string {
  const run = config.run.dir;
  return kind === "sae"
    ? `${run}/sae/${config.sae.kind.replace("-", "_")}_sae/seed-${seed}`
    : `${run}/lcblm/lcblm/seed-${seed}`;
}

async function readTensors(path: string): Promise<Record<string, NamedTensor> | null> {
  const bytes = await Deno.readFile(path).catch(() => null);
  return bytes ? decodeSafetensors(bytes).tensors : null;
}
