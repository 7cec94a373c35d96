/**
 * The training-loop settings every stage derives the same way from `[train]`: warm-up + cosine
 * schedule over `epochs` passes, shuffled batches of the training split, validation cadence,
 * checkpoints and patience.
 * @module
 */
import type { Config } from "../core/config_schema.ts";
import type { EmbeddingsReader } from "../core/embeddings_store.ts";
import { embeddingBatches } from "../core/train/embedding_batches.ts";
import type { Standardizer } from "../core/train/standardizer.ts";
import type { TrainLoopOptions } from "../core/train/train_loop.ts";

/** What varies between fits. */
export interface FitSettings {
  dir: string;
  label: string;
  lr: number;
  batchSize: number;
  epochs: number;
  seed: number;
  resume: boolean;
  /** Standardise batches (autoencoders) or feed raw embeddings (heads). */
  standardizer?: Standardizer;
}

/**
 * Loop options for a fit over the training split.
 *
 * @param config Resolved configuration (its `[train]` section).
 * @param reader Embeddings.
 * @param s The fit's own settings.
 * @returns Options for `trainLoop`.
 */
export function loopOptions(
  config: Config,
  reader: EmbeddingsReader,
  s: FitSettings,
): TrainLoopOptions {
  const stepsPerEpoch = Math.ceil(reader.rows("train") / s.batchSize);
  const totalSteps = Math.max(1, Math.round(s.epochs * stepsPerEpoch));
  return {
    dir: s.dir,
    label: s.label,
    schedule: {
      lr: s.lr,
      warmupSteps: Math.round(config.train.warmup_fraction * totalSteps),
      totalSteps,
      minLrFraction: config.train.min_lr_fraction,
    },
    epochBatches: (epoch) =>
      embeddingBatches(reader, "train", {
        batchSize: s.batchSize,
        shuffle: true,
        seed: s.seed,
        epoch,
        standardizer: s.standardizer,
      }),
    validateEvery: Math.max(1, Math.floor(stepsPerEpoch / config.train.validations_per_epoch)),
    checkpointEvery: config.train.checkpoint_every,
    patience: config.train.patience,
    resume: s.resume,
  };
}
