/**
 * Small helpers shared by the benchmarks: medians, pauses, peak RSS, step timing, cases run in
 * their own processes.
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

/** Peak resident set size of this process in MB (VmHWM; current RSS where /proc is absent). */
export function peakRssMb(): number {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024;
  } catch {
    return Deno.memoryUsage().rss / 2 ** 20;
  }
}

/**
 * Median seconds of `steps` calls of `step` after two warm-up calls.
 * @param step One training step (awaited).
 * @param steps Timed calls.
 */
export async function medianStepSeconds(
  step: () => void | Promise<void>,
  steps: number,
): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < steps + 2; i++) {
    const start = performance.now();
    await step();
    if (i >= 2) times.push((performance.now() - start) / 1000);
  }
  return median(times);
}

/**
 * Runs a benchmark file's `--case=<spec>` in a fresh Deno process (read, env, ffi, sys) and
 * parses the JSON object it prints last: each case gets a process of its own.
 *
 * @param file The benchmark module (its `import.meta.filename`).
 * @param spec The case.
 */
export async function runCase<T>(file: string, spec: string): Promise<T> {
  const args = ["run", "--allow-read", "--allow-env", "--allow-ffi", "--allow-sys", file];
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...args, `--case=${spec}`],
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
  if (!out.success) throw new Error(`Benchmark case ${spec} failed: ${text}`);
  return JSON.parse(text) as T;
}
