/**
 * Training batches of token embeddings read from embeddings.h5 in slices — never the whole file
 * in memory (h5wasm's heap is 32-bit) — in a deterministic order: chunk order shuffled from
 * (seed, epoch), then rows shuffled inside each chunk.
 * @module
 */
import type { Split } from "../../data/split.ts";
import type { EmbeddingsReader } from "../embeddings_store.ts";
import { Rng } from "../rng.ts";
import type { Standardizer } from "./standardizer.ts";

/** One batch. */
export interface EmbeddingBatch {
  /** Embeddings [n, d], standardised when a standardizer was given. */
  x: Float32Array;
  /** Next-token targets [n]; −1 = no target (mask it). */
  targets: Int32Array;
  n: number;
}

/** How to batch. */
export interface BatchOptions {
  batchSize: number;
  /** Shuffle chunk order and rows (training) or keep file order (evaluation). */
  shuffle: boolean;
  seed: number;
  epoch: number;
  /** Rows read per slice (default 65536). */
  chunkRows?: number;
  /** Use only the first N rows of the split (0: all). */
  maxRows?: number;
  standardizer?: Standardizer;
}

/**
 * Iterate batches of one split. The last batch may be smaller.
 *
 * @param reader An open embeddings file.
 * @param split Which split.
 * @param options Batch size, order and normalisation.
 * @returns A generator of batches; the same options always give the same batches.
 */
export function* embeddingBatches(
  reader: EmbeddingsReader,
  split: Split,
  options: BatchOptions,
): Generator<EmbeddingBatch> {
  const d = reader.d;
  const all = reader.rows(split);
  const rows = options.maxRows ? Math.min(options.maxRows, all) : all;
  const chunk = Math.max(options.chunkRows ?? 65536, options.batchSize);
  const starts = Array.from({ length: Math.ceil(rows / chunk) }, (_, i) => i * chunk);
  const rng = new Rng(mix(options.seed, options.epoch));
  if (options.shuffle) rng.shuffle(starts);
  // Carry rows across chunk boundaries so every batch but the last is full.
  let pending: EmbeddingBatch | null = null;
  for (const start of starts) {
    const block = reader.read(split, start, Math.min(rows, start + chunk));
    const n = block.next_ids.length;
    const order = Array.from({ length: n }, (_, i) => i);
    if (options.shuffle) rng.shuffle(order);
    const x = new Float32Array(n * d);
    const targets = new Int32Array(n);
    order.forEach((src, dst) => {
      x.set(block.embeddings.subarray(src * d, (src + 1) * d), dst * d);
      targets[dst] = block.next_ids[src];
    });
    options.standardizer?.apply(x);
    const merged: EmbeddingBatch = pending ? concat(pending, x, targets) : { x, targets, n };
    const total = merged.n;
    let at = 0;
    for (; at + options.batchSize <= total; at += options.batchSize) {
      yield slice(merged, at, at + options.batchSize, d);
    }
    pending = at < total ? slice(merged, at, total, d) : null;
  }
  if (pending) yield pending;
}

function slice(b: EmbeddingBatch, from: number, to: number, d: number): EmbeddingBatch {
  return { x: b.x.slice(from * d, to * d), targets: b.targets.slice(from, to), n: to - from };
}

function concat(a: EmbeddingBatch, x: Float32Array, targets: Int32Array): EmbeddingBatch {
  const mx = new Float32Array(a.x.length + x.length);
  mx.set(a.x);
  mx.set(x, a.x.length);
  const mt = new Int32Array(a.n + targets.length);
  mt.set(a.targets);
  mt.set(targets, a.n);
  return { x: mx, targets: mt, n: mt.length };
}

/** A 32-bit seed from (seed, epoch), so epochs get unrelated orders. */
function mix(seed: number, epoch: number): number {
  let h = Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(epoch + 1, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
