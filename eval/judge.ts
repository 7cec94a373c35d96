/**
 * Perplexity of a text under a judge LM (SPEC section 6): the text is retokenised with the
 * judge's tokenizer, BOS-prefixed, and every text token's negative log-likelihood is read from a
 * full forward pass (log-softmax in float64); perplexity = exp(mean NLL). Texts longer than the
 * judge's context are scored in windows (below); windows of similar length are batched.
 * @module
 */
import { Tensor } from "@huggingface/transformers";
import type { Backbone } from "../backbone/load_backbone.ts";
import { contextLength } from "./kv_generator.ts";

/** The judge's verdict on one text. */
export interface JudgeScore {
  /** Judge tokens scored (the text's tokens; BOS is context only). */
  tokens: number;
  /** Mean token NLL in nats; NaN for an empty text. */
  nll: number;
  /** exp(nll); NaN for an empty text. */
  perplexity: number;
}

/** One forward pass's worth of a text: tokens, and which targets in it are scored. */
export interface JudgeWindow {
  text: number;
  /** Tokens fed, BOS-prefixed context included. */
  ids: number[];
  /** Positions j in `ids` whose token is scored given ids[< j]. */
  from: number;
}

/**
 * Split a BOS-prefixed sequence into windows of at most `context` tokens. The first window scores
 * every token in it; each later one advances by `stride` tokens and scores only the new ones,
 * seeing up to `context − stride` earlier tokens (Hugging Face's strided-perplexity recipe).
 *
 * @param seq [BOS, t₁, …, tₙ].
 * @param context The judge's context length.
 * @param stride New tokens per later window (default context / 2).
 * @returns Windows that together score t₁ … tₙ exactly once.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const w = judgeWindows(0, [9, 1, 2, 3, 4, 5, 6], 4, 2);
 * deepStrictEqual(w.map((x) => [x.ids, x.from]), [
 *   [[9, 1, 2, 3], 1],
 *   [[2, 3, 4, 5], 2],
 *   [[3, 4, 5, 6], 3],
 * ]);
 * ```
 */
export function judgeWindows(
  text: number,
  seq: number[],
  context: number,
  stride = Math.max(1, Math.floor(context / 2)),
): JudgeWindow[] {
  if (seq.length <= 1) return [];
  const first = Math.min(seq.length, context);
  const out = [{ text, ids: seq.slice(0, first), from: 1 }];
  for (let end = first; end < seq.length; end += stride) {
    const stop = Math.min(seq.length, end + stride);
    const start = Math.max(0, stop - context);
    out.push({ text, ids: seq.slice(start, stop), from: end - start });
  }
  return out;
}

/**
 * Score texts under the judge.
 *
 * @param judge The judge LM (loaded like a backbone).
 * @param texts The texts.
 * @param batchTokens Padded tokens per forward pass at most (one window always fits).
 * @returns One score per text, in order.
 */
export async function judgeTexts(
  judge: Backbone,
  texts: string[],
  batchTokens = 4096,
): Promise<JudgeScore[]> {
  const bos = judge.bosId ?? judge.eosId;
  if (bos === null) {
    throw new RangeError(`Judge "${judge.id}" has no BOS or EOS token to prefix texts with`);
  }
  const context = contextLength(judge);
  const windows = texts.flatMap((t, i) => judgeWindows(i, [bos, ...judge.encode(t)], context));
  const sums = new Float64Array(texts.length);
  const counts = new Float64Array(texts.length);
  // Longest first, so each batch pads little.
  windows.sort((a, b) => b.ids.length - a.ids.length);
  for (let i = 0; i < windows.length;) {
    const len = windows[i].ids.length;
    const batch = windows.slice(i, i + Math.max(1, Math.floor(batchTokens / len)));
    i += batch.length;
    const nll = await windowNll(judge, batch, len);
    batch.forEach((w, b) => {
      sums[w.text] += nll[b];
      counts[w.text] += w.ids.length - w.from;
    });
  }
  return texts.map((_, i) => {
    const nll = counts[i] > 0 ? sums[i] / counts[i] : NaN;
    return { tokens: counts[i], nll, perplexity: Math.exp(nll) };
  });
}

/** Summed NLL of each window's scored tokens: one right-padded forward pass. */
async function windowNll(judge: Backbone, batch: JudgeWindow[], len: number): Promise<number[]> {
  const b = batch.length;
  const ids = new BigInt64Array(b * len);
  const mask = new BigInt64Array(b * len);
  batch.forEach((w, r) =>
    w.ids.forEach((t, j) => {
      ids[r * len + j] = BigInt(t);
      mask[r * len + j] = 1n;
    })
  );
  const out = await judge.model({
    input_ids: new Tensor("int64", ids, [b, len]),
    attention_mask: new Tensor("int64", mask, [b, len]),
  }) as Record<string, Tensor>;
  const logits = out.logits.data as Float32Array; // [b, len, vocab]
  const vocab = out.logits.dims[2];
  const sums = batch.map((w, r) => {
    let sum = 0;
    for (let j = w.from; j < w.ids.length; j++) {
      const row = logits.subarray((r * len + j - 1) * vocab, (r * len + j) * vocab);
      sum -= logSoftmaxAt(row, w.ids[j]);
    }
    return sum;
  });
  for (const t of Object.values(out)) t.dispose();
  return sums;
}

/** log softmax(row)[index] in float64. */
function logSoftmaxAt(row: ArrayLike<number>, index: number): number {
  let max = -Infinity;
  for (let v = 0; v < row.length; v++) if (row[v] > max) max = row[v];
  let sum = 0;
  for (let v = 0; v < row.length; v++) sum += Math.exp(row[v] - max);
  return row[index] - max - Math.log(sum);
}
