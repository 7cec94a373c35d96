/**
 * Task `train-backbones`: train the offline default backbone (`tiny-gpt2`, Moby-Dick) and the
 * judge (`tiny-judge`, State of the Union) with the project's TensorFlow.js engine and export
 * them through the project's ONNX generator into `backbones-trained/<name>/`, a Hugging Face
 * folder that loads like any Hub export. The tokenizer and shape come from the recipe in
 * {@link OFFLINE_BACKBONES}; how to train is {@link BACKBONE_TRAINING} below.
 *
 * Top to bottom: settings → tokenizer and documents (the pipeline's own split, so its
 * validation chapters stay unseen) → model → AdamW + warm-up + cosine through the shared loop
 * (resumable from `backbones/train/<name>/`) → best-validation weights → export → samples.
 * Deterministic from the seed on a given machine and thread count.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { PreTrainedTokenizer } from "@huggingface/transformers";
import { OFFLINE_BACKBONES, OFFLINE_ROOT, recipeTokenizer } from "../backbone/offline_backbones.ts";
import { writeGpt2Folder } from "../backbone/gpt2_onnx.ts";
import { randomGpt2Weights } from "../backbone/gpt2_weights.ts";
import { selectBackend } from "../core/backends/select_backend.ts";
import { loadConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { sha256 } from "../core/hash.ts";
import { Rng } from "../core/rng.ts";
import { Adam } from "../core/train/adam.ts";
import { loadCheckpoint } from "../core/train/checkpoint.ts";
import { tfTrainable } from "../core/train/tf_trainable.ts";
import { trainLoop } from "../core/train/train_loop.ts";
import { runMain, UserError } from "../core/user_error.ts";
import { loadCorpus } from "../data/corpus.ts";
import { splitDocuments } from "../data/split.ts";
import { Gpt2Tf } from "../models/gpt2_tf.ts";
import { sampleGenerations, type Samples } from "./_backbone_samples.ts";

/** How one offline model is trained; its tokenizer, shape and init seed are its recipe's. */
export interface BackboneTraining {
  /** Tokens per training context: positions 0..context−1 are trained (≥ extract max_length). */
  context: number;
  /** Contexts per step. */
  batchSize: number;
  /** Optimiser steps in all. */
  steps: number;
  /** Peak learning rate (AdamW). */
  lr: number;
  /** Linear warm-up steps, then cosine decay to lr · minLrFraction. */
  warmupSteps: number;
  minLrFraction: number;
  /** Decoupled weight decay on every parameter. */
  weightDecay: number;
  /** Adam β₂ (0.99 as nanoGPT's small models: short runs, noisy gradients). */
  beta2: number;
  /** Dropout on embeddings and residual branches during training. */
  dropout: number;
  /** Held-out documents: the pipeline's `[data]` defaults, so its validation text stays unseen. */
  valFraction: number;
  splitSeed: number;
  /** Validation contexts (evenly spaced over the held-out text), scored every validateEvery. */
  valContexts: number;
  validateEvery: number;
  /** Seed of batch sampling and dropout. */
  seed: number;
  /** Prompts for the greedy and sampled generations printed at the end. */
  prompts: string[];
}

/** The models this task trains, by recipe name. Add a model = add a row (and a recipe). */
export const BACKBONE_TRAINING: Readonly<Record<string, BackboneTraining>> = Object.freeze({
  "tiny-gpt2": {
    context: 128,
    batchSize: 16,
    steps: 600,
    lr: 3e-3,
    warmupSteps: 60,
    minLrFraction: 0.1,
    weightDecay: 0.01,
    beta2: 0.99,
    dropout: 0,
    valFraction: 0.1,
    splitSeed: 0,
    valContexts: 192,
    validateEvery: 100,
    seed: 0,
    prompts: ["Call me Ishmael.", "The whale", "Captain Ahab"],
  },
  "tiny-judge": {
    context: 128,
    batchSize: 16,
    steps: 500,
    lr: 3e-3,
    warmupSteps: 50,
    minLrFraction: 0.1,
    weightDecay: 0.01,
    beta2: 0.99,
    dropout: 0,
    valFraction: 0.1,
    splitSeed: 0,
    valContexts: 192,
    validateEvery: 100,
    seed: 0,
    prompts: ["The state of the Union", "Congress", "Our economy"],
  },
});

