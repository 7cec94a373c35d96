/**
 * Stage `synthetic` (SPEC section 7): synthetic ground truth. For every reference tier of
 * {@linkcode SYNTHETIC_TIERS}, generate data from known unit atoms, train a TopK SAE and an LCBLM
 * on it directly from memory (no HDF5) once per `[run].seeds`, and score how well each model's
 * directions recover the atoms (Hungarian matching by cosine): matched fraction and mean matched
 * cosine, printed as mean ± 95% CI over seeds and saved per seed in
 * `<run dir>/synthetic/results.arrow`.
 *
 * Seed s draws both the data (atoms and samples, `generateSyntheticDictionary({...tier, seed: s})`)
 * and the model initialisation, so the CI covers both.
 *
 * Model sizes per tier (K atoms in R^D, n̄ = expected active atoms per sample: 1 for the easy
 * tier, K·p ≈ 3 for medium/hard):
 * - TopK SAE: latents = K rounded up to a multiple of D (expansion = ⌈K/D⌉; K = 64, D = 32 gives
 *   exactly 64), k = round(n̄) (1 easy, 3 medium/hard), AuxK with k_aux = latents/2 and a dead
 *   window of 20 batches, bias from the geometric median, lr 1e-2 (the
 *   tests/synthetic_test.ts setting), batch 256.
 * - LCBLM: K concepts = atoms, E = 4, linear encoder, cosine similarity, stacked decoder,
 *   prior π = n̄/K (the true firing rate; for the easy tier K·π = 1 is below the model's
 *   advisory range and it warns once per model), other weights at their defaults, lr 3e-3,
 *   batch 256. Directions are `conceptDirections()` (B_k·h_k).
 *
 * Both use the project's Adam with a constant learning rate for `--steps` steps (default 1500,
 * ≈ 24 epochs of the 16,000 training samples): enough for the SAE to reach the reference range
 * on the easy tier while keeping the full default run (7 tiers × 2 models × 3 seeds) around
 * ten minutes on 2 CPU cores.
 *
 * Flags: `--tiers=name,name` (default: all), `--steps=N`, plus the usual `--config` and
 * `--section.key=value` overrides (e.g. `--run.seeds=[0,1]`).
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { type Row, writeArrowTable } from "../core/arrow_table.ts";
import { atomicWrite } from "../core/atomic_write.ts";
import { configToToml, loadConfig } from "../core/config.ts";
import { type Config, LcblmSchema, SaeSchema } from "../core/config_schema.ts";
import { selectBackend } from "../core/backends/select_backend.ts";
import { Adam } from "../core/train/adam.ts";
import { runMain, UserError } from "../core/user_error.ts";
import { formatSummary, seedSummary } from "../eval/seed_stats.ts";
import {
  atomRecovery,
  generateSyntheticDictionary,
  SYNTHETIC_TIERS,
  type SyntheticDictionary,
  type SyntheticTier,
} from "../eval/synthetic_dictionary.ts";
import { Lcblm } from "../models/lcblm.ts";
import { Sae } from "../models/sae.ts";

/** The models this stage trains, in order. */
export const SYNTHETIC_MODELS = ["topk_sae", "lcblm"] as const;
/** One of {@linkcode SYNTHETIC_MODELS}. */
export type SyntheticModel = (typeof SYNTHETIC_MODELS)[number];

/** Default training steps per model and seed. */
export const DEFAULT_STEPS = 1500;
const BATCH = 256;

/** What to run. */
export interface SyntheticOptions {
  /** Tiers to run (default: all of {@linkcode SYNTHETIC_TIERS}). */
  tiers?: readonly SyntheticTier[];
  /** Adam steps per model and seed (default {@linkcode DEFAULT_STEPS}). */
  steps?: number;
  /** Seeds (default `[run].seeds`). */
  seeds?: readonly number[];
  /** Models (default both). */
  models?: readonly SyntheticModel[];
  /** Where progress and summary lines go (default console.log). */
  log?: (line: string) => void;
  /** Write `<run dir>/synthetic/results.arrow` (default true). */
  save?: boolean;
}

