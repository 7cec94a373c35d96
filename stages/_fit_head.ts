/**
 * Train one next-token head on features computed from stored embeddings, keep the
 * best-validation weights, and score them (validation CE, perplexity, top-1).
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Config } from "../core/config_schema.ts";
import type { EmbeddingsReader } from "../core/embeddings_store.ts";
import { atomicWrite } from "../core/atomic_write.ts";
import { Adam } from "../core/train/adam.ts";
import { encodeSafetensors } from "../core/train/safetensors.ts";
import { loadCheckpoint } from "../core/train/checkpoint.ts";
import { embeddingBatches } from "../core/train/embedding_batches.ts";
import { tfTrainable } from "../core/train/tf_trainable.ts";
import { trainLoop, type TrainResult } from "../core/train/train_loop.ts";
import { loopOptions } from "./_loop_options.ts";
import { NextTokenMetrics, type NextTokenResult } from "../eval/next_token_metrics.ts";
import type { LinearHead } from "../models/linear_head.ts";

/** Maps a batch of raw embeddings [n, d] to head inputs [n, inputs]. */
export type Features = (x: Float32Array, n: number) => tf.Tensor2D;

/** What to fit. */
export interface FitHeadOptions {
  config: Config;
  reader: EmbeddingsReader;
  dir: string;
  label: string;
  head: LinearHead;
  lr: number;
  seed: number;
  features: Features;
  resume: boolean;
}

/**
 * Score a head on the validation split.
 *
 * @param head The head.
 * @param reader Embeddings.
 * @param features Head inputs from embeddings.
 * @param config For batch size and the validation-token limit.
 */
export function scoreHead(
  head: LinearHead,
  reader: EmbeddingsReader,
  features: Features,
  config: Config,
): NextTokenResult {
  const metrics = new NextTokenMetrics(head.vocab);
  const batches = embeddingBatches(reader, "validation", {
    batchSize: config.heads.batch_size,
    shuffle: false,
    seed: 0,
    epoch: 0,
    maxRows: config.train.max_val_tokens,
  });
  for (const b of batches) {
    const logits = tf.tidy(() => head.logits(features(b.x, b.n)));
    metrics.add(logits.dataSync() as Float32Array, b.targets);
    logits.dispose();
  }
  return metrics.result();
}

/**
 * Train the head, restore its best-validation weights, save them as `<dir>/head.safetensors`
 * and score them.
 *
 * @param o What to fit.
 * @returns Validation metrics of the best weights and the training history.
 */
export async function fitHead(
  o: FitHeadOptions,
): Promise<{ validation: NextTokenResult; train: TrainResult }> {
  const { config, reader, head } = o;
  const h = config.heads;
  const adam = new Adam(head.variables(), { lr: o.lr, weightDecay: h.weight_decay });
  const trainable = tfTrainable({
    variables: head.variables(),
    adam,
    step: (b: { x: Float32Array; targets: Int32Array; n: number }, seed) =>
      tf.tidy(() => head.trainStep(o.features(b.x, b.n), b.targets, adam, seed)),
    validate: () => scoreHead(head, reader, o.features, config).ce,
  }, o.seed);
  const train = await trainLoop(
    trainable,
    loopOptions(config, reader, { ...o, batchSize: h.batch_size, epochs: h.epochs }),
  );
  const best = await loadCheckpoint(`${o.dir}/best`);
  if (best) trainable.loadTensors(best.tensors);
  adam.dispose();
  await atomicWrite(`${o.dir}/head.safetensors`, encodeSafetensors(head.toTensors()));
  return { validation: scoreHead(head, reader, o.features, config), train };
}
