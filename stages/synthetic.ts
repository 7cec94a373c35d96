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
 * Inputs: each dataset is multiplied by one scalar that brings its training split to unit mean
 * per-feature variance (the `sae` and `lcblm` stages train on standardised embeddings; one
 * scalar keeps every direction, so recovery is scored against the atoms unchanged). Raw, the
 * easy tier's per-feature variance is ≈ 1/D ≈ 0.03, which makes the LCBLM's MSE term 30× weaker
 * against its KL terms than on standardised data. The SAE's loss is scale-equivariant; it
 * recovers every atom either way.
 *
 * Model sizes per tier (K atoms in R^D, n̄ = expected active atoms per sample: 1 for the easy
 * tier, K·p ≈ 3 for medium/hard):
 * - TopK SAE: latents = K rounded up to a multiple of D (expansion = ⌈K/D⌉; K = 64, D = 32 gives
 *   exactly 64), k = round(n̄) (1 easy, 3 medium/hard), AuxK with k_aux = latents/2 and a dead
 *   window of 20 batches, bias from the geometric median, lr 1e-2 (the
 *   tests/synthetic_test.ts setting), batch 256, 1500 steps (≈ 24 epochs of the 16,000
 *   training samples).
 * - LCBLM: K concepts = atoms, E = 4, linear encoder, cosine similarity, stacked decoder,
 *   prior π = n̄/K (the true firing rate; for the easy tier K·π = 1 is below the model's
 *   advisory range and it warns once per model), lr 3e-3, batch 256, 2500 steps (≈ 40 epochs).
 *   Directions are `conceptDirections()` (B_k·h_k). Three settings differ from the defaults,
 *   because at the defaults the regularisers swamp the reconstruction (MSE is a mean over the
 *   d = 32 features, CondKL/SparsityKL/Entropy are sums over the K concepts): the model
 *   reconstructs almost nothing (FVU ≈ 0.9) and CondKL shrinks μ and h, which the decoder
 *   undoes, so the concept directions B_k·h_k stay loose (matched 0.14–0.55):
 *   - γ = 0.01, β = 0.125 (= 4/d: the default β against the squared error summed over d): CondKL
 *     still ties μ_k to h_k when the gate is open, so B_k·h_k is what the concept writes, but no
 *     longer outweighs the reconstruction. γ from {0.003, 0.01, 0.03, 0.1}; β = 0.04 lets
 *     concepts fire on several atoms, 0.125–0.25 do equally well.
 *   - λ_ent = 0: the entropy term saturates the gates before the concepts have found their atoms
 *     and freezes wrong assignments (λ_ent = 0.01 already costs ≈ 0.05 matched); the gates still
 *     end near 0/1 (≈ 1.5% of α in (0.1, 0.9)) as the learned logit scale s grows to 30–70.
 *   - σ₀ = 0.3 (z_noise): more noise on μ in training; an empirical choice (easy tier 0.67 at
 *     σ₀ = 0.1, 0.81 at 0.3; medium σ = 0.05 0.87 either way).
 *   Dead-concept resampling is off: under these settings SparsityKL keeps every concept firing
 *   (none falls below 0.1% of samples), so resampling every 5 epochs changed nothing.
 *   The weights were chosen on seeds 0–1 of the medium σ = 0.05 and easy tiers and checked on
 *   every tier and on seeds 10–12.
 *
 * Both use the project's Adam with a constant learning rate (a cosine decay did no better). The
 * LCBLM gets the larger share of steps: its easy tier still gains from 1500 to 2500 steps
 * (0.73 → 0.80), the SAE is at 1.00 by 1500. The full default run (7 tiers × 2 models × 3
 * seeds) takes about 10 minutes on 2 CPU cores, almost all of it LCBLM training.
 *
 * Flags: `--tiers=name,name` (default: all), `--steps=N`, plus the usual `--config` and
 * `--section.key=value` overrides (e.g. `--run.seeds=[0,1]`).
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { type Row, writeArrowTable } from "../core/arrow_table.ts";
import { atomicWrite } from "../core/atomic_write.ts";
import { configToToml, loadConfig } from "../core/config.ts";
import { FeatureMoments } from "../core/feature_moments.ts";
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

/** Default training steps per model and seed (`--steps` sets both). */
export const DEFAULT_STEPS: Readonly<Record<SyntheticModel, number>> = Object.freeze({
  topk_sae: 1500,
  lcblm: 2500,
});
const BATCH = 256;

/** What to run. */
export interface SyntheticOptions {
  /** Tiers to run (default: all of {@linkcode SYNTHETIC_TIERS}). */
  tiers?: readonly SyntheticTier[];
  /** Adam steps per model and seed, for both models (default {@linkcode DEFAULT_STEPS}). */
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
  /** MSE of the last training batch, in the scaled units (see the module doc). */
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
    z_noise: 0.3,
    gamma: 0.01,
    beta: 0.125,
    entropy: 0,
    lr: 3e-3,
    batch_size: BATCH,
  });
}

/**
 * The factor that brings a dataset to unit mean per-feature variance: one scalar, so every
 * direction, and with it atom recovery, is unchanged.
 *
 * @param x Samples [n, d], row-major.
 * @param d Width.
 * @returns 1 / √(mean over features of the variance).
 */
export function unitVarianceScale(x: Float32Array, d: number): number {
  const moments = new FeatureMoments(d);
  moments.add(x);
  return 1 / Math.sqrt(moments.totalSquaredDeviation() / (moments.n * d));
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
  const scale = unitVarianceScale(data.train, d);
  const x = tf.tidy(() => tf.mul(tf.tensor2d(data.train, [data.nTrain, d]), scale)) as tf.Tensor2D;
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
  const seeds = options.seeds ?? config.run.seeds;
  const models = options.models ?? SYNTHETIC_MODELS;
  const log = options.log ?? console.log;
  const rows: SyntheticRow[] = [];
  for (const tier of tiers) {
    const data = seeds.map((seed) => generateSyntheticDictionary({ ...tier, seed }));
    for (const model of models) {
      const mine: SyntheticRow[] = [];
      const steps = options.steps ?? DEFAULT_STEPS[model];
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
 * @returns The selected tiers, and the step count if given.
 * @throws {UserError} On an unknown tier or a bad step count.
 */
export function parseSyntheticFlags(
  flags: Record<string, string | boolean>,
): { tiers: readonly SyntheticTier[]; steps?: number } {
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
  if (flags.steps === undefined) return { tiers };
  const steps = Number(flags.steps);
  if (typeof flags.steps !== "string" || !Number.isInteger(steps) || steps < 1) {
    throw new UserError(`Flag --steps expects a positive integer, got "${flags.steps}"`);
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
