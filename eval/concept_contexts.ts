/**
 * Contexts of latents for concept labelling (SPEC section 6), in one streaming pass over a split:
 * per latent the firing count, the exact top activations, a reservoir sample of all activations
 * (for quantile examples and held-out activating contexts) and counts of the tokens it fires on;
 * one shared reservoir of random rows gives held-out non-activating contexts. Activations are
 * computed block by block by the caller's function and never stored.
 * @module
 */
import { Rng } from "../core/rng.ts";

/** Rows of a split to read from (an {@link EmbeddingsReader} split fits). */
export interface TokenSource {
  /** Number of rows. */
  rows: number;
  /** Rows [start, end): embeddings [n, d] and the per-token columns. */
  read(
    start: number,
    end: number,
  ): { embeddings: Float32Array; input_ids: Int32Array; doc_index: Int32Array };
}

/** How many contexts of what shape. */
export interface ContextSettings {
  /** Contexts shown to the labeller: ⌈n/2⌉ top activations, the rest across quantiles. */
  examples: number;
  /** Tokens before the peak token. */
  window: number;
  /** Tokens after the peak token. */
  windowAfter: number;
  heldOutActive: number;
  heldOutInactive: number;
  /** Evaluate only the first N rows (0: all). */
  maxTokens: number;
  seed: number;
  /** Rows per activation call; default 1024. */
  blockRows?: number;
}

/** A token window around one row; `ids[peak]` is the row's own token. */
export interface TokenContext {
  row: number;
  activation: number;
  ids: number[];
  peak: number;
  /** "top", "quantile i/n" (1 = highest), "held-out" or "non-activating". */
  source: string;
}

/** Everything gathered for one live latent. */
export interface LatentContexts {
  latent: number;
  /** Tokens it fired on, and that count over evaluated tokens. */
  fires: number;
  frequency: number;
  maxActivation: number;
  meanActivation: number;
  examples: TokenContext[];
  heldOutActive: TokenContext[];
  heldOutInactive: TokenContext[];
  /** The tokens it fires on most often, with counts. */
  frequentTokens: Array<{ id: number; count: number }>;
}

/** Result of {@link collectContexts}. */
export interface CollectedContexts {
  evaluated: number;
  latents: number;
  /** Live latents only (fired at least once), in latent order. */
  live: LatentContexts[];
}

/**
 * Gather contexts for every latent that fires (activation > threshold) on the evaluated rows.
 *
 * @param source The split.
 * @param activations Latent activations of raw embeddings [n, d] → [n, m].
 * @param m Number of latents.
 * @param threshold A latent fires where its activation exceeds this (SAE 0, LCBLM gate 0.5).
 * @param settings Counts, window and seed.
 * @returns Live latents with their examples and held-out contexts.
 */
