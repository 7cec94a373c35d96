/**
 * Load the trained artifacts of a run as *head configurations*: ways to turn the backbone's last
 * hidden state h into next-token logits (SPEC section 6), optionally with one latent edited
 * (ablated, scaled or clamped) for intervenability.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Config } from "../core/config_schema.ts";
import type { EmbeddingsReader } from "../core/embeddings_store.ts";
import { decodeSafetensors, type NamedTensor } from "../core/train/safetensors.ts";
import { Standardizer } from "../core/train/standardizer.ts";
import { UserError } from "../core/user_error.ts";
import { Lcblm } from "../models/lcblm.ts";
import { LinearHead } from "../models/linear_head.ts";
import { Sae } from "../models/sae.ts";

/** One latent edit: set latent (SAE) or concept gate (LCBLM) k to 0, scale it, or clamp it. */
export interface LatentEdit {
  latent: number;
  mode: "ablate" | "scale" | "clamp";
  /** The factor (scale) or the value (clamp); unused for ablate. */
  value: number;
  /** Reconstruction configurations: keep the model's error, h' = x̂(edited) + (h − x̂). */
  keepError: boolean;
}

/** A way from hidden states to logits. */
export interface HeadConfiguration {
  /** E.g. "original", "sae_latents", "lcblm_recon_original". */
  name: string;
  /** The training seed of its parts (null when nothing was trained). */
  seed: number | null;
  /** The latent model it goes through, when it supports edits. */
  latentModel: { kind: "sae" | "lcblm"; latents: number } | null;
  /**
   * Logits of raw hidden states.
   * @param h [B, d] hidden states after the final norm.
   * @param edit An optional latent edit.
   * @returns [B, vocab].
   */
  logits(h: tf.Tensor2D, edit?: LatentEdit): tf.Tensor2D;
}

/** The configurations of one seed, and a way to free them. */
export interface TrainedSet {
  configurations: HeadConfiguration[];
  dispose(): void;
}

/** Names of every configuration, in report order (optional ones only when trained). */
export const CONFIGURATION_NAMES = [
  "original",
  "finetuned_head",
  "new_head",
  "sae_latents",
  "sae_recon_original",
  "sae_recon_new",
  "lcblm_latents",
  "lcblm_recon_original",
  "lcblm_recon_new",
] as const;

/**
 * Load every configuration trained for one seed.
 *
 * @param config Resolved configuration (names the run dir and the model settings).
 * @param reader The run's embeddings (for the original LM head).
 * @param seed Training seed.
 * @returns The configurations whose artifacts exist; "original" always.
 * @throws {UserError} When no trained artifact exists at all for the seed.
 */
