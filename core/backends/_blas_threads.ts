/**
 * Splits large elementwise kernels and the Adam update over helper threads (web workers).
 * Arrays must live in SharedArrayBuffers (the blas pool allocates them there); anything else, or
 * anything small, runs on the calling thread. The calling thread does the first share and then
 * blocks until the helpers are done. Idle helpers are stopped after a second by an unref'd timer,
 * so they never keep the process alive for longer than that. (node:worker_threads could be
 * unref'd, but in Deno its postMessage takes seconds on large shared arrays.)
 * @module
 */
import {
  type AdamCoefficients,
  type BinaryOp,
  type Job,
  runJob,
  type Vals,
} from "./_blas_loops.ts";

/** Below this many elements a kernel stays on one thread (a round trip costs ~0.1 ms). */
export const PARALLEL_MIN = 1 << 18;

/** Idle time after which the helpers are stopped. */
const IDLE_MS = 1000;
/** How long new helpers may take to load before threads are given up for this process. */
const START_TIMEOUT_MS = 30_000;

let helpers: Worker[] | undefined;
let disabled = false;
let lastUse = 0;
/** [0]: helpers that finished their share; [1]: helpers whose share threw. */
const done = new Int32Array(new SharedArrayBuffer(8));

/** Threads to use in all, the caller included: the cores, at most 4. */
export function threadCount(): number {
  return Math.max(1, Math.min(navigator.hardwareConcurrency ?? 1, 4));
}

/** Blocks until `count` helpers reported or `timeoutMs` passed; returns whether all did. */
function waitFor(count: number, timeoutMs: number): boolean {
  const deadline = performance.now() + timeoutMs;
  for (let seen = Atomics.load(done, 0); seen < count; seen = Atomics.load(done, 0)) {
    const left = deadline - performance.now();
    if (left <= 0) return false;
    Atomics.wait(done, 0, seen, left);
  }
  return true;
}

/** The running helpers, started (with a handshake) on first use; undefined if they cannot run. */
function readyHelpers(): Worker[] | undefined {
  if (helpers || disabled) return helpers;
  const url = new URL("./_blas_worker.ts", import.meta.url);
  const started = Array.from(
    { length: threadCount() - 1 },
    () => new Worker(url, { type: "module" }),
  );
  Atomics.store(done, 0, 0);
  Atomics.store(done, 1, 0);
  const empty: Job = { kind: "fill", o: new Float32Array(0), value: 0 };
  for (const worker of started) worker.postMessage({ job: empty, done });
  if (!waitFor(started.length, START_TIMEOUT_MS)) {
    for (const worker of started) worker.terminate();
    disabled = true;
    console.warn("blas: helper threads did not start; elementwise kernels run on one thread");
    return undefined;
  }
  helpers = started;
  stopWhenIdle();
  return helpers;
}

function stopWhenIdle(): void {
  const timer = setTimeout(() => {
    if (performance.now() - lastUse < IDLE_MS) return stopWhenIdle();
    for (const worker of helpers ?? []) worker.terminate();
    helpers = undefined;
  }, IDLE_MS);
  Deno.unrefTimer(timer);
}

const shared = (...arrays: ArrayLike<number>[]) =>
  arrays.every((a) => (a as Float32Array).buffer instanceof SharedArrayBuffer);

/** Runs `jobs[0]` here and the rest on helpers, returning when all are done. */
function runAll(jobs: Job[]): void {
  const workers = readyHelpers();
  if (!workers) {
    for (const job of jobs) runJob(job);
    return;
  }
  lastUse = performance.now();
  Atomics.store(done, 0, 0);
  Atomics.store(done, 1, 0);
  for (let k = 1; k < jobs.length; k++) workers[k - 1].postMessage({ job: jobs[k], done });
  runJob(jobs[0]);
  waitFor(jobs.length - 1, Infinity);
  lastUse = performance.now();
  if (Atomics.load(done, 1) > 0) {
    throw new Error("A blas helper thread failed (its error is above)");
  }
}

/** [start, end) shares of n elements, each a multiple of `align`. */
function shares(n: number, align: number): [number, number][] {
  const parts = threadCount();
  const rows = n / align;
  const out: [number, number][] = [];
  for (let k = 0; k < parts; k++) {
    const s = Math.floor(rows * k / parts) * align, e = Math.floor(rows * (k + 1) / parts) * align;
    if (e > s) out.push([s, e]);
  }
  return out;
}

// Per flat mode (see _blas_loops.ts): how a and b are cut for an output share [s, e).
// "f": same range; "w": whole (scalar or row); "c": column, range divided by inner.
const CUTS = ["ff", "fw", "wf", "fw", "wf", "fc", "cf"];

function cut(x: Float32Array, how: string, s: number, e: number, inner: number): Float32Array {
  if (how === "f") return x.subarray(s, e);
  if (how === "c") return x.subarray(s / inner, e / inner);
  return x;
}

/** A flat binary loop, split by output range when large and shared. */
export function parallelBinary(
  op: BinaryOp,
  mode: number,
  a: Float32Array,
  b: Float32Array,
  o: Vals,
  n: number,
  inner: number,
): void {
  if (n < PARALLEL_MIN || threadCount() === 1 || !shared(a, b, o)) {
    op.flat[mode](a, b, o, n, inner);
    return;
  }
  const [ca, cb] = CUTS[mode];
  runAll(
    shares(n, mode >= 3 ? inner : 1).map(([s, e]) => ({
      kind: "binary",
      name: op.name,
      mode,
      a: cut(a, ca, s, e, inner),
      b: cut(b, cb, s, e, inner),
      o: o.subarray(s, e),
      n: e - s,
      inner,
    })),
  );
}