/** Where trained models are exported (committed: see README "The offline backbones"). */
export const TRAINED_ROOT = "backbones-trained";
/** Checkpoints and best-validation copies (gitignored, under `backbones/`). */
export const TRAINING_WORK_ROOT = `${OFFLINE_ROOT}/train`;

/** What training one model gave. */
export interface TrainedBackbone {
  name: string;
  dir: string;
  /** True when the exported folder was already up to date. */
  skipped: boolean;
  steps: number;
  trainTokens: number;
  seconds: number;
  tokensPerSecond: number;
  /** Mean next-token CE (nats) on the held-out contexts, and exp of it. */
  valLoss: number;
  valPerplexity: number;
  /** log(vocab): the CE of a uniform guess. */
  uniformLoss: number;
  samples: Samples | null;
}

/** Options of {@link trainBackbone}. */
export interface TrainBackboneOptions {
  /** Export root (default {@link TRAINED_ROOT}). */
  root?: string;
  /** Checkpoint root (default {@link TRAINING_WORK_ROOT}). */
  workRoot?: string;
  /** Retrain even when the export is up to date. */
  force?: boolean;
  /** Replace settings (e.g. fewer steps for a quick check); changes the training hash. */
  overrides?: Partial<BackboneTraining>;
  /** Generate samples from the exported folder (loads it through transformers.js). */
  samples?: boolean;
}

type Batch = { ids: Int32Array; n: number };

/**
 * Train one model and export it.
 *
 * @param name A key of {@link BACKBONE_TRAINING} and {@link OFFLINE_BACKBONES}.
 * @param options Folders, force, overrides.
 * @returns What happened; the model is in `<root>/<name>`.
 */
