/**
 * A deterministic GPT-2 style byte-level BPE trainer whose output
 * `@huggingface/transformers` (and Python `tokenizers`) load as is.
 *
 * @module
 */

/** Options for {@linkcode trainByteLevelBpe}. */
export interface ByteLevelBpeOptions {
  /** Total vocabulary size, special tokens included: an integer in [256 + specials, 1,000,000]. */
  vocabSize: number;
  /** Stop merging once the most frequent pair occurs fewer times than this (default 2). */
  minFrequency?: number;
  /** Tokens appended after the BPE vocab, in order; the first is bos, eos and unk (default `["<|endoftext|>"]`). */
  specialTokens?: string[];
}

/** What {@linkcode trainByteLevelBpe} returns: the two files a HF tokenizer folder needs, plus ids. */
export interface ByteLevelBpe {
  /** Contents of `tokenizer.json` (HF `tokenizers` format, version 1.0). */
  tokenizerJson: Record<string, unknown>;
  /** Contents of `tokenizer_config.json`. */
  tokenizerConfig: Record<string, unknown>;
  /** Id of the first special token, used as beginning of sequence. */
  bosTokenId: number;
  /** Id of the first special token, used as end of sequence. */
  eosTokenId: number;
}

/** GPT-2's pre-tokenizer pattern, the one `tokenizers`' ByteLevel pre-tokenizer uses. */
const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
const MAX_VOCAB_SIZE = 1_000_000;
/** Pair keys pack two ids as `left * PAIR_BASE + right`; exact in a double since PAIR_BASE² < 2^53. */
const PAIR_BASE = 1 << 20;
const MODEL_MAX_LENGTH = 1024;

/**
 * Trains a byte-level BPE tokenizer the way GPT-2's was made: split text with
 * the GPT-2 regex, map UTF-8 bytes to printable characters, start from all 256
 * byte symbols and repeatedly merge the most frequent adjacent pair (ties go to
 * the lexicographically smallest pair `"left right"`). Special tokens are cut
 * out of the texts before counting and appended after the BPE vocab.
 *
 * @param texts The training texts, read once.
 * @param options Vocabulary size, minimum pair frequency and special tokens.
 * @returns The `tokenizer.json` and `tokenizer_config.json` contents and the bos/eos ids.
 *
 * @example Merges and ids on a tiny corpus
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * import { trainByteLevelBpe } from "./bpe.ts";
 *
 * const bpe = trainByteLevelBpe(["aaab aaab"], { vocabSize: 258 });
 * const model = bpe.tokenizerJson.model as { merges: string[][] };
 * deepStrictEqual(model.merges, [["a", "a"]]);
 * deepStrictEqual(bpe.eosTokenId, 257);
 * ```
 */
export function trainByteLevelBpe(
  texts: Iterable<string>,
  options: ByteLevelBpeOptions,
): ByteLevelBpe {
  const specials = options.specialTokens ?? ["<|endoftext|>"];
  const minFrequency = options.minFrequency ?? 2;
  validateOptions(options.vocabSize, minFrequency, specials);

  // 1. Base vocabulary: the 256 byte symbols in code point order, as GPT-2's encoder.json
  const byteToChar = bytesToUnicode();
  const tokens = [...byteToChar].sort((x, y) => x.codePointAt(0)! - y.codePointAt(0)!);
  const tokenIds = new Map(tokens.map((t, i) => [t, i]));
  const byteToId = byteToChar.map((c) => tokenIds.get(c)!);
  for (const special of specials) {
    if (tokenIds.has(special)) {
      throw new Error(
        `Cannot use special token "${special}": it is a byte symbol; use a token of two or more characters`,
      );
    }
  }

  // 2. Words: distinct pre-tokens as byte-symbol ids with their counts
  const { words, freqs } = countWords(texts, specials, byteToId);

  // 3. Pair counts and, per pair, the words that may contain it
  const counts = new Map<number, number>();
  const where = new Map<number, Set<number>>();
  for (let w = 0; w < words.length; w++) {
    countPairs(words[w], freqs[w], w, counts, where);
  }
  const heap = new PairHeap(tokens);
  for (const [key, count] of counts) heap.push(count, key);

  // 4. Merge the best pair until the vocabulary is full or pairs are too rare
  const merges: [number, number][] = [];
  const banned = new Set(specials);
  const bpeSize = options.vocabSize - specials.length;
  while (tokens.length < bpeSize && heap.size > 0) {
    const [count, key] = heap.pop();
    if (counts.get(key) !== count) continue; // stale entry
    if (count < minFrequency) break;
    const left = Math.floor(key / PAIR_BASE), right = key % PAIR_BASE;
    const merged = tokens[left] + tokens[right];
    if (banned.has(merged)) continue; // a special token owns this string
    let id = tokenIds.get(merged);
    if (id === undefined) {
      id = tokens.push(merged) - 1;
      tokenIds.set(merged, id);
    }
    merges.push([left, right]);
    mergePair(left, right, id, words, freqs, counts, where, heap);
  }

  return buildFiles(tokens, merges, specials);
}

