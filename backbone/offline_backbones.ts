/**
 * The offline models the project builds itself (no model can be downloaded here): a table of
 * recipes, each a tokenizer trained on a shipped corpus plus a seeded GPT-2-style ONNX graph.
 * Add a model = add a row.
 * @module
 */
import { atomicWrite } from "../core/atomic_write.ts";
import type { Config } from "../core/config_schema.ts";
import { sha256 } from "../core/hash.ts";
import { UserError } from "../core/user_error.ts";
import { loadCorpus } from "../data/corpus.ts";
import { type ByteLevelBpe, trainByteLevelBpe } from "./bpe.ts";
import { writeGpt2Folder } from "./gpt2_onnx.ts";
import { type Gpt2Shape, randomGpt2Weights } from "./gpt2_weights.ts";

/** How to build one offline model. */
export interface OfflineRecipe {
  /** Shipped corpus the tokenizer is trained on. */
  corpus: Config["data"]["source"] & ("moby-dick" | "sotu");
  vocabSize: number;
  shape: Omit<Gpt2Shape, "vocabSize">;
  seed: number;
  purpose: string;
  /**
   * Committed folder with this recipe's trained weights (`deno task train-backbones`), copied
   * into place instead of building random ones; absent: random GPT-2 initialisation.
   */
  trained?: string;
}

/** The offline models, by folder name under `backbones/`. */
export const OFFLINE_BACKBONES: Readonly<Record<string, OfflineRecipe>> = Object
  .freeze({
    "tiny-gpt2-test": {
      corpus: "moby-dick",
      vocabSize: 512,
      shape: { nPositions: 128, nEmbd: 32, nLayer: 2, nHead: 2 },
      seed: 1,
      purpose: "fast tests (< 1 MB)",
    },
    "tiny-gpt2": {
      corpus: "moby-dick",
      vocabSize: 4096,
      shape: { nPositions: 256, nEmbd: 128, nLayer: 4, nHead: 4 },
      seed: 2,
      purpose: "the offline default backbone",
      trained: "backbones-trained/tiny-gpt2",
    },
    "tiny-judge": {
      corpus: "sotu",
      vocabSize: 4096,
      shape: { nPositions: 256, nEmbd: 96, nLayer: 3, nHead: 4 },
      seed: 3,
      purpose: "the offline judge LM: its own tokenizer and corpus, independent seed",
      trained: "backbones-trained/tiny-judge",
    },
  });

/** Folder that `deno task backbones` builds offline models into. */
export const OFFLINE_ROOT = "backbones";

/**
 * The recipe name when `spec` names an offline model folder (`backbones/<recipe>`), else null.
 *
 * @param spec A model spec from `[backbone]`.
 * @example
 * ```ts
 * import { strictEqual } from "node:assert";
 * strictEqual(offlineRecipeName("backbones/tiny-gpt2"), "tiny-gpt2");
 * strictEqual(offlineRecipeName("Xenova/gpt2"), null);
 * ```
 */
export function offlineRecipeName(spec: string): string | null {
  const name = spec.replace(/\/+$/, "").slice(OFFLINE_ROOT.length + 1);
  return spec.startsWith(`${OFFLINE_ROOT}/`) && Object.hasOwn(OFFLINE_BACKBONES, name)
    ? name
    : null;
}

/**
 * Build one offline model into `dir` (skipped when `dir` already holds the same recipe): a copy
 * of its committed trained weights when the recipe names them, else a seeded random graph.
 *
 * @param name A key of {@link OFFLINE_BACKBONES}.
 * @param dir Output folder.
 * @returns True when the model was (re)built.
 */
export async function buildOfflineBackbone(
  name: string,
  dir: string,
): Promise<boolean> {
  const recipe = OFFLINE_BACKBONES[name];
  if (!recipe) {
    throw new RangeError(
      `Unknown offline model "${name}": expected one of ${
        Object.keys(OFFLINE_BACKBONES).join(", ")
      }`,
    );
  }
  if (recipe.trained) return await copyTrainedBackbone(recipe.trained, dir);
  const recipeHash = await sha256(JSON.stringify(recipe));
  const existing = await Deno.readTextFile(`${dir}/config.json`).catch(() => null);
  if (
    existing !== null && JSON.parse(existing).lcblm?.recipe_hash === recipeHash
  ) return false;
  const tokenizer = await recipeTokenizer(recipe);
  const shape = { ...recipe.shape, vocabSize: recipe.vocabSize };
  await writeGpt2Folder(
    dir,
    shape,
    randomGpt2Weights(shape, recipe.seed),
    tokenizer,
    {
      name,
      recipe,
      recipe_hash: recipeHash,
      weights: "random (GPT-2 init)",
    },
  );
  return true;
}

/**
 * The recipe's byte-level BPE tokenizer, trained on its whole shipped corpus (deterministic).
 *
 * @param recipe An offline recipe.
 * @returns The tokenizer files and special ids.
 */
export async function recipeTokenizer(recipe: OfflineRecipe): Promise<ByteLevelBpe> {
  const { documents } = await loadCorpus({
    source: recipe.corpus,
    path: "",
    text_column: "text",
    label_column: "",
    val_fraction: 0.1,
    split_seed: 0,
    max_documents: 0,
  });
  return trainByteLevelBpe(documents.map((d) => d.text), { vocabSize: recipe.vocabSize });
}

/** The files of a model folder, `config.json` last: it marks a complete copy. */
const MODEL_FILES = [
  "onnx/model.onnx",
  "tokenizer.json",
  "tokenizer_config.json",
  "generation_config.json",
  "config.json",
];

/** Copy a committed trained model into `dir` unless `dir` already holds the same one. */
async function copyTrainedBackbone(source: string, dir: string): Promise<boolean> {
  const config = await Deno.readTextFile(`${source}/config.json`).catch(() => null);
  if (config === null) {
    throw new UserError(
      `Cannot build "${dir}": its trained weights "${source}" are missing; restore them from git ` +
        `or run "deno task train-backbones" (about 30 min on 2 cores)`,
    );
  }
  const existing = await Deno.readTextFile(`${dir}/config.json`).catch(() => null);
  if (existing === config && await Deno.stat(`${dir}/onnx/model.onnx`).catch(() => null)) {
    return false;
  }
  await Deno.remove(`${dir}/config.json`).catch(() => {});
  for (const file of MODEL_FILES) {
    await atomicWrite(`${dir}/${file}`, await Deno.readFile(`${source}/${file}`));
  }
  return true;
}