export function collectContexts(
  source: TokenSource,
  activations: (x: Float32Array, n: number) => Float32Array,
  m: number,
  threshold: number,
  settings: ContextSettings,
): CollectedContexts {
  const rng = new Rng(settings.seed);
  const evaluated = settings.maxTokens > 0
    ? Math.min(settings.maxTokens, source.rows)
    : source.rows;
  const topSize = Math.ceil(settings.examples / 2);
  const poolSize = Math.max(32, 4 * (settings.examples + settings.heldOutActive));
  const fires = new Float64Array(m), sums = new Float64Array(m), maxes = new Float64Array(m);
  const tops = Array.from({ length: m }, () => [] as Array<[number, number]>); // [act, row]
  const pools = Array.from({ length: m }, () => [] as Array<[number, number]>);
  const tokens = Array.from({ length: m }, () => new Map<number, number>());
  const randomSize = Math.max(64, 8 * settings.heldOutInactive);
  const randomRows: Array<{ row: number; acts: Float32Array }> = [];
  const block = settings.blockRows ?? 1024;

  // 1. One pass: counts, exact top activations, reservoir samples.
  for (let start = 0; start < evaluated; start += block) {
    const end = Math.min(evaluated, start + block);
    const rows = source.read(start, end);
    const acts = activations(rows.embeddings, end - start); // [n, m]
    for (let i = 0; i < end - start; i++) {
      const row = start + i;
      const seen = row + 1;
      if (randomRows.length < randomSize) {
        randomRows.push({ row, acts: acts.slice(i * m, (i + 1) * m) });
      } else {
        const r = rng.int(seen);
        if (r < randomSize) randomRows[r] = { row, acts: acts.slice(i * m, (i + 1) * m) };
      }
      for (let j = 0; j < m; j++) {
        const a = acts[i * m + j];
        if (!(a > threshold)) continue;
        fires[j]++;
        sums[j] += a;
        if (a > maxes[j]) maxes[j] = a;
        pushTop(tops[j], a, row, topSize);
        if (pools[j].length < poolSize) pools[j].push([a, row]);
        else {
          const r = rng.int(fires[j]);
          if (r < poolSize) pools[j][r] = [a, row];
        }
        const id = rows.input_ids[i];
        tokens[j].set(id, (tokens[j].get(id) ?? 0) + 1);
      }
    }
  }

  // 2. Per live latent: top examples, held-out activating, quantile examples, non-activating.
  const live: LatentContexts[] = [];
  const wanted = new Set<number>();
  for (let j = 0; j < m; j++) {
    if (fires[j] === 0) continue;
    const top = [...tops[j]].sort(byActivation).map(([a, row]) => ({
      row,
      activation: a,
      source: "top",
    }));
    const used = new Set(top.map((c) => c.row));
    const rest = rng.shuffle(pools[j].filter(([, row]) => !used.has(row)));
    const heldOut = rest.slice(0, settings.heldOutActive).map(([a, row]) => ({
      row,
      activation: a,
      source: "held-out",
    }));
    const forQuantiles = rest.slice(settings.heldOutActive).sort(byActivation);
    const bins = Math.min(settings.examples - top.length, forQuantiles.length);
    const quantiles = Array.from({ length: bins }, (_, b) => {
      const lo = Math.floor((b * forQuantiles.length) / bins);
      const hi = Math.floor(((b + 1) * forQuantiles.length) / bins);
      const [a, row] = forQuantiles[lo + rng.int(hi - lo)];
      return { row, activation: a, source: `quantile ${b + 1}/${bins}` };
    });
    const silent = rng.shuffle(randomRows.filter((r) => !(r.acts[j] > threshold)))
      .slice(0, settings.heldOutInactive)
      .map((r) => ({ row: r.row, activation: r.acts[j], source: "non-activating" }));
    for (const c of [...top, ...quantiles, ...heldOut, ...silent]) wanted.add(c.row);
    live.push({
      latent: j,
      fires: fires[j],
      frequency: fires[j] / evaluated,
      maxActivation: maxes[j],
      meanActivation: sums[j] / fires[j],
      examples: [...top, ...quantiles] as TokenContext[],
      heldOutActive: heldOut as TokenContext[],
      heldOutInactive: silent as TokenContext[],
      frequentTokens: [...tokens[j]].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, 10)
        .map(([id, count]) => ({ id, count })),
    });
  }

  // 3. Token windows of every chosen row, read once.
  const windows = readWindows(source, [...wanted], settings.window, settings.windowAfter);
  for (const l of live) {
    for (const c of [...l.examples, ...l.heldOutActive, ...l.heldOutInactive]) {
      Object.assign(c, windows.get(c.row)!);
    }
  }
  return { evaluated, latents: m, live };
}

/**
 * Token windows around rows, cut at document boundaries: up to `before` tokens before and
 * `after` tokens after each row, from the same document.
 *
 * @param source The split.
 * @param rows Rows to window.
 * @param before Tokens before.
 * @param after Tokens after.
 * @returns Per row its ids and the index of the row's own token in them.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const ids = new Int32Array([10, 11, 12, 20, 21]);
 * const doc = new Int32Array([0, 0, 0, 1, 1]);
 * const source = {
 *   rows: 5,
 *   read: (s: number, e: number) =>
 *     ({ embeddings: new Float32Array(0), input_ids: ids.slice(s, e), doc_index: doc.slice(s, e) }),
 * };
 * deepStrictEqual(readWindows(source, [2], 1, 2).get(2), { ids: [11, 12], peak: 1 });
 * ```
 */