/** Rejects options outside the allowed ranges, quoting the offending value. */
function validateOptions(
  vocabSize: number,
  minFrequency: number,
  specials: string[],
): void {
  const least = 256 + specials.length;
  if (
    !Number.isInteger(vocabSize) || vocabSize < least ||
    vocabSize > MAX_VOCAB_SIZE
  ) {
    throw new RangeError(
      `Cannot train with vocabSize ${vocabSize}: expected an integer from ${least} (256 bytes + ${specials.length} special tokens) to ${MAX_VOCAB_SIZE}`,
    );
  }
  if (!Number.isInteger(minFrequency) || minFrequency < 1) {
    throw new RangeError(
      `Cannot train with minFrequency ${minFrequency}: expected a positive integer`,
    );
  }
  if (specials.length === 0) {
    throw new RangeError(
      "Cannot train with specialTokens []: expected at least one token, the first is bos/eos",
    );
  }
  const seen = new Set<string>();
  for (const special of specials) {
    if (
      typeof special !== "string" || special.length === 0 || seen.has(special)
    ) {
      throw new RangeError(
        `Cannot use special token ${JSON.stringify(special)}: expected distinct non-empty strings`,
      );
    }
    seen.add(special);
  }
}

/** GPT-2's `bytes_to_unicode`: byte b → a printable character, identity for printable Latin-1. */
function bytesToUnicode(): string[] {
  const chars: string[] = new Array(256);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) ||
      b >= 0xae;
    chars[b] = String.fromCharCode(printable ? b : 256 + shifted++);
  }
  return chars;
}

