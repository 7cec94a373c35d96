/**
 * A sweep's plan: its trials sampled from `[sweep.space]`, each with its folder and a hash of
 * everything that determines its result, plus the pieces the runner and the report share.
 * @module
 */
import type { Config } from "../core/config_schema.ts";
import { sha256 } from "../core/hash.ts";
import { UserError } from "../core/user_error.ts";
import type { TrialResult } from "../eval/sweep_ranking.ts";
import { sampleTrials, spaceEntries, type Trial } from "../eval/sweep_sampling.ts";

/** A sweep's trials, sampled and hashed, before any runs. */
export interface SweepPlan {
  config: Config;
  /** `<run dir>/sweep`. */
  dir: string;
  seeds: number[];
  trials: Array<{ n: number; params: Trial; hash: string; dir: string }>;
}

/**
 * Sample the trials and check the inputs, before anything runs.
 *
 * @param config Resolved configuration.
 * @returns The plan.
 */
export async function planSweep(config: Config): Promise<SweepPlan> {
  const s = config.sweep;
  const embeddings = `${config.run.dir}/embeddings.h5`;
  await Deno.stat(embeddings).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    throw new UserError(
      `Cannot open "${embeddings}": it does not exist; run "deno task extract" first`,
    );
  });
  if (spaceEntries(s.space).length === 0) {
    throw new UserError(
      `Cannot sweep: [sweep.space] is empty; add keys such as ${
        s.stage === "baselines" ? "heads" : s.stage
      }.lr = { log_uniform = [1e-5, 1e-2] }`,
    );
  }
  if (s.seeds_per_trial > config.run.seeds.length) {
    throw new UserError(
      `Cannot use [sweep].seeds_per_trial = ${s.seeds_per_trial}: [run].seeds has only ${config.run.seeds.length} seeds`,
    );
  }
  const seeds = s.seeds_per_trial === 0
    ? config.run.seeds
    : config.run.seeds.slice(0, s.seeds_per_trial);
  // Everything that determines a trial's result: not the run folder, not the sweep's ranking.
  const { sweep: _, run: __, ...rest } = config;
  const dir = `${config.run.dir}/sweep`;
  const trials = await Promise.all(
    sampleTrials(s.space, s.n_trials, s.seed).map(async (params, n) => ({
      n,
      params,
      dir: `${dir}/trial-${n}`,
      hash: await sha256(JSON.stringify({ stage: s.stage, rest, seeds, params })),
    })),
  );
  return { config, dir, seeds, trials };
}

/** The result a trial left, or null. */
export async function readTrialResult(dir: string): Promise<TrialResult | null> {
  return await Deno.readTextFile(`${dir}/result.json`).then(JSON.parse).catch(() => null);
}

/**
 * The configuration of one trial (or of the best one): the base with sampled values, another
 * run folder and seeds, and no sweep section. Unvalidated: a bad combination shows on use.
 */
export function trialConfig(
  config: Config,
  params: Trial,
  run: Config["run"],
): Record<string, Record<string, unknown>> {
  const raw = structuredClone(config) as unknown as Record<string, Record<string, unknown>>;
  delete raw.sweep;
  raw.run = { ...run };
  for (const [key, value] of Object.entries(params)) {
    const dot = key.indexOf(".");
    raw[key.slice(0, dot)][key.slice(dot + 1)] = value;
  }
  return raw;
}
