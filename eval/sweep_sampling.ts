/**
 * Seeded random-search sampling of a `[sweep.space]`. Every value depends only on (sweep seed,
 * trial number, key), so the same seed gives the same trials, raising `n_trials` keeps the
 * earlier trials, and adding a key leaves the other keys' values alone.
 * @module
 */
import type { z } from "zod";
import type { Config, DistributionSchema } from "../core/config_schema.ts";
import { Rng } from "../core/rng.ts";

/** One distribution of the search space. */
export type Distribution = z.infer<typeof DistributionSchema>;
/** A sampled value. */
export type SweepValue = number | string | boolean;
/** A trial's sampled values, keyed "section.key" (e.g. "sae.lr"). */
export type Trial = Record<string, SweepValue>;

/**
 * The search space as sorted ("section.key", distribution) pairs.
 *
 * @param space `[sweep].space`: section → key → distribution.
 * @returns The entries, sorted by key so sampling never depends on TOML order.
 */
export function spaceEntries(space: Config["sweep"]["space"]): Array<[string, Distribution]> {
  const entries: Array<[string, Distribution]> = [];
  for (const [section, keys] of Object.entries(space)) {
    for (const [key, dist] of Object.entries(keys)) entries.push([`${section}.${key}`, dist]);
  }
  return entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Map a uniform u in [0, 1) to a value of the distribution.
 *
 * @param dist The distribution.
 * @param u A uniform draw in [0, 1).
 * @returns uniform: a + (b − a)u; log_uniform: a·(b/a)^u; int: a + ⌊(b − a + 1)u⌋;
 *   log_int: ⌊a·((b + 1)/a)^u⌋ (integer i has probability ln((i + 1)/i) / ln((b + 1)/a));
 *   choice: the ⌊n·u⌋-th value.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * deepStrictEqual(sampleValue({ int: [1, 3] }, 0.999), 3);
 * deepStrictEqual(sampleValue({ log_uniform: [1e-4, 1e-2] }, 0.5), 1e-3);
 * deepStrictEqual(sampleValue({ choice: ["a", "b"] }, 0.5), "b");
 * ```
 */
export function sampleValue(dist: Distribution, u: number): SweepValue {
  if (dist.choice) {
    return dist.choice[Math.min(dist.choice.length - 1, Math.floor(u * dist.choice.length))];
  }
  if (dist.uniform) {
    const [a, b] = dist.uniform;
    return Math.min(b, a + (b - a) * u);
  }
  if (dist.log_uniform) {
    const [a, b] = dist.log_uniform;
    // Rounded to 12 significant digits so a decade midpoint prints as 0.001, not 0.0009999…
    return Math.min(b, Math.max(a, Number((a * Math.exp(Math.log(b / a) * u)).toPrecision(12))));
  }
  if (dist.int) {
    const [a, b] = dist.int;
    return Math.min(b, a + Math.floor((b - a + 1) * u));
  }
  if (dist.log_int) {
    const [a, b] = dist.log_int;
    return Math.min(b, Math.max(a, Math.floor(a * Math.exp(Math.log((b + 1) / a) * u))));
  }
  throw new RangeError(`Cannot sample ${JSON.stringify(dist)}: expected one distribution`);
}

/**
 * Sample trials `first … first + count − 1` of a sweep.
 *
 * @param space `[sweep].space`.
 * @param count How many trials.
 * @param seed The sweep seed.
 * @param first Number of the first trial (0-based).
 * @returns One record of sampled values per trial.
 * @example
 * ```ts
 * import { deepStrictEqual, ok } from "node:assert";
 * const space = { sae: { k: { int: [4, 8] as [number, number] } } };
 * const trials = sampleTrials(space, 5, 7);
 * deepStrictEqual(trials, sampleTrials(space, 5, 7));
 * deepStrictEqual(trials.slice(2), sampleTrials(space, 3, 7, 2));
 * ok(trials.every((t) => Number(t["sae.k"]) >= 4 && Number(t["sae.k"]) <= 8));
 * ```
 */
export function sampleTrials(
  space: Config["sweep"]["space"],
  count: number,
  seed: number,
  first = 0,
): Trial[] {
  const entries = spaceEntries(space);
  const trials: Trial[] = [];
  for (let n = first; n < first + count; n++) {
    const trial: Trial = {};
    for (const [key, dist] of entries) {
      trial[key] = sampleValue(dist, new Rng(fnv1a(`${seed}/${n}/${key}`)).next());
    }
    trials.push(trial);
  }
  return trials;
}

/** 32-bit FNV-1a of a string: a well-spread Rng seed per (seed, trial, key). */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
