// Tests for document windows, the extraction plan and the document split, against hand-computed
// cases. Run: deno test -A tests/windows_test.ts

import assert from "node:assert/strict";
import { Rng } from "../core/rng.ts";
import { UserError } from "../core/user_error.ts";
import { planExtraction, type PlanOptions } from "../data/extraction_plan.ts";
import { splitDocuments } from "../data/split.ts";
import { documentWindows, NO_TARGET, type Window } from "../data/windows.ts";

const BOS = 0;
const EOS = 99;

Deno.test("NO_TARGET is -1", () => {
  assert.equal(NO_TARGET, -1);
});

Deno.test("truncation: the last kept token has no target when the document continues", () => {
  // Sequence [0, 10, 11, 12, 13, 14]; 4 positions kept; 12's next token 13 is cut off.
  const w = documentWindows([10, 11, 12, 13, 14], {
    maxLength: 4,
    stride: 0,
    bosId: BOS,
    eosId: EOS,
  });
  assert.deepEqual(w, [{ ids: [0, 10, 11, 12], from: 0, targets: [10, 11, 12, -1], offset: 0 }]);
});

Deno.test("truncation: a document ending inside the window gets EOS, or none without an EOS id", () => {
  const opts = { maxLength: 8, stride: 0, bosId: BOS, eosId: EOS };
  assert.deepEqual(documentWindows([10, 11], opts), [
    { ids: [0, 10, 11], from: 0, targets: [10, 11, 99], offset: 0 },
  ]);
  assert.deepEqual(documentWindows([10, 11], { ...opts, eosId: null }), [
    { ids: [0, 10, 11], from: 0, targets: [10, 11, -1], offset: 0 },
  ]);
  // Exactly filling the window is a natural end, not a cut.
  assert.deepEqual(documentWindows([10, 11, 12], { ...opts, maxLength: 4 }), [
    { ids: [0, 10, 11, 12], from: 0, targets: [10, 11, 12, 99], offset: 0 },
  ]);
  // One token more than fits is a cut.
  assert.deepEqual(documentWindows([10, 11, 12, 13], { ...opts, maxLength: 4 }), [
    { ids: [0, 10, 11, 12], from: 0, targets: [10, 11, 12, -1], offset: 0 },
  ]);
});

Deno.test("no BOS: the sequence is the document's tokens alone", () => {
  assert.deepEqual(
    documentWindows([10, 11, 12], { maxLength: 8, stride: 0, bosId: null, eosId: EOS }),
    [
      { ids: [10, 11, 12], from: 0, targets: [11, 12, 99], offset: 0 },
    ],
  );
  assert.deepEqual(
    documentWindows([10, 11, 12], { maxLength: 2, stride: 0, bosId: null, eosId: EOS }),
    [
      { ids: [10, 11], from: 0, targets: [11, -1], offset: 0 },
    ],
  );
  assert.deepEqual(
    documentWindows([10, 11, 12, 13], { maxLength: 2, stride: 2, bosId: null, eosId: null }),
    [
      { ids: [10, 11], from: 0, targets: [11, 12], offset: 0 },
      { ids: [12, 13], from: 0, targets: [13, -1], offset: 2 },
    ],
  );
});

Deno.test("stride windows by hand: overlapping windows store each token once", () => {
  // Sequence s = [0, 101..109] (10 tokens), windows of 4 advancing 2.
  const w = documentWindows([101, 102, 103, 104, 105, 106, 107, 108, 109], {
    maxLength: 4,
    stride: 2,
    bosId: BOS,
    eosId: EOS,
  });
  assert.deepEqual(w, [
    { ids: [0, 101, 102, 103], from: 0, targets: [101, 102, 103, 104], offset: 0 },
    { ids: [102, 103, 104, 105], from: 2, targets: [105, 106], offset: 2 },
    { ids: [104, 105, 106, 107], from: 2, targets: [107, 108], offset: 4 },
    { ids: [106, 107, 108, 109], from: 2, targets: [109, 99], offset: 6 },
  ]);
  // A last window cut short by the document's end: s = [0, 1, 2, 3, 4], windows of 4 advancing 3.
  assert.deepEqual(
    documentWindows([1, 2, 3, 4], { maxLength: 4, stride: 3, bosId: BOS, eosId: null }),
    [
      { ids: [0, 1, 2, 3], from: 0, targets: [1, 2, 3, 4], offset: 0 },
      { ids: [3, 4], from: 1, targets: [-1], offset: 3 },
    ],
  );
  // stride = maxLength: disjoint windows, every position stored from 0.
  assert.deepEqual(
    documentWindows([1, 2, 3, 4, 5], { maxLength: 3, stride: 3, bosId: BOS, eosId: EOS }),
    [
      { ids: [0, 1, 2], from: 0, targets: [1, 2, 3], offset: 0 },
      { ids: [3, 4, 5], from: 0, targets: [4, 5, 99], offset: 3 },
    ],
  );
  // A document shorter than one window: one window, as without a stride.
  assert.deepEqual(documentWindows([7], { maxLength: 8, stride: 4, bosId: BOS, eosId: EOS }), [
    { ids: [0, 7], from: 0, targets: [7, 99], offset: 0 },
  ]);
});

