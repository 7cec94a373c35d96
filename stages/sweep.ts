/**
 * Task `sweep`: random search over `[sweep.space]` for one training stage. Each trial gets its
 * own run folder `<run dir>/sweep/trial-<n>/` (its resolved `config.toml`, the run's
 * embeddings.h5 hard-linked, the stage's usual artifacts) and leaves a `result.json`; the
 * report (results.arrow, leaderboard, best.toml, pareto.svg) is rebuilt from those files.
 *
 * Resumable: a trial with a result for the same settings is never run again (a failed one
 * included: its reason is the result); an interrupted one resumes from its checkpoints.
 * `--workers N` runs N worker processes that claim trials with create-only claim files, so no
 * two run the same trial and none writes a shared file.
 * @module
 */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Row } from "../core/arrow_table.ts";
import { atomicWrite } from "../core/atomic_write.ts";
import { configToToml, loadConfig, validateConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { runMain, UserError } from "../core/user_error.ts";
import type { TrialResult } from "../eval/sweep_ranking.ts";
import { autoencoderStage } from "./_autoencoder_stage.ts";
import { planSweep, readTrialResult, type SweepPlan, trialConfig } from "./_sweep_plan.ts";
import { type SweepReport, sweepReport } from "./_sweep_report.ts";
import { baselines } from "./baselines.ts";
import { lcblmFamily } from "./lcblm.ts";
import { saeFamily } from "./sae.ts";

/** Runs one trial's stage on the trial's resolved configuration; returns the stage's rows. */
export type TrialRunner = (config: Config) => Promise<Row[]>;

/** The stage behind each `[sweep].stage` (a new sweepable stage is a new row). */
const STAGE_RUNNERS: Readonly<Record<Config["sweep"]["stage"], TrialRunner>> = Object
  .freeze({
    sae: async (c: Config) => (await autoencoderStage(c, saeFamily(c))).rows,
    lcblm: async (c: Config) => (await autoencoderStage(c, lcblmFamily(c))).rows,
    baselines: async (c: Config) => (await baselines(c)).rows,
  });

/** Sweep options (all optional). */
export interface SweepOptions {
  /** Runs a trial (default: the configured stage); tests pass a stand-in. */
  runner?: TrialRunner;
  /** Worker processes (default 1: trials run in this process). */
  workers?: number;
  /** Command line the workers get (`--config FILE`, overrides). */
  args?: string[];
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

/**
 * Run (or continue) the configured sweep and report it.
 *
 * @param config Resolved configuration with a `[sweep]` section.
 * @param options Runner, workers, logging.
 * @returns The report: results, leaderboard text, best trial.
 */
export async function sweep(config: Config, options: SweepOptions = {}): Promise<SweepReport> {
  const log = options.log ?? console.error;
  const plan = await planSweep(config);
  const budget = config.sweep.time_budget_s;
  const deadline = budget > 0 ? Date.now() + budget * 1000 : 0;
  if ((options.workers ?? 1) > 1) {
    await spawnWorkers(plan, options.workers!, options.args ?? [], deadline, log);
  } else {
    await runTrials(plan, options.runner ?? STAGE_RUNNERS[config.sweep.stage], null, deadline, log);
  }
  return await sweepReport(plan, log);
}

/**
 * Run every unfinished trial (those another worker has claimed are skipped).
 *
 * @param plan The sweep plan.
 * @param runner Runs one trial.
 * @param claim This worker's claim id, or null when no other worker runs.
 * @param deadline Start no trial after this time (ms since the epoch; 0: none).
 * @param log Progress lines.
 * @returns How many trials ran.
 */
async function runTrials(
  plan: SweepPlan,
  runner: TrialRunner,
  claim: string | null,
  deadline: number,
  log: (line: string) => void,
): Promise<number> {
  let ran = 0;
  for (const t of plan.trials) {
    if ((await readTrialResult(t.dir))?.hash === t.hash) continue;
    if (deadline > 0 && Date.now() >= deadline) {
      log(`sweep: time budget of ${plan.config.sweep.time_budget_s} s spent; rerun to continue`);
      break;
    }
    if (claim !== null && !(await claimTrial(t.dir, claim))) continue;
    const result = await runTrial(plan, t, runner, log);
    await atomicWrite(`${t.dir}/result.json`, JSON.stringify(result, null, 1));
    ran++;
  }
  return ran;
}

/** Run one trial; a failure (divergence, a bad combination) becomes its result. */
async function runTrial(
  plan: SweepPlan,
  t: SweepPlan["trials"][number],
  runner: TrialRunner,
  log: (line: string) => void,
): Promise<TrialResult> {
  const started = performance.now();
  const done = (status: TrialResult["status"], reason: string, rows: Row[]): TrialResult => ({
    trial: t.n,
    hash: t.hash,
    params: t.params,
    status,
    reason,
    seconds: (performance.now() - started) / 1000,
    rows,
  });
  const raw = trialConfig(plan.config, t.params, { dir: t.dir, seeds: plan.seeds });
  await Deno.mkdir(t.dir, { recursive: true });
  await atomicWrite(`${t.dir}/config.toml`, configToToml(raw as Config));
  const values = Object.entries(t.params).map(([k, v]) => `${k}=${v}`).join(" ");
  log(`sweep: trial ${t.n} of ${plan.trials.length}: ${values}`);
  try {
    const config = validateConfig(raw, () => `trial ${t.n}`);
    await shareEmbeddings(`${plan.config.run.dir}/embeddings.h5`, `${t.dir}/embeddings.h5`);
    return done("ok", "", await runner(config));
  } catch (e) {
    if (!(e instanceof Error) || e instanceof Deno.errors.NotCapable) throw e;
    const reason = e instanceof UserError ? e.message : `${e.name}: ${e.message}`;
    log(`sweep: trial ${t.n} failed: ${reason.split("\n")[0]}`);
    return done("failed", reason, []);
  }
}

/** Hard-link the run's embeddings into a trial folder (a copy where links fail). */
async function shareEmbeddings(source: string, target: string): Promise<void> {
  const [s, t] = await Promise.all([Deno.stat(source), Deno.stat(target).catch(() => null)]);
  if (t && t.ino === s.ino && t.dev === s.dev) return;
  if (t) await Deno.remove(target);
  await Deno.link(source, target).catch(() => Deno.copyFile(source, target));
}

/** Create `claim-<id>` in the trial folder; false when another worker of this sweep has. */
async function claimTrial(dir: string, claim: string): Promise<boolean> {
  await Deno.mkdir(dir, { recursive: true });
  try {
    (await Deno.open(`${dir}/claim-${claim}`, { write: true, createNew: true })).close();
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) return false;
    throw e;
  }
}

/** Run `workers` processes of this module with `--worker`, wait for all, drop their claims. */
async function spawnWorkers(
  plan: SweepPlan,
  workers: number,
  args: string[],
  deadline: number,
  log: (line: string) => void,
): Promise<void> {
  const deno = Deno.execPath();
  if ((await Deno.permissions.query({ name: "run", command: deno })).state !== "granted") {
    throw new UserError(
      `--workers needs permission to run "${deno}": use "deno task sweep", which grants --allow-run`,
    );
  }
  const claim = crypto.randomUUID().slice(0, 8);
  const run = resolve(plan.config.run.dir);
  const config = args.flatMap((a, i) =>
    a === "--config" ? [args[i + 1]] : a.startsWith("--config=") ? [a.slice(9)] : []
  );
  const repo = fileURLToPath(new URL("..", import.meta.url));
  const permissions = [
    `--allow-read=${[".", repo, run, ...config.map((c) => resolve(c))].join(",")}`,
    `--allow-write=${run}`,
    "--allow-env",
    "--allow-ffi",
  ];
  const script = fileURLToPath(import.meta.url);
  log(`sweep: ${workers} workers on ${plan.trials.length} trials`);
  const statuses = await Promise.all(
    Array.from({ length: workers }, () =>
      new Deno.Command(deno, {
        args: [
          "run",
          ...permissions,
          script,
          ...args,
          `--worker=${claim}`,
          `--deadline=${deadline}`,
        ],
        stdin: "null",
      }).spawn().status),
  );
  for (const t of plan.trials) await Deno.remove(`${t.dir}/claim-${claim}`).catch(() => {});
  statuses.forEach((s, i) => {
    if (!s.success) log(`sweep: worker ${i} exited with code ${s.code}; rerun to retry its trial`);
  });
}

/** `--workers 3` → `--workers=3` (loadConfig reads stage flags in the `=` form). */
function joinFlagValues(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const joins = ["--workers", "--worker", "--deadline"].includes(args[i]) && i + 1 < args.length;
    out.push(joins ? `${args[i]}=${args[++i]}` : args[i]);
  }
  return out;
}

if (import.meta.main) {
  await runMain(async (argv) => {
    const args = joinFlagValues(argv);
    const { config, flags } = await loadConfig(args, ["workers", "worker", "deadline"]);
    if (typeof flags.worker === "string") {
      const plan = await planSweep(config);
      const runner = STAGE_RUNNERS[config.sweep.stage];
      await runTrials(plan, runner, flags.worker, Number(flags.deadline ?? 0), console.error);
      return;
    }
    const workers = flags.workers === undefined ? 1 : Number(flags.workers);
    if (!Number.isInteger(workers) || workers < 1) {
      throw new UserError(`Cannot use --workers ${flags.workers}: expected a positive integer`);
    }
    const forwarded = args.filter((a) => !a.startsWith("--workers"));
    const report = await sweep(config, { workers, args: forwarded });
    console.log(report.leaderboard);
  });
}
