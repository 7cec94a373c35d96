/**
 * Loads a trained SAE or LCBLM of one seed — the one place the downstream stages (perplexity,
 * concepts, intervene, steer) read `<run>/sae/…/seed-<s>` and `<run>/lcblm/lcblm/seed-<s>` —
 * as a latent code of raw hidden states: encode, edit a latent, decode, the latent head's
 * inputs, activations for labelling (SAE latents z, firing where z > 0; LCBLM gate
 * probabilities α, firing where α > 0.5, SPEC section 4), and the trained heads beside it.
 *
 * The settings saved beside the model must agree with the configuration on every key that fixes
 * its shape or its evaluation-mode function ({@linkcode ARCHITECTURE_KEYS}); a mismatch is a
 * {@linkcode UserError} naming the key and both values, not a shape error later.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { parse as parseToml } from "smol-toml";
import type { Config } from "../core/config_schema.ts";
import { decodeSafetensors, type NamedTensor } from "../core/train/safetensors.ts";
import { Standardizer } from "../core/train/standardizer.ts";
import { UserError } from "../core/user_error.ts";
import { Lcblm } from "../models/lcblm.ts";
import { Sae } from "../models/sae.ts";

/** The latent models. */
export type LatentKind = "sae" | "lcblm";

/** One latent edit: set latent (SAE) or concept gate (LCBLM) k to 0, scale it, or clamp it. */
export interface LatentEdit {
  latent: number;
  mode: "ablate" | "scale" | "clamp";
  /** The factor (scale) or the value (clamp); unused for ablate. */
  value: number;
  /** Reconstruction configurations: keep the model's error, h' = x̂(edited) + (h − x̂). */
  keepError: boolean;
}

/** A trained linear head's weight [out, in] and bias [out]. */
export interface HeadWeights {
  weight: Float32Array;
  bias: Float32Array;
}

/**
 * Config keys ("section.key") that must match the saved settings for a trained model to be
 * used: the backbone whose hidden states it was trained on, and what fixes its shape and its
 * evaluation-mode function (training-only settings — losses, noise, schedule — may differ).
 */
export const ARCHITECTURE_KEYS: Record<LatentKind, readonly string[]> = {
  sae: ["backbone.model", "sae.kind", "sae.expansion", "sae.k"],
  lcblm: [
    "backbone.model",
    "lcblm.concepts",
    "lcblm.embedding_dim",
    "lcblm.encoder",
    "lcblm.similarity",
    "lcblm.topology",
  ],
};