/** Checks the stride invariants of `windows` over the sequence `seq`. */
function checkStrideWindows(
  windows: Window[],
  seq: number[],
  maxLength: number,
  stride: number,
  eos: number | null,
) {
  const stored: number[] = [];
  windows.forEach((w, k) => {
    const what =
      `window ${k} of seq length ${seq.length}, maxLength ${maxLength}, stride ${stride}`;
    assert.equal(w.offset, k * stride, `${what}: offset`);
    assert.ok(w.ids.length <= maxLength && w.ids.length > 0, `${what}: length ${w.ids.length}`);
    assert.deepEqual(w.ids, seq.slice(w.offset, w.offset + w.ids.length), `${what}: ids`);
    assert.equal(
      w.targets.length,
      w.ids.length - w.from,
      `${what}: one target per stored position`,
    );
    for (let p = w.from; p < w.ids.length; p++) {
      const i = w.offset + p;
      stored.push(i);
      const expected = i + 1 < seq.length ? seq[i + 1] : (eos ?? -1);
      assert.equal(w.targets[p - w.from], expected, `${what}: target at ${i}`);
    }
    // Every window but the last is full: the stored tokens get all the context the window allows.
    if (k < windows.length - 1) assert.equal(w.ids.length, maxLength, `${what}: full`);
  });
  assert.deepEqual(stored, seq.map((_, i) => i), "every position stored exactly once, in order");
}

Deno.test("stride windows: every token exactly once, next-token targets, right offsets (random)", () => {
  const rng = new Rng(11);
  for (let trial = 0; trial < 300; trial++) {
    const n = rng.int(40);
    const tokens = Array.from({ length: n }, (_, i) => 1000 + i);
    const maxLength = 1 + rng.int(12);
    const stride = 1 + rng.int(maxLength);
    const bosId = rng.next() < 0.5 ? BOS : null;
    const eosId = rng.next() < 0.5 ? EOS : null;
    if (n === 0 && bosId === null) continue;
    const seq = bosId === null ? tokens : [bosId, ...tokens];
    const w = documentWindows(tokens, { maxLength, stride, bosId, eosId });
    checkStrideWindows(w, seq, maxLength, stride, eosId);
  }
});

/** Plan options with small defaults. */
const plan = (o: Partial<PlanOptions>): PlanOptions => ({
  maxLength: 4,
  stride: 0,
  bosId: null,
  eosId: EOS,
  maxTokens: 0,
  shardTokens: 1000,
  ...o,
});

/** A document of `n` tokens with distinct ids `base + i`. */
const doc = (base: number, n: number) => Array.from({ length: n }, (_, i) => base + i);

Deno.test("planExtraction: split order, document order, windows tagged with their document", () => {
  const tokens = [doc(100, 3), doc(200, 2), doc(300, 5)];
  const shards = planExtraction(tokens, { train: [0, 2], validation: [1] }, plan({}));
  assert.equal(shards.length, 2);
  assert.equal(shards[0].split, "train");
  assert.equal(shards[0].index, 0);
  assert.deepEqual(shards[0].windows.map((w) => [w.doc, w.ids, w.targets]), [
    [0, [100, 101, 102], [101, 102, 99]],
    [2, [300, 301, 302, 303], [301, 302, 303, -1]],
  ]);
  assert.equal(shards[0].tokens, 7);
  assert.equal(shards[1].split, "validation");
  assert.equal(shards[1].index, 0);
  assert.deepEqual(shards[1].windows.map((w) => [w.doc, w.ids]), [[1, [200, 201]]]);
  assert.equal(shards[1].tokens, 2);
});