/** One result row: a tier, model and seed. */
export interface SyntheticRow extends Row {
  tier: string;
  model: SyntheticModel;
  seed: number;
  matched: number;
  cosine: number;
  threshold: number;
  latents: number;
  steps: number;
  final_mse: number;
  seconds: number;
}

/** Expected number of active atoms per sample (ignoring the redraw of empty samples). */
function expectedActive(tier: SyntheticTier): number {
  return "exactly" in tier.active ? tier.active.exactly : tier.atoms * tier.active.probability;
}

/** The TopK SAE settings for a tier (see the module doc). */
export function saeSettings(tier: SyntheticTier): Config["sae"] {
  const expansion = Math.ceil(tier.atoms / tier.dim);
  const latents = expansion * tier.dim;
  return SaeSchema.parse({
    expansion,
    k: Math.max(1, Math.round(expectedActive(tier))),
    k_aux: Math.max(1, Math.floor(latents / 2)),
    dead_tokens: 20 * BATCH,
    lr: 1e-2,
    batch_size: BATCH,
  });
}

/** The LCBLM settings for a tier (see the module doc). */
export function lcblmSettings(tier: SyntheticTier): Config["lcblm"] {
  return LcblmSchema.parse({
    concepts: tier.atoms,
    embedding_dim: 4,
    encoder: "linear",
    prior: Math.min(0.5, expectedActive(tier) / tier.atoms),
    lr: 3e-3,
    batch_size: BATCH,
  });
}

/** Trains one model on `data` for `steps` steps; returns its directions and final MSE. */
function train(
  model: SyntheticModel,
  tier: SyntheticTier,
  data: SyntheticDictionary,
  seed: number,
  steps: number,
): { directions: Float32Array; latents: number; mse: number } {
  const d = tier.dim;
  const x = tf.tensor2d(data.train, [data.nTrain, d]);
  const batches = Math.floor(data.nTrain / BATCH);
  const batch = (step: number) =>
    tf.slice(x, [(step % batches) * BATCH, 0], [BATCH, d]) as tf.Tensor2D;
  let mse = NaN;
  try {
    if (model === "topk_sae") {
      const cfg = saeSettings(tier);
      const sae = new Sae(d, cfg, seed, data.train);
      const adam = new Adam(sae.variables(), { lr: cfg.lr });
      try {
        for (let step = 0; step < steps; step++) {
          const b = batch(step);
          mse = sae.trainStep(b, adam).mse;
          b.dispose();
        }
        return { directions: sae.featureDirections(), latents: sae.m, mse };
      } finally {
        adam.dispose();
        sae.dispose();
      }
    }
    const cfg = lcblmSettings(tier);
    const lcblm = new Lcblm(d, cfg, seed);
    const adam = new Adam(lcblm.variables(), { lr: cfg.lr });
    try {
      for (let step = 0; step < steps; step++) {
        const b = batch(step);
        mse = lcblm.trainStep(b, adam, seed * 1_000_000 + step).mse;
        b.dispose();
      }
      return { directions: lcblm.conceptDirections().slice(), latents: lcblm.k, mse };
    } finally {
      adam.dispose();
      lcblm.dispose();
    }
  } finally {
    x.dispose();
  }
}

/**
 * Runs the benchmark on the active tfjs backend.
 *
 * @param config Resolved configuration (`[run].dir`, `[run].seeds`).
 * @param options Tiers, steps, seeds, models.
 * @returns One row per tier × model × seed (also saved unless `save` is false).
 */
