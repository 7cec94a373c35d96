/**
 * Mean ± 95% confidence interval over seeds (Student's t), the form every reported figure takes.
 * @module
 */

/** Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom. */
const T975 = [
  12.706,
  4.303,
  3.182,
  2.776,
  2.571,
  2.447,
  2.365,
  2.306,
  2.262,
  2.228,
  2.201,
  2.179,
  2.16,
  2.145,
  2.131,
  2.12,
  2.11,
  2.101,
  2.093,
  2.086,
  2.08,
  2.074,
  2.069,
  2.064,
  2.06,
  2.056,
  2.052,
  2.048,
  2.045,
  2.042,
];

/** A summarised metric. */
export interface SeedSummary {
  n: number;
  mean: number;
  /** Half-width of the 95% CI of the mean (NaN for a single value). */
  ci95: number;
}

/**
 * Mean and 95% CI half-width of values from independent seeds.
 *
 * @param values One value per seed.
 * @returns n, mean and t·s/√n.
 * @example
 * ```ts
 * import { ok } from "node:assert";
 * const s = seedSummary([1, 2, 3]);
 * ok(s.mean === 2 && Math.abs(s.ci95 - 4.303 / Math.sqrt(3)) < 1e-12);
 * ```
 */
export function seedSummary(values: number[]): SeedSummary {
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return { n, mean, ci95: NaN };
  const variance = values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1);
  const t = n - 1 <= T975.length ? T975[n - 2] : 1.96;
  return { n, mean, ci95: t * Math.sqrt(variance / n) };
}

/** "mean ± ci" with a sensible number of digits. */
export function formatSummary(s: SeedSummary, digits = 4): string {
  const ci = Number.isNaN(s.ci95) ? "n/a" : s.ci95.toPrecision(2);
  return `${s.mean.toPrecision(digits)} ± ${ci}`;
}
