/**
 * Stage `lcblm` (SPEC section 4): train the Learnable Concept-Based model once per seed on
 * standardised embeddings, then a head on its gated concept embeddings (the K·E vector c_k·z_k
 * flattened — richer than the K gates alone, and switching concept k off zeroes its block),
 * and score reconstruction through the original head. Optional dead-concept resampling every
 * `[lcblm].resample_every` epochs until 80% of training.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { loadConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { runMain } from "../core/user_error.ts";
import { Lcblm } from "../models/lcblm.ts";
import { resampleDeadConcepts } from "../models/lcblm_resample.ts";
import { type AutoencoderFamily, autoencoderStage } from "./_autoencoder_stage.ts";

/** The LCBLM family for the shared stage body. */
export function lcblmFamily(config: Config): AutoencoderFamily<Lcblm> {
  const cfg = config.lcblm;
  return {
    stage: "lcblm",
    name: "lcblm",
    settings: cfg,
    lr: cfg.lr,
    batchSize: cfg.batch_size,
    epochs: cfg.epochs,
    build: (d, seed) => new Lcblm(d, cfg, seed),
    adapt: (model) => ({
      latents: model.k,
      headWidth: model.k * model.e,
      variables: () => model.variables(),
      trainStep: (x, adam, seed) => model.trainStep(x, adam, seed),
      reconstruct: (x) => tf.tidy(() => model.forward(x, { training: false }).xHat),
      // L0 counts gates with c > 0.5 (evaluation: c = α).
      activations: (x) =>
        tf.tidy(() => {
          const { probs } = model.encode(x);
          return tf.where(tf.greater(probs, 0.5), probs, tf.zerosLike(probs));
        }),
      headInputs: (x) =>
        tf.tidy(() => {
          const { probs, mu } = model.encode(x);
          const gated = tf.mul(mu, tf.expandDims(probs, 2));
          return tf.reshape(gated, [x.shape[0], model.k * model.e]) as tf.Tensor2D;
        }),
      afterStep: cfg.resample_every === 0 ? undefined : async (step, total, adam) => {
        const every = Math.round(cfg.resample_every * total / cfg.epochs);
        if (every === 0 || step % every !== 0 || step > 0.8 * total) return;
        const sample = resampleSample;
        if (!sample) return;
        const r = await resampleDeadConcepts(model, adam, sample, { seed: step });
        if (r.resampled.length > 0) {
          console.error(`lcblm: resampled ${r.resampled.length} dead concept(s) at step ${step}`);
        }
      },
    }),
    tensors: (model) => model.toTensors(),
    dispose: (model) => {
      model.dispose();
      resampleSample?.dispose();
      resampleSample = null;
    },
  };
}

let resampleSample: tf.Tensor2D | null = null;

if (import.meta.main) {
  await runMain(async (args) => {
    const { config } = await loadConfig(args);
    const { table } = await autoencoderStage(config, lcblmFamily(config));
    console.log(table);
  });
}
