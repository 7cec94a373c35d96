/**
 * Load the trained artifacts of a run as *head configurations*: ways to turn the backbone's last
 * hidden state h into next-token logits (SPEC section 6), optionally with one latent edited
 * (ablated, scaled or clamped) for intervenability.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Config } from "../core/config_schema.ts";
import type { EmbeddingsReader } from "../core/embeddings_store.ts";
import { UserError } from "../core/user_error.ts";
import { LinearHead } from "../models/linear_head.ts";
import {
  type LatentEdit,
  type LatentKind,
  loadLatentModel,
  readTensors,
} from "./_latent_models.ts";

export type { LatentEdit } from "./_latent_models.ts";

/** A way from hidden states to logits. */
export interface HeadConfiguration {
  /** E.g. "original", "sae_latents", "lcblm_recon_original". */
  name: string;
  /** The training seed of its parts (null when nothing was trained). */
  seed: number | null;
  /** The latent model it goes through, when it supports edits. */
  latentModel: { kind: LatentKind; latents: number } | null;
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
 * @throws {UserError} When no trained artifact exists at all for the seed, or a trained model does
 *   not match the configuration (see loadLatentModel).
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
  const dispose = () => disposers.splice(0).reverse().forEach((f) => f());
  try {
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

    for (const kind of ["sae", "lcblm"] as const) {
      const model = await loadLatentModel(config, d, kind, seed);
      if (!model) continue;
      disposers.push(() => model.dispose());
      const latentModel = { kind, latents: model.latents };
      const recon = (h: tf.Tensor2D, edit?: LatentEdit) => {
        const code = model.encode(h);
        const xHat = model.decode(code);
        if (!edit) return xHat;
        const edited = model.decode(model.edit(code, edit));
        return edit.keepError ? tf.add(edited, tf.sub(h, xHat)) as tf.Tensor2D : edited;
      };
      if (model.latentHead) {
        const { weight, bias } = model.latentHead;
        const lh = head(`${kind}_latent`, model.headWidth, weight, bias);
        out.push({
          name: `${kind}_latents`,
          seed,
          latentModel,
          logits: (h, edit) =>
            tf.tidy(() => {
              const code = model.encode(h);
              return lh.logits(model.headInputs(edit ? model.edit(code, edit) : code));
            }),
        });
      }
      out.push({
        name: `${kind}_recon_original`,
        seed,
        latentModel,
        logits: (h, edit) => tf.tidy(() => original.logits(recon(h, edit))),
      });
      if (model.reconHead) {
        const rh = head(`${kind}_recon`, d, model.reconHead.weight, model.reconHead.bias);
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
    return { configurations: out, dispose };
  } catch (e) {
    dispose(); // a refused or failed load leaves nothing behind
    throw e;
  }
}