/** A loaded latent model. Codes are lists of tensors; every tensor method expects a tf.tidy. */
export interface LatentModel {
  kind: LatentKind;
  seed: number;
  /** Number of latents m (SAE) or concepts K (LCBLM). */
  latents: number;
  /** A latent fires where its activation exceeds this. */
  threshold: number;
  /** What the activation is, in words. */
  activation: string;
  /** Inputs of the latent head: m latents (SAE) or K·E gated embeddings (LCBLM). */
  headWidth: number;
  /** Code of raw hidden states [B, d]: [z] (SAE) or [α, μ] (LCBLM). */
  encode(h: tf.Tensor2D): tf.Tensor[];
  /** The code with one latent edited. */
  edit(code: tf.Tensor[], edit: LatentEdit): tf.Tensor[];
  /** Reconstruction of raw hidden states [B, d] from a code. */
  decode(code: tf.Tensor[]): tf.Tensor2D;
  /** What the latent head reads [B, headWidth]. */
  headInputs(code: tf.Tensor[]): tf.Tensor2D;
  /**
   * Activations of raw hidden states (the first part of the code).
   * @param x [n, d] raw hidden states.
   * @returns [n, m].
   */
  activations(x: Float32Array, n: number): Float32Array;
  /** The latents→vocab head, when it was trained. */
  latentHead: HeadWeights | null;
  /** The new head on reconstructions, when it was trained. */
  reconHead: HeadWeights | null;
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
 * @param d Hidden-state width of the run's embeddings.
 * @param kind Which model.
 * @param seed Training seed.
 * @returns The model, or null when `<dir>/model.safetensors` does not exist.
 * @throws {UserError} When the model was trained with other settings ({@linkcode ARCHITECTURE_KEYS})
 *   or on hidden states of another width.
 */
export async function loadLatentModel(
  config: Config,
  d: number,
  kind: LatentKind,
  seed: number,
): Promise<LatentModel | null> {
  const dir = latentModelDir(config, kind, seed);
  const t = await readTensors(`${dir}/model.safetensors`);
  if (!t) return null;
  await checkArchitecture(config, kind, dir);
  const std = Standardizer.fromTensors(t);
  if (std.mean.length !== d) {
    throw new UserError(
      `The ${kind} in "${dir}" was trained on hidden states of width ${std.mean.length}, but the run's embeddings.h5 has width ${d}: retrain it (deno task ${kind})`,
    );
  }
  const [mean, sd] = [tf.tensor1d(std.mean), tf.tensor1d(std.std)];
  const standardize = (h: tf.Tensor2D) => tf.div(tf.sub(h, mean), sd) as tf.Tensor2D;
  const raw = (x: tf.Tensor2D) => tf.add(tf.mul(x, sd), mean) as tf.Tensor2D;
  const head = async (name: string) => {
    const h = await readTensors(`${dir}/${name}/head.safetensors`);
    if (!h) return null;
    const part = (p: string) => h[`${name}.${p}`].data as Float32Array;
    return { weight: part("weight"), bias: part("bias") };
  };
  const latentHead = await head("latent_head");
  const reconHead = await head("recon_head");
  const codec = kind === "sae" ? saeCodec(config, d, seed, t) : lcblmCodec(config, d, seed, t);
  return {
    kind,
    seed,
    ...codec,
    encode: (h) => codec.encode(standardize(h)),
    decode: (code) => raw(codec.decode(code)),
    activations: (x, n) =>
      tf.tidy(() => {
        const [first] = codec.encode(standardize(tf.tensor2d(x, [n, d])));
        return first.dataSync() as Float32Array;
      }).slice(),
    latentHead,
    reconHead,
    headLogits: latentHead && codec.headLogits(latentHead.weight),
    dispose: () => {
      codec.dispose();
      tf.dispose([mean, sd]);
    },
  };
}

/** The artifact folder of a latent model, as the training stages write it. */
export function latentModelDir(config: Config, kind: LatentKind, seed: number): string {
  const run = config.run.dir;
  return kind === "sae"
    ? `${run}/sae/${config.sae.kind.replace("-", "_")}_sae/seed-${seed}`
    : `${run}/lcblm/lcblm/seed-${seed}`;
}

/** A model in standardised space, before the wrapping in {@linkcode loadLatentModel}. */
type Codec =
  & Pick<
    LatentModel,
    "latents" | "threshold" | "activation" | "headWidth" | "encode" | "edit" | "headInputs"
  >
  & {
    decode(code: tf.Tensor[]): tf.Tensor2D;
    headLogits(weight: Float32Array): Float32Array;
    dispose(): void;
  };

function saeCodec(config: Config, d: number, seed: number, t: Record<string, NamedTensor>): Codec {
  const sae = new Sae(d, config.sae, seed, new Float32Array(d));
  fill(() => sae.loadTensors(t), sae, "sae");
  return {
    latents: sae.m,
    threshold: 0,
    activation: "SAE latent z; fires where z > 0",
    headWidth: sae.m,
    encode: (x) => [sae.denseLatents(x)],
    edit: ([z], e) => [editColumn(z as tf.Tensor2D, e)],
    decode: ([z]) => sae.decode(z as tf.Tensor2D),
    headInputs: ([z]) => z as tf.Tensor2D,
    headLogits: (weight) => weight, // [vocab, m]
    dispose: () => sae.dispose(),
  };
}

function lcblmCodec(
  config: Config,
  d: number,
  seed: number,
  t: Record<string, NamedTensor>,
): Codec {
  const model = new Lcblm(d, config.lcblm, seed);
  fill(() => model.loadTensors(t), model, "lcblm");
  const { k, e } = model;
  return {
    latents: k,
    threshold: 0.5,
    activation: "LCBLM gate probability α; fires where α > 0.5",
    headWidth: k * e,
    encode: (x) => {
      const { probs, mu } = model.encode(x);
      return [probs, mu];
    },
    edit: ([gates, mu], edit) => [editColumn(gates as tf.Tensor2D, edit), mu],
    decode: ([gates, mu]) => model.decode(gates as tf.Tensor2D, mu as tf.Tensor3D),
    headInputs: ([gates, mu]) =>
      tf.reshape(tf.mul(mu, tf.expandDims(gates, 2)), [gates.shape[0], k * e]),
    // [vocab, K, E] · [K, E] summed over E → [vocab, K].
    headLogits: (weight) =>
      tf.tidy(() => {
        const w = tf.tensor3d(weight, [weight.length / (k * e), k, e]);
        const protos = tf.tensor2d(t["lcblm.prototypes"].data as Float32Array, [k, e]);
        return tf.sum(tf.mul(w, protos), 2).dataSync() as Float32Array;
      }).slice(),
    dispose: () => model.dispose(),
  };
}

/** Runs a loadTensors; a shape mismatch frees the model and becomes a UserError. */
function fill(load: () => void, model: { dispose(): void }, kind: LatentKind): void {
  try {
    load();
  } catch (e) {
    model.dispose();
    if (!(e instanceof RangeError)) throw e;
    throw new UserError(`The trained ${kind} does not fit the configuration: ${e.message}`);
  }
}

/** Compares the settings saved beside a model with the configuration (ARCHITECTURE_KEYS). */
async function checkArchitecture(config: Config, kind: LatentKind, dir: string): Promise<void> {
  const text = await Deno.readTextFile(`${dir}/config.toml`).catch(() => null);
  if (text === null) return; // loadTensors still checks the shapes
  const saved = parseToml(text) as Record<string, Record<string, unknown>>;
  const current = config as unknown as Record<string, Record<string, unknown>>;
  for (const key of ARCHITECTURE_KEYS[kind]) {
    const [section, name] = key.split(".");
    const was = saved[section]?.[name], now = current[section][name];
    if (was !== undefined && was !== now) {
      throw new UserError(
        `[${section}].${name} is ${
          JSON.stringify(now)
        } in the configuration, but the ${kind} in "${dir}" was trained with ${
          JSON.stringify(was)
        }: set [${section}].${name} = ${
          JSON.stringify(was)
        } to use it, or retrain it (deno task ${kind})`,
      );
    }
  }
}

/**
 * Apply an edit to column `latent` of [B, m] activations.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { deepStrictEqual } from "node:assert";
 * const z = tf.tensor2d([[1, 2], [3, 4]]);
 * const e = (mode: "ablate" | "scale" | "clamp", value = 0) =>
 *   Array.from(editColumn(z, { latent: 1, mode, value, keepError: false }).dataSync());
 * deepStrictEqual(e("ablate"), [1, 0, 3, 0]);
 * deepStrictEqual(e("scale", 3), [1, 6, 3, 12]);
 * deepStrictEqual(e("clamp", 5), [1, 5, 3, 5]);
 * ```
 */
export function editColumn(z: tf.Tensor2D, edit: LatentEdit): tf.Tensor2D {
  return tf.tidy(() => {
    const m = z.shape[1];
    if (!Number.isInteger(edit.latent) || edit.latent < 0 || edit.latent >= m) {
      throw new RangeError(`Cannot edit latent ${edit.latent}: expected an integer in [0, ${m})`);
    }
    const mask = tf.oneHot(tf.tensor1d([edit.latent], "int32"), m).reshape([1, m]);
    const keep = tf.mul(z, tf.sub(1, mask));
    const col = edit.mode === "ablate"
      ? tf.zerosLike(z)
      : edit.mode === "scale"
      ? tf.mul(z, edit.value)
      : tf.fill(z.shape, edit.value);
    return tf.add(keep, tf.mul(col, mask)) as tf.Tensor2D;
  });
}

/**
 * A safetensors file's tensors, or null when the file does not exist.
 * @param path The file.
 */
export async function readTensors(path: string): Promise<Record<string, NamedTensor> | null> {
  const bytes = await Deno.readFile(path).catch(() => null);
  return bytes ? decodeSafetensors(bytes).tensors : null;
}