export async function loadTrainedSet(
  config: Config,
  reader: EmbeddingsReader,
  seed: number,
): Promise<TrainedSet> {
  const d = reader.d;
  const { weight: wU, bias: bU } = reader.lmHead();
  const vocab = wU.length / d;
  const disposers: Array<() => void> = [];
  const head = (name: string, inputs: number, weight: Float32Array, bias: Float32Array | null) => {
    const h = new LinearHead(`${name}_${seed}`, inputs, vocab, 0, {
      kind: "weights",
      weight,
      bias,
    });
    disposers.push(() => h.dispose());
    return h;
  };
  const original = head("original", d, wU, bU);
  const out: HeadConfiguration[] = [{
    name: "original",
    seed: null,
    latentModel: null,
    logits: (h) => original.logits(h),
  }];
  const run = config.run.dir;
  for (const name of ["finetuned_head", "new_head"]) {
    const t = await readTensors(`${run}/baselines/${name}/seed-${seed}/head.safetensors`);
    if (!t) continue;
    const h = head(
      name,
      d,
      t["head.weight"].data as Float32Array,
      t["head.bias"].data as Float32Array,
    );
    out.push({ name, seed, latentModel: null, logits: (x) => h.logits(x) });
  }

  // Latent models: code = (activations the head reads, a decoder back to h-space).
  const latentKinds: Array<{
    kind: "sae" | "lcblm";
    dir: string;
    build: (t: Record<string, NamedTensor>) => LatentCodec;
  }> = [
    {
      kind: "sae",
      dir: `${run}/sae/${config.sae.kind.replace("-", "_")}_sae/seed-${seed}`,
      build: (t) => saeCodec(new Sae(d, config.sae, seed, new Float32Array(d)), t),
    },
    {
      kind: "lcblm",
      dir: `${run}/lcblm/lcblm/seed-${seed}`,
      build: (t) => lcblmCodec(new Lcblm(d, config.lcblm, seed), t),
    },
  ];
  for (const { kind, dir, build } of latentKinds) {
    const t = await readTensors(`${dir}/model.safetensors`);
    if (!t) continue;
    const std = Standardizer.fromTensors(t);
    const codec = build(t);
    disposers.push(() => codec.dispose());
    const [mean, sd] = [tf.tensor1d(std.mean), tf.tensor1d(std.std)];
    disposers.push(() => tf.dispose([mean, sd]));
    const standardize = (h: tf.Tensor2D) => tf.div(tf.sub(h, mean), sd) as tf.Tensor2D;
    const raw = (x: tf.Tensor2D) => tf.add(tf.mul(x, sd), mean) as tf.Tensor2D;
    const latentModel = { kind, latents: codec.latents };
    const recon = (h: tf.Tensor2D, edit?: LatentEdit) => {
      const code = codec.encode(standardize(h));
      const xHat = raw(codec.decode(code));
      if (!edit) return xHat;
      const edited = raw(codec.decode(codec.edit(code, edit)));
      return edit.keepError ? tf.add(edited, tf.sub(h, xHat)) as tf.Tensor2D : edited;
    };
    const latentHead = await readTensors(`${dir}/latent_head/head.safetensors`);
    if (latentHead) {
      const lh = head(
        `${kind}_latent`,
        codec.headWidth,
        latentHead["latent_head.weight"].data as Float32Array,
        latentHead["latent_head.bias"].data as Float32Array,
      );
      out.push({
        name: `${kind}_latents`,
        seed,
        latentModel,
        logits: (h, edit) =>
          tf.tidy(() => {
            const code = codec.encode(standardize(h));
            return lh.logits(codec.headInputs(edit ? codec.edit(code, edit) : code));
          }),
      });
    }
    out.push({
      name: `${kind}_recon_original`,
      seed,
      latentModel,
      logits: (h, edit) => tf.tidy(() => original.logits(recon(h, edit))),
    });
    const reconHead = await readTensors(`${dir}/recon_head/head.safetensors`);
    if (reconHead) {
      const rh = head(
        `${kind}_recon`,
        d,
        reconHead["recon_head.weight"].data as Float32Array,
        reconHead["recon_head.bias"].data as Float32Array,
      );
      out.push({
        name: `${kind}_recon_new`,
        seed,
        latentModel,
        logits: (h, edit) => tf.tidy(() => rh.logits(recon(h, edit))),
      });
    }
  }
  if (out.length === 1) {
    throw new UserError(
      `No trained models for seed ${seed} under "${run}"; run "deno task baselines", "deno task sae" and "deno task lcblm" first`,
    );
  }
  return {
    configurations: out,
    dispose: () => disposers.reverse().forEach((f) => f()),
  };
}

/** A latent model seen as encode / edit / decode / head inputs (standardised space). */
interface LatentCodec {
  latents: number;
  headWidth: number;
  encode(x: tf.Tensor2D): tf.Tensor[];
  edit(code: tf.Tensor[], edit: LatentEdit): tf.Tensor[];
  decode(code: tf.Tensor[]): tf.Tensor2D;
  headInputs(code: tf.Tensor[]): tf.Tensor2D;
  dispose(): void;
}

function saeCodec(sae: Sae, t: Record<string, NamedTensor>): LatentCodec {
  sae.loadTensors(t);
  return {
    latents: sae.m,
    headWidth: sae.m,
    encode: (x) => [sae.denseLatents(x)],
    edit: ([z], e) => [editColumn(z as tf.Tensor2D, e)],
    decode: ([z]) => sae.decode(z as tf.Tensor2D),
    headInputs: ([z]) => z as tf.Tensor2D,
    dispose: () => sae.dispose(),
  };
}

function lcblmCodec(model: Lcblm, t: Record<string, NamedTensor>): LatentCodec {
  model.loadTensors(t);
  return {
    latents: model.k,
    headWidth: model.k * model.e,
    encode: (x) => {
      const { probs, mu } = model.encode(x);
      return [probs, mu];
    },
    edit: ([gates, mu], e) => [editColumn(gates as tf.Tensor2D, e), mu],
    decode: ([gates, mu]) => model.decode(gates as tf.Tensor2D, mu as tf.Tensor3D),
    headInputs: ([gates, mu]) =>
      tf.reshape(tf.mul(mu, tf.expandDims(gates, 2)), [gates.shape[0], model.k * model.e]),
    dispose: () => model.dispose(),
  };
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

async function readTensors(path: string): Promise<Record<string, NamedTensor> | null> {
  const bytes = await Deno.readFile(path).catch(() => null);
  return bytes ? decodeSafetensors(bytes).tensors : null;
}
