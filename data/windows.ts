/**
 * Cut tokenised documents into backbone windows with next-token targets (SPEC section 2).
 * @module
 */

/** No next-token target (a truncation cut). */
export const NO_TARGET = -1;

/** Window options, from `[extract]` and the tokenizer's special ids. */
export interface WindowOptions {
  maxLength: number;
  /** 0: one truncated window per document; N: windows advance N tokens. */
  stride: number;
  /** Prepended to each document when not null. */
  bosId: number | null;
  /** Target of a document's last token when not null (else no target). */
  eosId: number | null;
}

/** One backbone call's worth of tokens, and which of its positions are stored. */
export interface Window {
  /** Tokens fed to the backbone, positions 0..ids.length-1. */
  ids: number[];
  /** First stored position in this window: earlier ones were stored by a previous window. */
  from: number;
  /** Next-token targets of the stored positions [from, ids.length). */
  targets: number[];
  /** Offset of ids[0] in the document's sequence (BOS included). */
  offset: number;
}

/**
 * Windows of one document. The sequence is [BOS] + tokens; the target of position i is
 * sequence[i+1], EOS (or none) at the document's natural end, and none at a truncation cut.
 * With a stride each window after the first stores only tokens no earlier window stored, so
 * every token is stored exactly once with as much left context as the window allows.
 *
 * @param tokens The document's token ids, without special tokens.
 * @param options Window length, stride and special ids.
 * @returns The windows, in order.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const w = documentWindows([5, 6, 7], { maxLength: 8, stride: 0, bosId: 0, eosId: 0 });
 * deepStrictEqual(w, [{ ids: [0, 5, 6, 7], from: 0, targets: [5, 6, 7, 0], offset: 0 }]);
 * ```
 */
export function documentWindows(
  tokens: ArrayLike<number>,
  options: WindowOptions,
): Window[] {
  const { maxLength, stride, bosId, eosId } = options;
  const seq = bosId === null ? Array.from(tokens) : [bosId, ...Array.from(tokens)];
  const end = seq.length;
  const targetAt = (i: number) => i + 1 < end ? seq[i + 1] : (eosId ?? NO_TARGET);
  if (stride === 0) {
    const n = Math.min(maxLength, end);
    const targets = seq.slice(0, n).map((_, i) => i === n - 1 && n < end ? NO_TARGET : targetAt(i));
    return [{ ids: seq.slice(0, n), from: 0, targets, offset: 0 }];
  }
  const windows: Window[] = [];
  let stored = 0;
  for (let start = 0; stored < end; start += stride) {
    const stop = Math.min(start + maxLength, end);
    const targets = [];
    for (let i = stored; i < stop; i++) targets.push(targetAt(i));
    windows.push({
      ids: seq.slice(start, stop),
      from: stored - start,
      targets,
      offset: start,
    });
    stored = stop;
  }
  return windows;
}
