/**
 * Stage `lcblm` (SPEC section 4): train the Learnable Concept-Based model once per seed on
 * standardised embeddings, then a head on its gated concept embeddings (the K·E vector c_k·z_k
 * flattened — richer than the K gates alone, and switching concept k off zeroes its block),
 * and score reconstruction through the original head. Optional dead-concept resampling every
 * `[lcblm].resample_every` epochs until 80% of training, on the stage's standardised sample of up
 * to 8192 training tokens; each model's resampling events go to `resampling.json` beside it
 * (a resumed run lists the events after the resume).
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { atomicWrite } from "../core/atomic_write.ts";
import { loadConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { runMain } from "../core/user_error.ts";
import { Lcblm } from "../models/lcblm.ts";
import { resampleDeadConcepts } from "../models/lcblm_resample.ts";
import { type AutoencoderFamily, autoencoderStage } from "./_autoencoder_stage.ts";

/** One resampling pass: the step after which it ran and the concepts it re-pointed. */
export interface ResampleEvent {
  step: number;
  resampled: number[];
}

/** The LCBLM family for the shared stage body. */
export function lcblmFamily(config: Config): AutoencoderFamily<Lcblm> {
  const cfg = config.lcblm;
  // The stage's standardised training sample [rows, d] (resampling looks for uncovered residual
  // directions in it), and each model's resampling events.
  let sample: Float32Array = new Float32Array(0);
  const events = new WeakMap<Lcblm, ResampleEvent[]>();
  return {
    stage: "lcblm",
    name: "lcblm",
    settings: cfg,
    lr: cfg.lr,
    batchSize: cfg.batch_size,
    epochs: cfg.epochs,
    build: (d, seed, rows) => {
      sample = rows;
      const model = new Lcblm(d, cfg, seed);
      events.set(model, []);
      return model;
    },
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
        const x = tf.tensor2d(sample, [sample.length / model.d, model.d]);
        try {
          const r = await resampleDeadConcepts(model, adam, x, { seed: step });
          events.get(model)!.push({ step, resampled: r.resampled });
          if (r.resampled.length > 0) {
            console.error(`lcblm: resampled ${r.resampled.length} dead concept(s) at step ${step}`);
          }
        } finally {
          x.dispose();
        }
      },
    }),
    tensors: (model) => model.toTensors(),
    exports: async (model, _standardizer, dir) => {
      if (cfg.resample_every === 0) return;
      await atomicWrite(`${dir}/resampling.json`, JSON.stringify(events.get(model), null, 1));
    },
    dispose: (model) => model.dispose(),
  };
}

if (import.meta.main) {
  await runMain(async (args) => {
    const { config } = await loadConfig(args);
    const { table } = await autoencoderStage(config, lcblmFamily(config));
    console.log(table);
  });
}