export async function trainBackbone(
  name: string,
  options: TrainBackboneOptions = {},
): Promise<TrainedBackbone> {
  // 1. Settings
  const base = BACKBONE_TRAINING[name];
  if (!OFFLINE_BACKBONES[name] || !base) {
    throw new UserError(
      `Cannot train "${name}": expected one of ${Object.keys(BACKBONE_TRAINING).join(", ")}`,
    );
  }
  const s: BackboneTraining = { ...base, ...options.overrides };
  // The recipe without the folder its trained weights go to: what the weights depend on.
  const recipe = { ...OFFLINE_BACKBONES[name], trained: undefined };
  const shape = { ...recipe.shape, vocabSize: recipe.vocabSize };
  const dir = `${options.root ?? TRAINED_ROOT}/${name}`;
  const work = `${options.workRoot ?? TRAINING_WORK_ROOT}/${name}`;
  const trainingHash = await sha256(JSON.stringify({ recipe, training: s }));
  const uniformLoss = Math.log(shape.vocabSize);
  const existing = await Deno.readTextFile(`${dir}/config.json`).catch(() => null);
  const done = existing === null ? null : JSON.parse(existing).lcblm;
  if (!options.force && done?.training_hash === trainingHash) {
    return { name, dir, skipped: true, ...done.result, uniformLoss, samples: null };
  }

  // 2. Tokenizer (the recipe's) and documents
  const bpe = await recipeTokenizer(recipe);
  const tokenizer = new PreTrainedTokenizer(bpe.tokenizerJson, bpe.tokenizerConfig);
  const eos = bpe.eosTokenId;
  const { documents } = await loadCorpus({
    source: recipe.corpus,
    path: "",
    text_column: "text",
    label_column: "",
    val_fraction: s.valFraction,
    split_seed: s.splitSeed,
    max_documents: 0,
  });
  const split = splitDocuments(documents.length, s.valFraction, s.splitSeed);
  // Each document is preceded by <|endoftext|>, as the pipeline's windows start with BOS (= EOS).
  const stream = (indices: number[]) => {
    const parts = indices.map((i) => [
      eos,
      ...tokenizer.encode(documents[i].text, { add_special_tokens: false }),
    ]);
    return Int32Array.from(parts.flat());
  };
  const train = stream(split.train), val = stream(split.validation);
  const window = s.context + 1;
  console.error(
    `train-backbones ${name}: ${recipe.corpus}, ${split.train.length} train documents ` +
      `(${train.length} tokens), ${split.validation.length} held out (${val.length} tokens)`,
  );
  if (train.length < window * 2 || val.length < window) {
    throw new UserError(`Cannot train "${name}": its corpus is shorter than two contexts`);
  }

  // 3. Model, optimiser, held-out contexts
  const model = new Gpt2Tf(name, shape, randomGpt2Weights(shape, recipe.seed));
  const adam = new Adam(model.variables(), {
    lr: s.lr,
    beta2: s.beta2,
    weightDecay: s.weightDecay,
  });
  const valStarts = evenlySpaced(Math.floor(val.length / window), s.valContexts)
    .map((k) => k * window);
  const validate = () => meanLoss(model, val, valStarts, window, s.batchSize);

  // 4. Loop: random contexts; an "epoch" is as many steps as the train stream has contexts
  const stepsPerEpoch = Math.max(1, Math.floor(train.length / (s.batchSize * s.context)));
  const epochBatches = function* (epoch: number): Generator<Batch> {
    const rng = new Rng(s.seed * 1_000_003 + epoch);
    for (let k = 0; k < stepsPerEpoch; k++) {
      const ids = new Int32Array(s.batchSize * window);
      for (let b = 0; b < s.batchSize; b++) {
        const start = rng.int(train.length - window + 1);
        ids.set(train.subarray(start, start + window), b * window);
      }
      yield { ids, n: s.batchSize };
    }
  };
  await freshWorkDir(work, trainingHash);
  const report = progressReporter(name, s, window - 1);
  const trainable = tfTrainable<Batch>({
    variables: model.variables(),
    adam,
    step: (batch, seed) => {
      const ids = tf.tensor2d(batch.ids, [batch.n, window], "int32");
      const loss = model.trainStep(ids, adam, { dropout: s.dropout, seed });
      ids.dispose();
      report(loss, adam.iterations);
      return loss;
    },
    validate: () => {
      const value = validate();
      console.error(`train-backbones ${name}: validation loss ${value.toFixed(4)}`);
      return value;
    },
  }, s.seed);
  const started = performance.now();
  const result = await trainLoop(trainable, {
    dir: work,
    label: `train-backbones ${name}`,
    schedule: {
      lr: s.lr,
      warmupSteps: s.warmupSteps,
      totalSteps: s.steps,
      minLrFraction: s.minLrFraction,
    },
    epochBatches,
    validateEvery: s.validateEvery,
    checkpointEvery: s.validateEvery,
    patience: 0,
    resume: true,
    meta: { name, training_hash: trainingHash },
  });
  const seconds = (performance.now() - started) / 1000;

  // 5. Best-validation weights → export (config.json, which holds the hash, goes last)
  const best = await loadCheckpoint(`${work}/best`);
  if (best) trainable.loadTensors(best.tensors);
  const valLoss = validate();
  const trainTokens = result.steps * s.batchSize * s.context;
  const summary = {
    steps: result.steps,
    bestStep: result.best?.step ?? result.steps,
    trainTokens,
    seconds: Math.round(seconds),
    tokensPerSecond: Math.round(trainTokens / Math.max(seconds, 1e-9)),
    valLoss,
    valPerplexity: Math.exp(valLoss),
  };
  await Deno.remove(`${dir}/config.json`).catch(() => {});
  await writeGpt2Folder(dir, shape, await model.weights(), bpe, {
    name,
    recipe,
    recipe_hash: await sha256(JSON.stringify(recipe)),
    weights: `trained: deno task train-backbones (${recipe.corpus}, held-out val CE ${
      valLoss.toFixed(4)
    })`,
    training: s,
    training_hash: trainingHash,
    result: summary,
  });
  model.dispose();
  adam.dispose();

  // 6. Samples through transformers.js, from the exported folder
  const samples = options.samples === false ? null : await sampleGenerations(dir, s.prompts);
  return { name, dir, skipped: false, ...summary, uniformLoss, samples };
}

