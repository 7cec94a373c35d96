/**
 * Small helpers shared by the benchmarks: medians, pauses, temporary folders.
 * @module
 */

/** Median of a non-empty list. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Wait a little so onnxruntime's spinning worker threads of the previous measurement go idle
 * before the next one starts (on 2 cores they would otherwise steal its CPU).
 */
export function settle(ms = 200): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A number with `digits` decimals, for the printed lines. */
export function fixed(x: number, digits = 0): string {
  return x.toFixed(digits);
}