/** A unary loop, split when large and shared. */
export function parallelUnary(name: string, a: Float32Array, o: Float32Array, p: number): void {
  const n = o.length;
  if (n < PARALLEL_MIN || threadCount() === 1 || !shared(a, o)) {
    runJob({ kind: "unary", name, a, o, p });
    return;
  }
  runAll(
    shares(n, 1).map(([s, e]) => ({
      kind: "unary",
      name,
      a: a.subarray(s, e),
      o: o.subarray(s, e),
      p,
    })),
  );
}

/** `o.fill(value)`, split when large and shared. */
export function parallelFill(o: Float32Array, value: number): void {
  if (o.length < PARALLEL_MIN || threadCount() === 1 || !shared(o)) {
    o.fill(value);
    return;
  }
  runAll(shares(o.length, 1).map(([s, e]) => ({ kind: "fill", o: o.subarray(s, e), value })));
}

/** The fused AdamW update, split when large and shared. */
export function parallelAdam(
  p: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  c: AdamCoefficients,
): void {
  const n = p.length;
  if (n < PARALLEL_MIN || threadCount() === 1 || !shared(p, g, m, v)) {
    runJob({ kind: "adam", p, g, m, v, c });
    return;
  }
  runAll(
    shares(n, 1).map(([s, e]) => ({
      kind: "adam",
      p: p.subarray(s, e),
      g: g.subarray(s, e),
      m: m.subarray(s, e),
      v: v.subarray(s, e),
      c,
    })),
  );
}

/** The TopK row loop (see `topkRows`), split by rows when large and shared. */
export function parallelTopk(
  x: Float32Array,
  n: number,
  k: number,
  vals: Float32Array,
  idx: Int32Array,
  bad: Int32Array,
): void {
  const rows = vals.length / k;
  if (x.length < PARALLEL_MIN || threadCount() === 1 || !shared(x, vals, idx, bad)) {
    runJob({ kind: "topk", x, n, k, vals, idx, bad });
    return;
  }
  runAll(
    shares(rows, 1).map(([s, e]) => ({
      kind: "topk",
      x: x.subarray(s * n, e * n),
      n,
      k,
      vals: vals.subarray(s * k, e * k),
      idx: idx.subarray(s * k, e * k),
      bad,
    })),
  );
}

/** A float32 gather of `count` slices (see `gatherSlices`), split when large and shared. */
export function parallelGather(
  x: Float32Array,
  indices: Int32Array,
  o: Float32Array,
  outer: number,
  dim: number,
  nIdx: number,
  slice: number,
): void {
  const count = o.length / slice;
  const base = { kind: "gather" as const, x, indices, o, outer, dim, nIdx, slice };
  if (o.length < PARALLEL_MIN || threadCount() === 1 || !shared(x, indices, o)) {
    runJob({ ...base, start: 0, end: count });
    return;
  }
  runAll(shares(count, 1).map(([start, end]) => ({ ...base, start, end })));
}

/** Scatter-add of update rows into `o` (see `scatterAddRows`), split by target rows. */
export function parallelScatter(
  rowOf: Int32Array,
  updates: Float32Array,
  o: Float32Array,
  slice: number,
): void {
  const rows = o.length / slice;
  const base = { kind: "scatter" as const, rowOf, updates, o, slice };
  if (updates.length < PARALLEL_MIN || threadCount() === 1 || !shared(rowOf, updates, o)) {
    runJob({ ...base, lo: 0, hi: rows });
    return;
  }
  runAll(shares(rows, 1).map(([lo, hi]) => ({ ...base, lo, hi })));
}

/**
 * combineRows / dotRows (see _blas_row_products.ts) over all rows of `a`, split by rows when the
 * work (rows·k·d) is large and the arrays are shared.
 */
export function parallelRowProduct(
  kind: "combine" | "dots",
  a: Float32Array,
  w: Float32Array,
  idx: Int32Array,
  out: Float32Array,
  k: number,
  d: number,
): void {
  const rows = idx.length / k;
  const base = { kind, a, w, idx, out, k, d };
  if (rows * k * d < PARALLEL_MIN || threadCount() === 1 || !shared(a, w, idx, out)) {
    runJob({ ...base, start: 0, end: rows });
    return;
  }
  runAll(shares(rows, 1).map(([start, end]) => ({ ...base, start, end })));
}

/** scatterOuterRows (see _blas_row_products.ts) into all of `out`, split by target rows. */
export function parallelScatterOuter(
  c: Float32Array,
  v: Float32Array,
  idx: Int32Array,
  out: Float32Array,
  d: number,
  k: number,
): void {
  const rows = out.length / d;
  const base = { kind: "outer" as const, c, v, idx, out, d, k };
  if (out.length < PARALLEL_MIN || threadCount() === 1 || !shared(c, v, idx, out)) {
    runJob({ ...base, lo: 0, hi: rows });
    return;
  }
  runAll(shares(rows, 1).map(([lo, hi]) => ({ ...base, lo, hi })));
}