/** `count` indices spread evenly over [0, n) (all of them when n ≤ count). */
function evenlySpaced(n: number, count: number): number[] {
  if (n <= count) return Array.from({ length: n }, (_, i) => i);
  return Array.from({ length: count }, (_, i) => Math.floor(i * n / count));
}

/** Mean next-token CE over the contexts starting at `starts`, in batches (no dropout). */
function meanLoss(
  model: Gpt2Tf,
  tokens: Int32Array,
  starts: number[],
  window: number,
  batchSize: number,
): number {
  let sum = 0;
  for (let i = 0; i < starts.length; i += batchSize) {
    const chunk = starts.slice(i, i + batchSize);
    const ids = new Int32Array(chunk.length * window);
    chunk.forEach((start, b) => ids.set(tokens.subarray(start, start + window), b * window));
    sum += tf.tidy(() =>
      model.loss(tf.tensor2d(ids, [chunk.length, window], "int32")).dataSync()[0]
    ) * chunk.length;
  }
  return sum / starts.length;
}

/** Removes checkpoints made with other settings: resuming them would mix two runs. */
async function freshWorkDir(work: string, trainingHash: string): Promise<void> {
  const stamp = `${work}/training_hash.txt`;
  const previous = await Deno.readTextFile(stamp).catch(() => null);
  if (previous === trainingHash) return;
  await Deno.remove(work, { recursive: true }).catch(() => {});
  await Deno.mkdir(work, { recursive: true });
  await Deno.writeTextFile(stamp, trainingHash);
}

/** A per-step callback that prints loss (mean of the last 25 steps), tokens/s and ETA. */
function progressReporter(
  name: string,
  s: BackboneTraining,
  tokensPerContext: number,
): (loss: number, step: number) => void {
  const every = 25;
  let recent = 0, last = performance.now();
  return (loss, step) => {
    recent += loss;
    if (step % every !== 0) return;
    const now = performance.now();
    const rate = every * s.batchSize * tokensPerContext / ((now - last) / 1000);
    const eta = (s.steps - step) * (now - last) / every / 1000;
    console.error(
      `train-backbones ${name}: step ${step} loss ${(recent / every).toFixed(3)}  ` +
        `${rate.toFixed(0)} tok/s  ETA ${Math.floor(eta / 60)}:${
          String(Math.round(eta % 60)).padStart(2, "0")
        }`,
    );
    recent = 0;
    last = now;
  };
}

/**
 * Train every model of {@link BACKBONE_TRAINING} on the configured backend.
 *
 * @param config Resolved configuration (`[train]` picks the backend).
 * @param options Export/checkpoint roots, force.
 * @returns One summary per model.
 */
export async function trainBackbones(
  config: Config,
  options: TrainBackboneOptions = {},
): Promise<TrainedBackbone[]> {
  await selectBackend(config.train, (line) => console.error(line));
  const out = [];
  for (const name of Object.keys(BACKBONE_TRAINING)) out.push(await trainBackbone(name, options));
  return out;
}

if (import.meta.main) {
  await runMain(async (args) => {
    const { config, flags } = await loadConfig(args, ["force"]);
    for (const r of await trainBackbones(config, { force: flags.force === true })) {
      const what = r.skipped ? "up to date" : `trained in ${r.seconds} s`;
      console.log(
        `train-backbones: ${r.dir} ${what}: ${r.steps} steps, ${r.trainTokens} tokens, ` +
          `${r.tokensPerSecond} tok/s; held-out CE ${r.valLoss.toFixed(3)} nats, perplexity ` +
          `${r.valPerplexity.toFixed(1)} (uniform: ${r.uniformLoss.toFixed(3)} nats, ${
            Math.exp(r.uniformLoss).toFixed(0)
          })`,
      );
      for (const [kind, lines] of Object.entries(r.samples ?? {})) {
        for (const line of lines) console.log(`  ${kind}: ${JSON.stringify(line)}`);
      }
    }
  });
}