/** Splits texts around special tokens and with the GPT-2 regex; counts each distinct piece. */
function countWords(
  texts: Iterable<string>,
  specials: string[],
  byteToId: number[],
): { words: Int32Array[]; freqs: number[] } {
  const escaped = [...specials].sort((x, y) => y.length - x.length)
    .map((s) => s.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&"));
  const specialPattern = new RegExp(escaped.join("|"));
  const raw = new Map<string, number>();
  let textCount = 0;
  for (const text of texts) {
    if (typeof text !== "string") {
      throw new TypeError(
        `Cannot train on text ${String(text)}: expected a string`,
      );
    }
    textCount++;
    for (const piece of text.split(specialPattern)) {
      for (const word of piece.match(GPT2_PATTERN) ?? []) {
        raw.set(word, (raw.get(word) ?? 0) + 1);
      }
    }
  }
  if (raw.size === 0) {
    throw new RangeError(
      `Cannot train on ${textCount} texts with no characters outside special tokens: expected at least one non-empty text`,
    );
  }
  const encoder = new TextEncoder();
  const words: Int32Array[] = [];
  const freqs: number[] = [];
  for (const [word, freq] of raw) {
    words.push(Int32Array.from(encoder.encode(word), (b) => byteToId[b]));
    freqs.push(freq);
  }
  return { words, freqs };
}

/** Adds `freq` to the count of every adjacent pair of `word` and indexes them under word `w`. */
function countPairs(
  word: Int32Array,
  freq: number,
  w: number,
  counts: Map<number, number>,
  where: Map<number, Set<number>>,
): void {
  for (let i = 0; i + 1 < word.length; i++) {
    const key = word[i] * PAIR_BASE + word[i + 1];
    counts.set(key, (counts.get(key) ?? 0) + freq);
    let set = where.get(key);
    if (set === undefined) where.set(key, set = new Set());
    set.add(w);
  }
}

/** Indexes under word `w` the pairs of `word` that touch the new token `id`. */
function indexPairs(
  word: Int32Array,
  w: number,
  id: number,
  where: Map<number, Set<number>>,
): void {
  for (let i = 0; i + 1 < word.length; i++) {
    if (word[i] !== id && word[i + 1] !== id) continue;
    const key = word[i] * PAIR_BASE + word[i + 1];
    let set = where.get(key);
    if (set === undefined) where.set(key, set = new Set());
    set.add(w);
  }
}

/** Rewrites every word holding `left right` with `id`, updating pair counts by difference. */
function mergePair(
  left: number,
  right: number,
  id: number,
  words: Int32Array[],
  freqs: number[],
  counts: Map<number, number>,
  where: Map<number, Set<number>>,
  heap: PairHeap,
): void {
  const key = left * PAIR_BASE + right;
  const delta = new Map<number, number>();
  for (const w of where.get(key) ?? []) {
    const word = words[w], freq = freqs[w];
    const out: number[] = [];
    for (let i = 0; i < word.length; i++) {
      if (i + 1 < word.length && word[i] === left && word[i + 1] === right) {
        out.push(id);
        i++;
      } else out.push(word[i]);
    }
    if (out.length === word.length) continue; // index was stale
    for (let i = 0; i + 1 < word.length; i++) {
      const k = word[i] * PAIR_BASE + word[i + 1];
      delta.set(k, (delta.get(k) ?? 0) - freq);
    }
    const merged = Int32Array.from(out);
    words[w] = merged;
    for (let i = 0; i + 1 < merged.length; i++) {
      const k = merged[i] * PAIR_BASE + merged[i + 1];
      delta.set(k, (delta.get(k) ?? 0) + freq);
    }
    indexPairs(merged, w, id, where);
  }
  where.delete(key);
  for (const [k, d] of delta) {
    if (d === 0) continue;
    const count = (counts.get(k) ?? 0) + d;
    if (count > 0) {
      counts.set(k, count);
      heap.push(count, k);
    } else counts.delete(k);
  }
}

/** Max-heap of (count, pair) with ties broken by the smaller pair string; entries go stale lazily. */
class PairHeap {
  #counts: number[] = [];
  #keys: number[] = [];
  constructor(private tokens: string[]) {}

  get size(): number {
    return this.#counts.length;
  }

  push(count: number, key: number): void {
    this.#counts.push(count);
    this.#keys.push(key);
    let i = this.#counts.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#before(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  pop(): [number, number] {
    const top: [number, number] = [this.#counts[0], this.#keys[0]];
    const lastCount = this.#counts.pop()!, lastKey = this.#keys.pop()!;
    const n = this.#counts.length;
    if (n > 0) {
      this.#counts[0] = lastCount;
      this.#keys[0] = lastKey;
      let i = 0;
      while (true) {
        const l = 2 * i + 1, r = l + 1;
        let best = i;
        if (l < n && this.#before(l, best)) best = l;
        if (r < n && this.#before(r, best)) best = r;
        if (best === i) break;
        this.#swap(i, best);
        i = best;
      }
    }
    return top;
  }

  /** True when entry i should come out before entry j. */
  #before(i: number, j: number): boolean {
    const ci = this.#counts[i], cj = this.#counts[j];
    if (ci !== cj) return ci > cj;
    const ki = this.#keys[i], kj = this.#keys[j];
    const li = this.tokens[Math.floor(ki / PAIR_BASE)],
      lj = this.tokens[Math.floor(kj / PAIR_BASE)];
    if (li !== lj) return li < lj;
    return this.tokens[ki % PAIR_BASE] < this.tokens[kj % PAIR_BASE];
  }

  #swap(i: number, j: number): void {
    [this.#counts[i], this.#counts[j]] = [this.#counts[j], this.#counts[i]];
    [this.#keys[i], this.#keys[j]] = [this.#keys[j], this.#keys[i]];
  }
}

/** Assembles `tokenizer.json` and `tokenizer_config.json` as GPT-2 ships them. */
function buildFiles(
  tokens: string[],
  merges: [number, number][],
  specials: string[],
): ByteLevelBpe {
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => vocab[t] = i);
  const added = specials.map((content, i) => ({
    id: tokens.length + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  for (const token of added) vocab[token.content] = token.id;
  const byteLevel = {
    add_prefix_space: false,
    trim_offsets: true,
    use_regex: true,
  };
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", ...byteLevel },
    post_processor: { type: "ByteLevel", ...byteLevel, trim_offsets: false },
    decoder: { type: "ByteLevel", ...byteLevel },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: merges.map(([l, r]) => [tokens[l], tokens[r]]),
    },
  };
  const main = specials[0];
  const tokenizerConfig = {
    tokenizer_class: "GPT2Tokenizer",
    bos_token: main,
    eos_token: main,
    unk_token: main,
    model_max_length: MODEL_MAX_LENGTH,
    add_bos_token: false,
    add_prefix_space: false,
    clean_up_tokenization_spaces: false,
    added_tokens_decoder: Object.fromEntries(
      added.map(({ id, ...rest }) => [String(id), rest]),
    ),
  };
  const id = tokens.length;
  return { tokenizerJson, tokenizerConfig, bosTokenId: id, eosTokenId: id };
}
