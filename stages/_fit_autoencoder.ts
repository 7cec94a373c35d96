/**
 * Train one interpretable autoencoder (an SAE or the LCBLM) on standardised embeddings, keep its
 * best-validation weights, measure it (SPEC section 3 metrics, CE through the original head,
 * CE recovered), and train the heads that run next-token prediction through it.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Config } from "../core/config_schema.ts";
import type { EmbeddingsReader } from "../core/embeddings_store.ts";
import { Adam } from "../core/train/adam.ts";
import { loadCheckpoint } from "../core/train/checkpoint.ts";
import { embeddingBatches } from "../core/train/embedding_batches.ts";
import type { NamedTensor } from "../core/train/safetensors.ts";
import type { Standardizer } from "../core/train/standardizer.ts";
import { tfTrainable } from "../core/train/tf_trainable.ts";
import { trainLoop, type TrainResult } from "../core/train/train_loop.ts";
import { loopOptions } from "./_loop_options.ts";
import { firingHistogram, ReconstructionMetrics } from "../eval/reconstruction_metrics.ts";
import { LinearHead } from "../models/linear_head.ts";
import { type Features, fitHead, scoreHead } from "./_fit_head.ts";

/** What the fitting needs from a model (implemented for the SAE and the LCBLM). */
export interface Autoencoder {
  /** Number of latents (SAE) or concepts (LCBLM). */
  latents: number;
  /** Width of the head input computed by {@link headInputs}. */
  headWidth: number;
  variables(): tf.Variable[];
  trainStep(x: tf.Tensor2D, adam: Adam, seed: number): Record<string, number>;
  /** Evaluation-mode reconstruction [B, d] (standardised space). */
  reconstruct(x: tf.Tensor2D): tf.Tensor2D;
  /** Evaluation-mode activations [B, latents]; zero = inactive (drives L0 and firing rates). */
  activations(x: tf.Tensor2D): tf.Tensor2D;
  /** What a latents→vocab head reads [B, headWidth]. */
  headInputs(x: tf.Tensor2D): tf.Tensor2D;
  /** Non-variable state to checkpoint (e.g. dead-latent counters). */
  extraState?: { save(): Record<string, NamedTensor>; load(t: Record<string, NamedTensor>): void };
  /** Called after each step with the optimiser (e.g. dead-concept resampling). */
  afterStep?(step: number, totalSteps: number, adam: Adam): Promise<void>;
}

/** Settings of one fit. */
export interface FitAutoencoderOptions {
  config: Config;
  reader: EmbeddingsReader;
  standardizer: Standardizer;
  /** The original LM head (W_U [vocab, d], bias). */
  lmHead: { weight: Float32Array; bias: Float32Array | null };
  dir: string;
  label: string;
  model: Autoencoder;
  lr: number;
  batchSize: number;
  epochs: number;
  seed: number;
  resume: boolean;
}

/** The metrics of one fitted model. */
export interface AutoencoderMetrics {
  mse: number;
  fvu: number;
  l0: number;
  dead_fraction: number;
  /** CE of the original head on x, on x̂ (denormalised), and on the training mean of x. */
  ce_original: number;
  ce_recon: number;
  ce_mean_ablation: number;
  /** (CE_mean-ablation − CE_recon) / (CE_mean-ablation − CE_original). */
  ce_recovered: number;
  latent_head_ce: number;
  latent_head_ppl: number;
  latent_head_top1: number;
  recon_head_ce?: number;
  recon_head_ppl?: number;
  recon_head_top1?: number;
}

/**
 * Fit, restore the best weights, and measure.
 *
 * @param o Settings.
 * @returns Metrics, the firing histogram, and the training history.
 */
