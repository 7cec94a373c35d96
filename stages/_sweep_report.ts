/**
 * The sweep's report, rebuilt from the trials' `result.json` files every time (so workers never
 * share a file): `results.arrow` (one row per trial × seed, every metric, the sampled values),
 * the leaderboard, `best.toml` and `pareto.svg`, all written atomically.
 * @module
 */
import { type Row, writeArrowTable } from "../core/arrow_table.ts";
import { atomicWrite } from "../core/atomic_write.ts";
import { configToToml, validateConfig } from "../core/config.ts";
import { paretoSvg } from "../eval/pareto_svg.ts";
import {
  formatLeaderboard,
  paretoAxes,
  paretoFront,
  type RankedTrial,
  rankTrials,
  type TrialResult,
} from "../eval/sweep_ranking.ts";
import { spaceEntries } from "../eval/sweep_sampling.ts";
import { readTrialResult, type SweepPlan, trialConfig } from "./_sweep_plan.ts";

/** What a sweep reports. */
export interface SweepReport {
  /** Finished trials (failed ones included), in trial order. */
  results: TrialResult[];
  /** Best first. */
  ranked: RankedTrial[];
  /** The printed text. */
  leaderboard: string;
  /** The best trial, or null when none finished with a value. */
  best: TrialResult | null;
}

/**
 * Gather the trials' results and write the report files.
 *
 * @param plan The sweep plan.
 * @param log Progress lines.
 * @returns The report.
 */
export async function sweepReport(
  plan: SweepPlan,
  log: (line: string) => void,
): Promise<SweepReport> {
  const s = plan.config.sweep;
  const found = await Promise.all(plan.trials.map((t) => readTrialResult(t.dir)));
  const results = found.filter((r, i): r is TrialResult => r?.hash === plan.trials[i].hash);
  const keys = spaceEntries(s.space).map(([k]) => k);

  // 1. Every trial × seed as one row; a failed trial has one row per planned seed. A key whose
  // choices mix types (e.g. [0, "auto"]) becomes a string column: Arrow columns have one type.
  const mixed = keys.filter((k) => new Set(results.map((r) => typeof r.params[k])).size > 1);
  const rows: Row[] = results.flatMap((r) => {
    const params = { ...r.params };
    for (const k of mixed) params[k] = String(params[k]);
    const head = { trial: r.trial, status: r.status, reason: r.reason, ...params };
    const own = r.status === "ok" ? r.rows : plan.seeds.map((seed) => ({ seed }));
    return own.map((row) => ({ ...head, ...row, seconds: r.seconds }));
  });
  await writeArrowTable(`${plan.dir}/results.arrow`, rows);

  // 2. Leaderboard.
  const ranked = rankTrials(results, s);
  const failed = results.filter((r) => r.status === "failed").length;
  const missing = plan.trials.length - results.length;
  const top = ranked[0];
  const best = top?.objective && top.feasible ? top.result : null;
  const lines = [
    `sweep: ${s.stage}, ${results.length} of ${plan.trials.length} trials done (${failed} failed${
      missing > 0 ? `, ${missing} not run yet` : ""
    }), ${s.objective} mean ± 95% CI over seeds ${plan.seeds.join(", ")}`,
    formatLeaderboard(ranked, s, keys),
  ];

  // 3. The best configuration, ready to use as --config.
  if (best) {
    const raw = trialConfig(plan.config, best.params, plan.config.run);
    const path = `${plan.dir}/best.toml`;
    const header = [
      `# Best of ${results.length} sweep trials: trial ${best.trial}, ${s.objective} ${
        top.objective!.mean.toPrecision(4)
      } (${s.direction}) over seeds ${plan.seeds.join(", ")}.`,
      `# Use: deno task ${s.stage} --config ${path}`,
    ];
    await atomicWrite(path, `${header.join("\n")}\n${configToToml(validateConfig(raw))}`);
    lines.push(`best: trial ${best.trial} -> ${path}`);
  } else {
    lines.push("best: none yet (no trial finished with a value within budget)");
  }

  // 4. Pareto plot of the trials with values.
  const plotted = ranked.filter((r) => r.x !== null && r.y !== null);
  if (plotted.length > 0) {
    const axes = paretoAxes(s);
    const maximizeY = axes.y === s.objective && s.direction === "maximize";
    const front = paretoFront(plotted.map((r) => ({ x: r.x!.mean, y: r.y!.mean })), maximizeY);
    const svg = paretoSvg(
      plotted.map((r, i) => ({
        label: String(r.result.trial),
        x: r.x!.mean,
        y: r.y!.mean,
        xErr: r.x!.ci95,
        yErr: r.y!.ci95,
        front: front[i],
        best: r.result === best,
      })),
      {
        title: `Sweep of ${s.stage}: ${axes.y} vs ${axes.x}`,
        subtitle: `${plotted.length} trials (labels: trial numbers${
          results.length > plotted.length
            ? `; ${results.length - plotted.length} failed, not shown`
            : ""
        }); bars: 95% CI over ${plan.seeds.length} seed(s)`,
        xLabel: axes.x === "l0" ? "L0, active latents per token" : "seconds per trial",
        yLabel: axes.y,
        maximizeY,
        xLine: s.objective === "fvu_at_l0"
          ? { value: s.l0_budget, label: `L0 budget ${s.l0_budget}` }
          : undefined,
      },
    );
    await atomicWrite(`${plan.dir}/pareto.svg`, svg);
  }
  log(`sweep: wrote ${plan.dir}/results.arrow${plotted.length > 0 ? " and pareto.svg" : ""}`);
  return { results, ranked, leaderboard: lines.join("\n"), best };
}
