// Tests for corpus loading: txt folders, jsonl and csv files, the shipped corpora, empty
// documents, UTF-8 checks and malformed rows. Run: deno test -A tests/corpus_test.ts

import assert from "node:assert/strict";
import { validateConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { UserError } from "../core/user_error.ts";
import { loadCorpus } from "../data/corpus.ts";

const ROOT = await Deno.makeTempDir({ prefix: "corpus_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(ROOT, { recursive: true }));

/** The `[data]` section for a raw `[data]` table, with defaults filled in. */
const data = (raw: Record<string, unknown>): Config["data"] => validateConfig({ data: raw }).data;

/** Asserts `loadCorpus` rejects with a UserError whose message contains every part. */
async function assertRejects(raw: Record<string, unknown>, parts: string[]): Promise<void> {
  let error: unknown = null;
  try {
    await loadCorpus(data(raw));
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof UserError, `expected a UserError, got ${error}`);
  for (const part of parts) {
    assert.ok(error.message.includes(part), `${JSON.stringify(error.message)} lacks "${part}"`);
  }
}

/** Writes files into a new folder under the temp dir; returns the folder. */
async function folder(name: string, files: Record<string, string | Uint8Array>): Promise<string> {
  const dir = `${ROOT}/${name}`;
  await Deno.mkdir(dir, { recursive: true });
  for (const [file, content] of Object.entries(files)) {
    if (typeof content === "string") await Deno.writeTextFile(`${dir}/${file}`, content);
    else await Deno.writeFile(`${dir}/${file}`, content);
  }
  return dir;
}

Deno.test("txt folder: .txt files in name order, other files and folders ignored, empty skipped", async () => {
  const dir = await folder("txt", {
    "b.txt": "second\n",
    "a.txt": "first ünïcode",
    "c.md": "not a txt file",
    "d.txt": "  \n\t \n",
    "e.TXT.bak": "backup",
    "10.txt": "sorted as a string, before a.txt",
  });
  await Deno.mkdir(`${dir}/sub.txt`);
  const corpus = await loadCorpus(data({ source: "txt", path: dir }));
  assert.deepEqual(corpus.documents, [
    { id: "10.txt", text: "sorted as a string, before a.txt", label: null },
    { id: "a.txt", text: "first ünïcode", label: null },
    { id: "b.txt", text: "second\n", label: null },
  ]);
  assert.equal(corpus.skippedEmpty, 1);
  assert.ok(corpus.origin.includes(dir), corpus.origin);
});

Deno.test("txt folder: max_documents keeps the first non-empty documents", async () => {
  const dir = await folder("txt-max", {
    "1.txt": "one",
    "2.txt": " ",
    "3.txt": "three",
    "4.txt": "four",
  });
  const corpus = await loadCorpus(data({ source: "txt", path: dir, max_documents: 2 }));
  assert.deepEqual(corpus.documents.map((d) => d.id), ["1.txt", "3.txt"]);
  const all = await loadCorpus(data({ source: "txt", path: dir, max_documents: 0 }));
  assert.deepEqual(all.documents.map((d) => d.text), ["one", "three", "four"]);
});

Deno.test("jsonl: text and label columns, blank lines ignored, empty texts skipped", async () => {
  const dir = await folder("jsonl", {
    "rows.jsonl": [
      JSON.stringify({ body: "I loved it", stars: 5, extra: true }),
      "",
      JSON.stringify({ body: "   ", stars: 3 }),
      JSON.stringify({ body: 'A "quoted"\nline', stars: "one" }),
      "   ",
      JSON.stringify({ body: "no label", stars: null }),
    ].join("\n") + "\n",
  });
  const corpus = await loadCorpus(
    data({
      source: "jsonl",
      path: `${dir}/rows.jsonl`,
      text_column: "body",
      label_column: "stars",
    }),
  );
  assert.deepEqual(corpus.documents, [
    { id: "line-1", text: "I loved it", label: "5" },
    { id: "line-4", text: 'A "quoted"\nline', label: "one" },
    { id: "line-6", text: "no label", label: null },
  ]);
  assert.equal(corpus.skippedEmpty, 1);
  const unlabelled = await loadCorpus(
    data({ source: "jsonl", path: `${dir}/rows.jsonl`, text_column: "body" }),
  );
  assert.deepEqual(unlabelled.documents.map((d) => d.label), [null, null, null]);
});

Deno.test("csv: quoted commas, quotes and newlines, a label column, a BOM", async () => {
  const dir = await folder("csv", {
    "rows.csv": '\uFEFFid,text,label\n1,"Hello, world",pos\n2,"He said ""hi""\nthen left",neg\n' +
      '3,"  ",pos\n4,plain,neu\n',
  });
  const corpus = await loadCorpus(
    data({ source: "csv", path: `${dir}/rows.csv`, label_column: "label" }),
  );
  assert.deepEqual(corpus.documents.map((d) => [d.text, d.label]), [
    ["Hello, world", "pos"],
    ['He said "hi"\nthen left', "neg"],
    ["plain", "neu"],
  ]);
  assert.equal(corpus.skippedEmpty, 1);
  const ids = corpus.documents.map((d) => d.id);
  assert.equal(new Set(ids).size, ids.length, `ids must be distinct: ${ids}`);
});

Deno.test("csv: a missing text column names the line and the columns it has", async () => {
  const dir = await folder("csv-bad", { "rows.csv": "body,label\nhello,pos\n" });
  await assertRejects({ source: "csv", path: `${dir}/rows.csv` }, [
    `"${dir}/rows.csv"`,
    '"text" is missing',
    '"body", "label"',
  ]);
  await assertRejects({
    source: "csv",
    path: `${dir}/rows.csv`,
    text_column: "body",
    label_column: "kind",
  }, [
    '[data].label_column "kind" is missing',
  ]);
});

Deno.test("moby-dick: 139 chapters, no labels", async () => {
  const corpus = await loadCorpus(data({ source: "moby-dick" }));
  assert.equal(corpus.documents.length, 139);
  assert.equal(corpus.skippedEmpty, 0);
  assert.ok(corpus.documents.every((d) => d.label === null && d.text.trim() !== ""));
  assert.equal(new Set(corpus.documents.map((d) => d.id)).size, 139);
  assert.ok(corpus.documents.some((d) => d.text.includes("Call me Ishmael")));
  const five = await loadCorpus(data({ source: "moby-dick", max_documents: 5 }));
  assert.deepEqual(five.documents, corpus.documents.slice(0, 5));
});

Deno.test("sotu: 233 addresses labelled with the president's party", async () => {
  const corpus = await loadCorpus(data({ source: "sotu" }));
  assert.equal(corpus.documents.length, 233);
  const parties = [...new Set(corpus.documents.map((d) => d.label))].sort();
  assert.deepEqual(parties, [
    "Democratic",
    "Democratic-Republican",
    "Federalist",
    "National Union",
    "Republican",
    "Whig",
    "Whig & Democratic",
    "none",
  ]);
  const first = corpus.documents[0];
  assert.ok(first.id.includes("1790"), first.id);
  assert.equal(first.label, "none"); // George Washington had no party
  assert.ok(corpus.documents.some((d) => d.id.includes("Lincoln") && d.label === "Republican"));
});

Deno.test("a corpus of only empty documents is an error", async () => {
  const dir = await folder("all-empty", { "a.txt": "", "b.txt": " \n " });
  await assertRejects({ source: "txt", path: dir }, ["no non-empty documents"]);
  const jsonl = await folder("all-empty-jsonl", {
    "rows.jsonl": '{"text": ""}\n{"text": "\\n"}\n',
  });
  await assertRejects({ source: "jsonl", path: `${jsonl}/rows.jsonl` }, ["no non-empty documents"]);
  const none = await folder("no-txt", { "a.md": "text" });
  await assertRejects({ source: "txt", path: none }, [`"${none}"`, "no .txt files"]);
});

Deno.test("non-UTF-8 text is an error naming the file and the first bad byte's offset", async () => {
  const enc = new TextEncoder();
  // Offsets 37, 40 (after 20 two-byte characters) and 41 (after 13 three-byte characters + "ab").
  const prefixes = ["x".repeat(37), "é".repeat(20), "ab" + "€".repeat(13)];
  for (const [i, prefix] of prefixes.entries()) {
    const head = enc.encode(prefix);
    const bytes = new Uint8Array([...head, 0xff, ...enc.encode(" tail")]);
    const dir = await folder(`latin-${i}`, { "ok.txt": "fine", "zz.txt": bytes });
    await assertRejects({ source: "txt", path: dir }, [
      `"${dir}/zz.txt"`,
      "not valid UTF-8",
      `offset ${head.length})`,
    ]);
    await Deno.rename(`${dir}/zz.txt`, `${dir}/rows.jsonl`);
    await assertRejects({ source: "jsonl", path: `${dir}/rows.jsonl` }, [
      `"${dir}/rows.jsonl"`,
      `offset ${head.length})`,
    ]);
  }
  // Latin-1 "café" at offset 3, and a file cut inside a multi-byte character at offset 4.
  const latin = await folder("latin-1", {
    "a.txt": new Uint8Array([0x63, 0x61, 0x66, 0xe9, 0x0a]),
  });
  await assertRejects({ source: "txt", path: latin }, ["offset 3)"]);
  const cut = await folder("cut", {
    "a.txt": new Uint8Array([0x61, 0x62, 0x63, 0x64, 0xe2, 0x82]),
  });
  await assertRejects({ source: "txt", path: cut }, ["offset 4)"]);
  const first = await folder("first", { "a.txt": new Uint8Array([0xe2, 0x82, 0x41, 0x42]) });
  await assertRejects({ source: "txt", path: first }, ["offset 0)"]);
  // A later valid file still decodes exactly: no decoder state leaks between files.
  const after = await folder("after", { "a.txt": "é€ after a bad file" });
  const corpus = await loadCorpus(data({ source: "txt", path: after }));
  assert.equal(corpus.documents[0].text, "é€ after a bad file");
});

Deno.test("a missing path is an error naming it", async () => {
  await assertRejects({ source: "txt", path: `${ROOT}/nope` }, [
    `"${ROOT}/nope"`,
    "does not exist",
  ]);
  await assertRejects({ source: "jsonl", path: `${ROOT}/nope.jsonl` }, [
    `"${ROOT}/nope.jsonl"`,
    "does not exist",
  ]);
  await assertRejects({ source: "csv", path: `${ROOT}/nope.csv` }, [
    `"${ROOT}/nope.csv"`,
    "does not exist",
  ]);
  await assertRejects({ source: "jsonl", path: ROOT }, [`"${ROOT}"`, "is a folder"]);
});

Deno.test("jsonl: a line that is not an object, not JSON, or lacks the text column is named", async () => {
  const dir = await folder("jsonl-bad", {
    "array.jsonl": '{"text": "ok"}\n\n[1, 2]\n',
    "string.jsonl": '{"text": "ok"}\n"just a string"\n',
    "broken.jsonl": '{"text": "ok"}\n{"text": "ok"}\n{"text": \n',
    "missing.jsonl": '{"text": "ok"}\n{"body": "no text", "n": 1}\n',
    "number.jsonl": '{"text": 42}\n',
  });
  await assertRejects({ source: "jsonl", path: `${dir}/array.jsonl` }, ["line 3", "JSON object"]);
  await assertRejects({ source: "jsonl", path: `${dir}/string.jsonl` }, ["line 2", "JSON object"]);
  await assertRejects({ source: "jsonl", path: `${dir}/broken.jsonl` }, ["line 3", "as JSON"]);
  await assertRejects({ source: "jsonl", path: `${dir}/missing.jsonl` }, [
    `"${dir}/missing.jsonl" line 2`,
    '[data].text_column "text" is missing',
    '"body", "n"',
  ]);
  await assertRejects({ source: "jsonl", path: `${dir}/number.jsonl` }, [
    "line 1",
    "not a string (42)",
  ]);
});
