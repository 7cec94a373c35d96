/**
 * Rank finished sweep trials by their objective (mean ± 95% CI over seeds), print the
 * leaderboard, and find the Pareto front of the trials on two metrics.
 * @module
 */
import type { Row } from "../core/arrow_table.ts";
import type { Config } from "../core/config_schema.ts";
import { formatSummary, type SeedSummary, seedSummary } from "./seed_stats.ts";
import type { Trial } from "./sweep_sampling.ts";

/** What one trial left behind (`<run>/sweep/trial-<n>/result.json`). */
export interface TrialResult {
  trial: number;
  /** Hash of everything that determines the trial; a different hash means "run it again". */
  hash: string;
  params: Trial;
  status: "ok" | "failed";
  /** Why the trial failed ("" when it did not). */
  reason: string;
  seconds: number;
  /** The stage's rows (one per model × seed). */
  rows: Row[];
}

/** A trial on the leaderboard. */
export interface RankedTrial {
  result: TrialResult;
  /** The objective over seeds; null when the trial failed or reported no value. */
  objective: SeedSummary | null;
  /** The Pareto plot's second metric (L0, or seconds for baselines). */
  x: SeedSummary | null;
  /** The Pareto plot's y metric (the objective's metric, or FVU when the objective is L0). */
  y: SeedSummary | null;
  /** False when over the L0 budget of `fvu_at_l0`. */
  feasible: boolean;
}

/** The metrics a sweep plots: x is minimised, y follows the sweep's direction. */
export function paretoAxes(sweep: Config["sweep"]): { x: string; y: string } {
  const x = sweep.stage === "baselines" ? "seconds" : "l0";
  const y = sweep.objective === "fvu_at_l0" ? "fvu" : sweep.objective;
  return { x, y: y === x ? "fvu" : y };
}

/**
 * Summarise and sort trials: feasible finished trials by objective, then over-budget ones,
 * then failed ones (in trial order).
 *
 * @param results Trial results.
 * @param sweep The `[sweep]` settings (objective, direction, budget, model).
 * @returns The leaderboard, best first.
 */
export function rankTrials(results: TrialResult[], sweep: Config["sweep"]): RankedTrial[] {
  const { x, y } = paretoAxes(sweep);
  const metric = sweep.objective === "fvu_at_l0" ? "fvu" : sweep.objective;
  const sign = sweep.direction === "maximize" ? -1 : 1;
  const ranked = results.map((result): RankedTrial => {
    const mine = result.rows.filter((r) =>
      Number(r.seed) >= 0 && (sweep.model === "" || r.model === sweep.model)
    );
    const summary = (key: string) => {
      const v = mine.map((r) => r[key]).filter((v): v is number => typeof v === "number");
      return v.length === 0 || v.some((n) => !Number.isFinite(n)) ? null : seedSummary(v);
    };
    const objective = result.status === "ok" ? summary(metric) : null;
    const xs = x === "seconds" ? seedSummary([result.seconds]) : summary(x);
    const l0 = summary("l0");
    const feasible = sweep.objective !== "fvu_at_l0" || (l0 !== null && l0.mean <= sweep.l0_budget);
    return {
      result,
      objective,
      x: objective ? xs : null,
      y: objective ? summary(y) : null,
      feasible,
    };
  });
  const tier = (r: RankedTrial) => r.objective === null ? 2 : r.feasible ? 0 : 1;
  return ranked.sort((a, b) =>
    tier(a) - tier(b) ||
    (tier(a) < 2 ? sign * (a.objective!.mean - b.objective!.mean) : 0) ||
    a.result.trial - b.result.trial
  );
}

/**
 * The leaderboard as aligned text: rank, trial, objective and plot metric as mean ± 95% CI,
 * seeds, and the sampled values; failed trials last with their reason.
 *
 * @param ranked From {@link rankTrials}.
 * @param sweep The `[sweep]` settings.
 * @param keys Swept keys ("section.key"), as columns.
 */
export function formatLeaderboard(
  ranked: RankedTrial[],
  sweep: Config["sweep"],
  keys: string[],
): string {
  const { x } = paretoAxes(sweep);
  const objective = sweep.objective === "fvu_at_l0"
    ? `fvu (l0 ≤ ${sweep.l0_budget})`
    : sweep.objective;
  const arrow = sweep.direction === "minimize" ? "↓" : "↑";
  const header = ["rank", "trial", `${objective} ${arrow}`, x, "seeds", ...keys];
  const lines = [header];
  let rank = 0;
  for (const r of ranked) {
    const values = keys.map((k) => show(r.result.params[k]));
    const seeds = new Set(r.result.rows.map((row) => row.seed).filter((s) => Number(s) >= 0));
    if (r.objective === null) {
      const why = r.result.reason.split("\n")[0] || "no objective value";
      lines.push(["-", String(r.result.trial), "failed", "", "", ...values, clip(why, 100)]);
      continue;
    }
    lines.push([
      r.feasible ? String(++rank) : "over",
      String(r.result.trial),
      formatSummary(r.objective),
      r.x ? formatSummary(r.x, 3) : "-",
      String(seeds.size),
      ...values,
    ]);
  }
  // Align every column; a failure's reason trails its line.
  const widths = [...header, ""].map((_, c) => Math.max(...lines.map((l) => l[c]?.length ?? 0)));
  return lines.map((l) => l.map((cell, c) => cell.padEnd(widths[c])).join("  ").trimEnd())
    .join("\n");
}

/**
 * Which points are on the Pareto front: no other point has x ≤ and y at least as good, with
 * one of them strictly better. x is minimised.
 *
 * @param points The points.
 * @param maximizeY Whether a higher y is better.
 * @returns One flag per point.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const pts = [{ x: 1, y: 3 }, { x: 2, y: 1 }, { x: 2, y: 2 }, { x: 3, y: 1 }];
 * deepStrictEqual(paretoFront(pts, false), [true, true, false, false]);
 * ```
 */
export function paretoFront(
  points: Array<{ x: number; y: number }>,
  maximizeY: boolean,
): boolean[] {
  const better = (a: number, b: number) => maximizeY ? a > b : a < b;
  return points.map((p) =>
    !points.some((q) =>
      q.x <= p.x && (better(q.y, p.y) || q.y === p.y) && (q.x < p.x || better(q.y, p.y))
    )
  );
}

function show(v: unknown): string {
  if (typeof v !== "number") return v === undefined ? "" : String(v);
  return Number.isInteger(v) ? String(v) : Number(v.toPrecision(3)).toString();
}

function clip(text: string, n: number): string {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}