export async function runSynthetic(
  config: Config,
  options: SyntheticOptions = {},
): Promise<SyntheticRow[]> {
  const tiers = options.tiers ?? SYNTHETIC_TIERS;
  const steps = options.steps ?? DEFAULT_STEPS;
  const seeds = options.seeds ?? config.run.seeds;
  const models = options.models ?? SYNTHETIC_MODELS;
  const log = options.log ?? console.log;
  const rows: SyntheticRow[] = [];
  for (const tier of tiers) {
    const data = seeds.map((seed) => generateSyntheticDictionary({ ...tier, seed }));
    for (const model of models) {
      const mine: SyntheticRow[] = [];
      for (const [i, seed] of seeds.entries()) {
        const t0 = performance.now();
        const r = train(model, tier, data[i], seed, steps);
        const rec = atomRecovery(r.directions, data[i].atoms, tier.dim);
        mine.push({
          tier: tier.name,
          model,
          seed,
          matched: rec.matchedFraction,
          cosine: rec.meanMatchedCosine,
          threshold: rec.threshold,
          latents: r.latents,
          steps,
          final_mse: r.mse,
          seconds: (performance.now() - t0) / 1000,
        });
      }
      const matched = formatSummary(seedSummary(mine.map((r) => r.matched)), 3);
      const cosine = formatSummary(seedSummary(mine.map((r) => r.cosine)), 3);
      const secs = mine.reduce((s, r) => s + r.seconds, 0);
      log(
        `tier=${tier.name} model=${model} matched=${matched} cosine=${cosine} ` +
          `(${seeds.length} seeds, ${steps} steps, ${secs.toFixed(1)}s)`,
      );
      rows.push(...mine);
    }
  }
  if (options.save ?? true) {
    const dir = `${config.run.dir}/synthetic`;
    await Deno.mkdir(dir, { recursive: true });
    await writeArrowTable(`${dir}/results.arrow`, rows);
    await atomicWrite(`${dir}/config.toml`, new TextEncoder().encode(configToToml(config)));
    log(`saved ${dir}/results.arrow (${rows.length} rows)`);
  }
  return rows;
}

/**
 * Parses `--tiers` and `--steps` (values of loadConfig's stage flags).
 *
 * @param flags Stage flags from {@linkcode loadConfig}.
 * @returns The selected tiers and step count.
 * @throws {UserError} On an unknown tier or a bad step count.
 */
export function parseSyntheticFlags(
  flags: Record<string, string | boolean>,
): { tiers: readonly SyntheticTier[]; steps: number } {
  let tiers: readonly SyntheticTier[] = SYNTHETIC_TIERS;
  if (flags.tiers !== undefined) {
    if (typeof flags.tiers !== "string" || flags.tiers === "") {
      throw new UserError(`Flag --tiers needs a value: write --tiers=name,name`);
    }
    const names = flags.tiers.split(",").map((s) => s.trim()).filter((s) => s !== "");
    tiers = names.map((name) => {
      const t = SYNTHETIC_TIERS.find((t) => t.name === name);
      if (!t) {
        throw new UserError(
          `Unknown tier "${name}": expected one of ${
            SYNTHETIC_TIERS.map((t) => t.name).join(", ")
          }`,
        );
      }
      return t;
    });
  }
  let steps = DEFAULT_STEPS;
  if (flags.steps !== undefined) {
    steps = Number(flags.steps);
    if (typeof flags.steps !== "string" || !Number.isInteger(steps) || steps < 1) {
      throw new UserError(`Flag --steps expects a positive integer, got "${flags.steps}"`);
    }
  }
  return { tiers, steps };
}

/**
 * The stage's entry point.
 *
 * @param args Command-line arguments.
 * @returns The result rows.
 */
export async function main(args: string[]): Promise<SyntheticRow[]> {
  const { config, flags } = await loadConfig(args, ["tiers", "steps"]);
  const { tiers, steps } = parseSyntheticFlags(flags);
  await selectBackend(config.train);
  return await runSynthetic(config, { tiers, steps });
}

if (import.meta.main) await runMain(main);