Deno.test("planExtraction: max_tokens counts whole windows per split", () => {
  // Stride windows of 4 advancing 4 over a 10-token document: 4 + 4 + 2 tokens.
  const tokens = [doc(100, 10), doc(200, 10), doc(300, 3)];
  const opts = plan({ stride: 4, maxTokens: 5 });
  const shards = planExtraction(tokens, { train: [0, 1], validation: [2] }, opts);
  const train = shards.filter((s) => s.split === "train");
  // 4 < 5, so a second whole window is taken: 8 tokens; then the limit stops everything.
  assert.deepEqual(train.flatMap((s) => s.windows.map((w) => [w.doc, w.offset])), [[0, 0], [0, 4]]);
  assert.equal(train.reduce((n, s) => n + s.tokens, 0), 8);
  // The validation split has its own budget.
  const val = shards.filter((s) => s.split === "validation");
  assert.equal(val.reduce((n, s) => n + s.tokens, 0), 3);
  // Exactly on the limit: stop there.
  const exact = planExtraction(
    tokens,
    { train: [0, 1], validation: [2] },
    plan({ stride: 4, maxTokens: 8 }),
  );
  assert.equal(exact.filter((s) => s.split === "train").reduce((n, s) => n + s.tokens, 0), 8);
  // The limit carries across documents: 10 tokens of doc 0, then the first window of doc 1.
  const across = planExtraction(
    tokens,
    { train: [0, 1], validation: [2] },
    plan({ stride: 4, maxTokens: 11 }),
  );
  assert.deepEqual(
    across.filter((s) => s.split === "train").flatMap((s) =>
      s.windows.map((w) => [w.doc, w.offset])
    ),
    [[0, 0], [0, 4], [0, 8], [1, 0]],
  );
  // 0 means no limit.
  const all = planExtraction(tokens, { train: [0, 1], validation: [2] }, plan({ stride: 4 }));
  assert.equal(all.filter((s) => s.split === "train").reduce((n, s) => n + s.tokens, 0), 20);
});

Deno.test("planExtraction: a shard closes once it holds shard_tokens; indices restart per split", () => {
  const tokens = [doc(100, 10), doc(200, 6), doc(300, 4)];
  // Windows (stride 4): doc 0 → 4, 4, 2 tokens; doc 1 → 4, 2; doc 2 → 4.
  const shards = planExtraction(
    tokens,
    { train: [0, 1], validation: [2] },
    plan({ stride: 4, shardTokens: 6 }),
  );
  assert.deepEqual(
    shards.map((s) => [s.split, s.index, s.tokens, s.windows.map((w) => `${w.doc}@${w.offset}`)]),
    [
      ["train", 0, 8, ["0@0", "0@4"]],
      ["train", 1, 6, ["0@8", "1@0"]],
      ["train", 2, 2, ["1@4"]],
      ["validation", 0, 4, ["2@0"]],
    ],
  );
  // Every stored token is in exactly one shard.
  const total = shards.reduce((n, s) => n + s.tokens, 0);
  assert.equal(total, 10 + 6 + 4);
  for (const s of shards) {
    assert.equal(s.tokens, s.windows.reduce((n, w) => n + w.targets.length, 0));
  }
});

Deno.test("planExtraction: an empty split gives no shard", () => {
  const shards = planExtraction([doc(1, 3)], { train: [0], validation: [] }, plan({}));
  assert.deepEqual(shards.map((s) => s.split), ["train"]);
});

Deno.test("splitDocuments: a partition by document, sorted, with the rounded validation size", () => {
  for (
    const [count, fraction, nVal] of [[10, 0.2, 2], [10, 0.25, 3], [7, 0.5, 4], [100, 0.1, 10]]
  ) {
    const s = splitDocuments(count, fraction, 5);
    assert.equal(s.validation.length, nVal, `${count} × ${fraction}`);
    assert.equal(s.train.length, count - nVal);
    assert.deepEqual([...s.train].sort((a, b) => a - b), s.train, "train sorted");
    assert.deepEqual([...s.validation].sort((a, b) => a - b), s.validation, "validation sorted");
    const all = [...s.train, ...s.validation].sort((a, b) => a - b);
    assert.deepEqual(all, Array.from({ length: count }, (_, i) => i), "each document once");
  }
});

Deno.test("splitDocuments: at least one document on each side", () => {
  assert.deepEqual(splitDocuments(10, 0.01, 0).validation.length, 1);
  assert.deepEqual(splitDocuments(3, 0.99, 0).train.length, 1);
  const two = splitDocuments(2, 0.5, 3);
  assert.equal(two.train.length, 1);
  assert.equal(two.validation.length, 1);
});

Deno.test("splitDocuments: deterministic per seed, different seeds differ", () => {
  assert.deepEqual(splitDocuments(50, 0.2, 7), splitDocuments(50, 0.2, 7));
  const seen = new Set<string>();
  for (let seed = 0; seed < 10; seed++) {
    seen.add(JSON.stringify(splitDocuments(50, 0.2, seed).validation));
  }
  assert.equal(seen.size, 10, "10 seeds gave repeated splits");
  // Not simply the first or last documents.
  const v = splitDocuments(50, 0.2, 1).validation;
  assert.notDeepEqual(v, Array.from({ length: 10 }, (_, i) => i));
  assert.notDeepEqual(v, Array.from({ length: 10 }, (_, i) => 40 + i));
});

Deno.test("splitDocuments: fewer than 2 documents is a UserError", () => {
  for (const count of [0, 1]) {
    assert.throws(
      () => splitDocuments(count, 0.1, 0),
      (e: unknown) =>
        e instanceof UserError && e.message.includes(`${count} document(s)`) &&
        e.message.includes("at least 2 documents"),
    );
  }
});