export function readWindows(
  source: TokenSource,
  rows: number[],
  before: number,
  after: number,
): Map<number, { ids: number[]; peak: number }> {
  const out = new Map<number, { ids: number[]; peak: number }>();
  const sorted = [...new Set(rows)].sort((a, b) => a - b);
  let i = 0;
  while (i < sorted.length) {
    // Merge rows whose windows overlap into one read.
    const start = Math.max(0, sorted[i] - before);
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] - before <= sorted[j] + after + 1) j++;
    const end = Math.min(source.rows, sorted[j] + after + 1);
    const { input_ids: ids, doc_index: docs } = source.read(start, end);
    for (let k = i; k <= j; k++) {
      const at = sorted[k] - start;
      let lo = at, hi = at;
      while (lo > 0 && at - lo < before && docs[lo - 1] === docs[at]) lo--;
      while (hi + 1 < ids.length && hi - at < after && docs[hi + 1] === docs[at]) hi++;
      out.set(sorted[k], { ids: Array.from(ids.subarray(lo, hi + 1)), peak: at - lo });
    }
    i = j + 1;
  }
  return out;
}

/**
 * Choose which live latents to label.
 *
 * @param live Live latents.
 * @param max At most this many (0: all).
 * @param mode "frequent": the most frequent; "spread": evenly over the frequency ranking.
 * @returns The chosen latents, most frequent first.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const live = [5, 1, 4, 2, 3].map((f, latent) => ({ latent, fires: f }));
 * deepStrictEqual(selectLatents(live, 2, "frequent").map((l) => l.latent), [0, 2]);
 * deepStrictEqual(selectLatents(live, 3, "spread").map((l) => l.latent), [0, 4, 1]);
 * ```
 */
export function selectLatents<T extends { latent: number; fires: number }>(
  live: T[],
  max: number,
  mode: "spread" | "frequent",
): T[] {
  const ranked = [...live].sort((a, b) => b.fires - a.fires || a.latent - b.latent);
  if (max === 0 || max >= ranked.length) return ranked;
  if (mode === "frequent") return ranked.slice(0, max);
  if (max === 1) return ranked.slice(0, 1);
  return Array.from(
    { length: max },
    (_, i) => ranked[Math.round((i * (ranked.length - 1)) / (max - 1))],
  );
}

/**
 * Render a context as text with its peak token marked ⟦like this⟧ and line breaks shown as ↵.
 *
 * @param context Ids and the peak index.
 * @param decode Token ids → text.
 * @returns One line of text.
 * @example
 * ```ts
 * import { strictEqual } from "node:assert";
 * const words = ["the", " whale", " swam", "\n"];
 * const decode = (ids: number[]) => ids.map((i) => words[i]).join("");
 * strictEqual(renderContext({ ids: [0, 1, 2, 3], peak: 1 }, decode), "the⟦ whale⟧ swam↵");
 * ```
 */
export function renderContext(
  context: { ids: number[]; peak: number },
  decode: (ids: number[]) => string,
): string {
  const { ids, peak } = context;
  const text = `${decode(ids.slice(0, peak))}⟦${decode([ids[peak]])}⟧${
    decode(ids.slice(peak + 1))
  }`;
  return text.replace(/\r?\n/g, "↵");
}

/**
 * The tokens a latent's head direction promotes most: the `n` largest entries of column `j` of a
 * [vocab, m] matrix of per-latent logit contributions.
 *
 * @param matrix [vocab, m] row-major.
 * @param m Columns.
 * @param j The latent.
 * @param n How many.
 * @returns Token ids, largest first.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const w = new Float32Array([1, 0, 3, 2, -1, 5]); // vocab 3, m 2
 * deepStrictEqual(topColumnTokens(w, 2, 1, 2), [2, 1]);
 * ```
 */
export function topColumnTokens(matrix: Float32Array, m: number, j: number, n: number): number[] {
  const vocab = matrix.length / m;
  const ids = Array.from({ length: vocab }, (_, v) => v);
  return ids.sort((a, b) => matrix[b * m + j] - matrix[a * m + j] || a - b).slice(0, n);
}

function byActivation(a: [number, number], b: [number, number]): number {
  return b[0] - a[0] || a[1] - b[1];
}

/** Keep the `size` largest (activation, row) pairs; a small sorted insertion list. */
function pushTop(top: Array<[number, number]>, a: number, row: number, size: number): void {
  if (size === 0) return;
  if (top.length === size && a <= top[top.length - 1][0]) return;
  let k = top.length;
  while (k > 0 && top[k - 1][0] < a) k--;
  top.splice(k, 0, [a, row]);
  if (top.length > size) top.pop();
}