export async function fitAutoencoder(o: FitAutoencoderOptions): Promise<{
  metrics: AutoencoderMetrics;
  firing: ReturnType<typeof firingHistogram>;
  train: TrainResult;
}> {
  const { config, reader, standardizer, model } = o;
  const d = reader.d;
  const mean = tf.tensor1d(standardizer.mean), std = tf.tensor1d(standardizer.std);
  const standardize = (x: tf.Tensor2D) => tf.div(tf.sub(x, mean), std) as tf.Tensor2D;
  const denormalize = (x: tf.Tensor2D) => tf.add(tf.mul(x, std), mean) as tf.Tensor2D;
  const raw = (x: Float32Array, n: number) => tf.tensor2d(x, [n, d]);
  try {
    // 1. Train on standardised tokens; validate by FVU on the validation split.
    const adam = new Adam(model.variables(), { lr: o.lr });
    const validate = () => reconstructionMetrics(o, model, standardize).fvu;
    const trainable = tfTrainable({
      variables: model.variables(),
      adam,
      step: (b: { x: Float32Array; n: number }, seed) =>
        tf.tidy(() => model.trainStep(tf.tensor2d(b.x, [b.n, d]), adam, seed).total),
      validate,
      extraState: model.extraState,
    }, o.seed);
    const options = loopOptions(config, reader, { ...o, standardizer });
    const totalSteps = options.schedule.totalSteps;
    const train = await trainLoop(trainable, {
      ...options,
      afterStep: model.afterStep ? (step) => model.afterStep!(step, totalSteps, adam) : undefined,
    });
    const best = await loadCheckpoint(`${o.dir}/best`);
    if (best) trainable.loadTensors(best.tensors);
    adam.dispose();

    // 2. Reconstruction metrics, and CE through the original head.
    const rec = reconstructionMetrics(o, model, standardize, true);
    const original = new LinearHead("original_head", d, o.lmHead.weight.length / d, 0, {
      kind: "weights",
      ...o.lmHead,
    });
    const ceOf = (f: Features) => scoreHead(original, reader, f, config).ce;
    const ceOriginal = ceOf(raw);
    const ceRecon = ceOf((x, n) => denormalize(model.reconstruct(standardize(raw(x, n)))));
    const ceMean = ceOf((_x, n) => tf.tile(tf.reshape(mean, [1, d]), [n, 1]) as tf.Tensor2D);
    original.dispose();
    const metrics: AutoencoderMetrics = {
      mse: rec.mse,
      fvu: rec.fvu,
      l0: rec.l0,
      dead_fraction: rec.deadFraction,
      ce_original: ceOriginal,
      ce_recon: ceRecon,
      ce_mean_ablation: ceMean,
      ce_recovered: (ceMean - ceRecon) / (ceMean - ceOriginal),
      latent_head_ce: NaN,
      latent_head_ppl: NaN,
      latent_head_top1: NaN,
    };

    // 3. Heads through the model: latents → vocab, and optionally reconstruction → vocab.
    const heads: Array<[string, number, Features]> = [
      ["latent_head", model.headWidth, (x, n) => model.headInputs(standardize(raw(x, n)))],
    ];
    if (config.heads.recon_new_head) {
      heads.push([
        "recon_head",
        d,
        (x, n) => denormalize(model.reconstruct(standardize(raw(x, n)))),
      ]);
    }
    const vocab = o.lmHead.weight.length / d;
    for (const [name, width, features] of heads) {
      const head = new LinearHead(name, width, vocab, config.heads.dropout, {
        kind: "random",
        seed: o.seed,
      });
      const fit = await fitHead({
        config,
        reader,
        dir: `${o.dir}/${name}`,
        label: `${o.label} ${name}`,
        head,
        lr: config.heads.new_lr,
        seed: o.seed,
        features,
        resume: o.resume,
      });
      head.dispose();
      Object.assign(metrics, {
        [`${name}_ce`]: fit.validation.ce,
        [`${name}_ppl`]: fit.validation.perplexity,
        [`${name}_top1`]: fit.validation.top1,
      });
    }
    return { metrics, firing: firingHistogram(rec.firingFrequency), train };
  } finally {
    mean.dispose();
    std.dispose();
  }
}

/** Reconstruction metrics on the validation split (with latents when `withLatents`). */
function reconstructionMetrics(
  o: FitAutoencoderOptions,
  model: Autoencoder,
  standardize: (x: tf.Tensor2D) => tf.Tensor2D,
  withLatents = false,
) {
  const d = o.reader.d;
  const metrics = new ReconstructionMetrics(d, withLatents ? model.latents : 0);
  const batches = embeddingBatches(o.reader, "validation", {
    batchSize: o.batchSize,
    shuffle: false,
    seed: 0,
    epoch: 0,
    maxRows: o.config.train.max_val_tokens,
  });
  for (const b of batches) {
    tf.tidy(() => {
      const x = standardize(tf.tensor2d(b.x, [b.n, d]));
      const z = withLatents ? model.activations(x).dataSync() as Float32Array : undefined;
      metrics.add(x.dataSync() as Float32Array, model.reconstruct(x).dataSync() as Float32Array, z);
    });
  }
  return metrics.result();
}
