// Concept labelling: the chat client against a real HTTP server on 127.0.0.1 with injected faults
// (slow, 429 + Retry-After, 500, truncated body, invalid JSON, JSON without the fields), the cache,
// the key's confinement to the Authorization header, the concurrency limit, detection scoring on
// hand-made answers, context windows on a hand-made embeddings file, and the `concepts` stage
// end to end (LLM and offline) on a hand-made run with untrained SAE and LCBLM weights.
// Run: deno test -A tests/concepts_test.ts

import assert from "node:assert/strict";
import { buildOfflineBackbone } from "../backbone/offline_backbones.ts";
import { selectBackend } from "../core/backends/select_backend.ts";
import { readArrowTable } from "../core/arrow_table.ts";
import { validateConfig } from "../core/config.ts";
import { EmbeddingsReader, EmbeddingsWriter } from "../core/embeddings_store.ts";
import { Rng } from "../core/rng.ts";
import { encodeSafetensors } from "../core/train/safetensors.ts";
import { Standardizer } from "../core/train/standardizer.ts";
import { UserError } from "../core/user_error.ts";
import { collectContexts } from "../eval/concept_contexts.ts";
import {
  detectionScore,
  labelAndScore,
  type Labeller,
  parseDetection,
} from "../eval/concept_labels.ts";
import { LlmClient } from "../eval/llm_client.ts";
import { Lcblm } from "../models/lcblm.ts";
import { LinearHead } from "../models/linear_head.ts";
import { Sae } from "../models/sae.ts";
import { concepts } from "../stages/concepts.ts";

const ROOT = await Deno.makeTempDir({ prefix: "concepts_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(ROOT, { recursive: true }));
const KEY = "sk-test-7f3a9c-SECRET";

// ---------------------------------------------------------------------------------------------
// A chat-completions server with fault injection. Conversations are keyed by their first user
// message; `plan(index, attempt)` decides what the attempt-th request of the index-th
// conversation gets.

type Fault =
  | "ok"
  | "slow"
  | "429"
  | "500"
  | "truncated"
  | "invalid-json"
  | "no-fields"
  | "no-choices";

interface Server {
  url: string;
  calls: number;
  maxInFlight: number;
  auth: Set<string | null>;
  bodies: Array<{ messages: Array<{ role: string; content: string }> }>;
  /** How often each fault was served. */
  served: Map<Fault, number>;
  close(): Promise<void>;
}

function chatServer(
  plan: (index: number, attempt: number, prompt: string) => Fault,
  answer: (prompt: string, index: number) => string,
  delayMs = 2,
): Server {
  const conversations = new Map<string, { index: number; attempts: number }>();
  let inFlight = 0;
  const served = new Map<Fault, number>();
  const closing = new AbortController();
  const state = {
    calls: 0,
    maxInFlight: 0,
    auth: new Set<string | null>(),
    bodies: [] as Server["bodies"],
  };
  const chat = (content: string) =>
    Response.json({ id: "x", choices: [{ index: 0, message: { role: "assistant", content } }] });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    state.calls++;
    inFlight++;
    state.maxInFlight = Math.max(state.maxInFlight, inFlight);
    try {
      state.auth.add(req.headers.get("authorization"));
      const body = await req.json();
      state.bodies.push(body);
      const prompt = body.messages.find((m: { role: string }) => m.role === "user").content;
      const conv = conversations.get(prompt) ?? { index: conversations.size, attempts: 0 };
      conversations.set(prompt, conv);
      const fault = plan(conv.index, conv.attempts++, prompt);
      served.set(fault, (served.get(fault) ?? 0) + 1);
      await sleep(delayMs, closing.signal);
      switch (fault) {
        case "slow":
          await sleep(2000, closing.signal);
          return chat(answer(prompt, conv.index));
        case "429":
          return new Response("slow down", { status: 429, headers: { "retry-after": "1" } });
        case "500":
          return new Response("boom", { status: 500 });
        case "truncated": {
          const full = JSON.stringify({ choices: [{ message: { content: answer(prompt, 0) } }] });
          const stream = new ReadableStream({
            start(c) {
              c.enqueue(new TextEncoder().encode(full.slice(0, 20)));
              c.error(new Error("connection cut"));
            },
          });
          return new Response(stream, { headers: { "content-type": "application/json" } });
        }
        case "invalid-json":
          return new Response('{"choices": [{"message": ', { status: 200 });
        case "no-fields":
          return chat('{"name": "a concept", "others": []}');
        case "no-choices":
          return Response.json({ id: "x", object: "chat.completion" });
        default:
          return chat(answer(prompt, conv.index));
      }
    } finally {
      inFlight--;
    }
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/v1`,
    get calls() {
      return state.calls;
    },
    get maxInFlight() {
      return state.maxInFlight;
    },
    auth: state.auth,
    bodies: state.bodies,
    served,
    close: async () => {
      closing.abort();
      await server.shutdown();
    },
  };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done);
  });
}

const labelAnswer = (_: string, index: number) =>
  JSON.stringify({ concept: `concept ${index}`, alternatives: ["other"] });
const isLabelPrompt = (prompt: string) => prompt.includes("Name the concept");
const answerAny = (prompt: string, index: number) =>
  isLabelPrompt(prompt) ? labelAnswer(prompt, index) : '{"fits": [1, 2]}';
const noWait = { sleep: () => Promise.resolve() };

// ---------------------------------------------------------------------------------------------
// The client on its own.

Deno.test("client: 429 honours Retry-After in seconds and as an HTTP date", async () => {
  const waits: number[] = [];
  const server = chatServer((_, attempt) => attempt === 0 ? "429" : "ok", answerAny);
  const client = new LlmClient({
    baseUrl: server.url,
    model: "m",
    sleep: (ms) => (waits.push(ms), Promise.resolve()),
  });
  const out = await client.complete([{ role: "user", content: "q" }], (t) => t);
  assert.ok(out.ok);
  assert.deepEqual(waits, [1000]);
  await server.close();

  // An HTTP date three seconds after the injected clock's now.
  const now = Date.UTC(2030, 0, 1, 12, 0, 0);
  const dated = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    const headers = { "retry-after": new Date(now + 3000).toUTCString() };
    return new Response("", { status: 429, headers });
  });
  const waits2: number[] = [];
  const c2 = new LlmClient({
    baseUrl: `http://127.0.0.1:${dated.addr.port}`,
    model: "m",
    maxTries: 2,
    now: () => now,
    sleep: (ms) => (waits2.push(ms), Promise.resolve()),
  });
  const failed = await c2.complete([{ role: "user", content: "q" }], (t) => t);
  assert.deepEqual(waits2, [3000]);
  assert.equal(
    !failed.ok && failed.reason,
    "gave up after 2 tries; last: HTTP 429 Too Many Requests",
  );
  await dated.shutdown();
});

Deno.test("client: 5xx backs off exponentially with jitter, gives up after max tries, caches no outage", async () => {
  const waits: number[] = [];
  const server = chatServer(() => "500", answerAny);
  const dir = `${ROOT}/cache-500`;
  const options = {
    baseUrl: server.url,
    model: "m",
    maxTries: 4,
    backoffMs: 100,
    cacheDir: dir,
    sleep: (ms: number) => (waits.push(ms), Promise.resolve()),
  };
  const out = await new LlmClient(options).complete([{ role: "user", content: "q" }], (t) => t);
  assert.equal(
    !out.ok && out.reason,
    "gave up after 4 tries; last: HTTP 500 Internal Server Error",
  );
  assert.equal(out.tries, 4);
  assert.equal(waits.length, 3);
  waits.forEach((w, i) => assert.ok(w >= 50 * 2 ** i && w < 100 * 2 ** i, `wait ${i}: ${w}`));
  // An unreachable endpoint is not a result: nothing cached, the next run asks again.
  assert.deepEqual(safeList(dir), []);
  await new LlmClient(options).complete([{ role: "user", content: "q" }], (t) => t);
  assert.equal(server.calls, 8);
  await server.close();
});

function safeList(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch {
    return [];
  }
}

Deno.test("client: a malformed answer is re-asked with the parse error, then cached", async () => {
  const server = chatServer((_, attempt) => attempt === 0 ? "no-fields" : "ok", answerAny);
  const dir = `${ROOT}/cache-reask`;
  const parse = (t: string) => {
    const v = JSON.parse(t);
    if (typeof v.concept !== "string") throw new Error('"concept" must be a non-empty string');
    return v.concept as string;
  };
  const ask = () =>
    new LlmClient({ baseUrl: server.url, model: "m", cacheDir: dir, ...noWait })
      .complete([{ role: "user", content: "Name the concept" }], parse);
  const out = await ask();
  assert.ok(out.ok && out.value === "concept 0" && out.tries === 2);
  const second = server.bodies[1].messages;
  assert.equal(second.length, 3);
  assert.equal(second[1].content, '{"name": "a concept", "others": []}');
  assert.match(second[2].content, /could not be used: "concept" must be a non-empty string/);
  const again = await ask();
  assert.ok(again.ok && again.cached && again.value === "concept 0");
  assert.equal(server.calls, 2);
  await server.close();
});

Deno.test("client: the key goes only into the Authorization header; echoes are redacted", async () => {
  const echo = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => new Response(`denied for ${req.headers.get("authorization")}`, { status: 403 }),
  );
  const client = new LlmClient({
    baseUrl: `http://127.0.0.1:${echo.addr.port}/v1`,
    model: "m",
    apiKey: KEY,
    cacheDir: `${ROOT}/cache-echo`,
    ...noWait,
  });
  const out = await client.complete([{ role: "user", content: "q" }], (t) => t);
  assert.ok(!out.ok);
  assert.equal(out.reason, "failed: HTTP 403 Forbidden: denied for Bearer [redacted]");
  assert.deepEqual(safeList(`${ROOT}/cache-echo`), []);
  await echo.shutdown();
});

Deno.test("client: every fault that never stops ends in a failure that says which", async () => {
  const expected: Array<[Fault, RegExp]> = [
    ["slow", /; last: timed out after 0.2 s$/],
    ["truncated", /; last: network error: /],
    ["invalid-json", /; last: non-JSON response body: \{"choices"/],
    ["no-choices", /; last: response without choices\[0\]\.message\.content: /],
    ["no-fields", /; last: malformed answer: not a concept$/],
  ];
  for (const [fault, reason] of expected) {
    const server = chatServer(() => fault, answerAny);
    const client = new LlmClient({
      baseUrl: server.url,
      model: "m",
      maxTries: 2,
      timeoutMs: 200,
      ...noWait,
    });
    const out = await client.complete([{ role: "user", content: "q" }], (t) => {
      if (typeof JSON.parse(t).concept !== "string") throw new Error("not a concept");
      return t;
    });
    assert.ok(!out.ok && out.tries === 2, fault);
    assert.match(out.reason, /^gave up after 2 tries/);
    assert.match(out.reason, reason);
    await server.close();
  }
});

Deno.test("stage: a configured endpoint whose key variable is unset stops with what to do", async () => {
  Deno.env.delete("LCBLM_UNSET_KEY");
  const cfg = stageConfig(`${ROOT}/nowhere`, {
    base_url: "http://127.0.0.1:9/v1",
    api_key_env: "LCBLM_UNSET_KEY",
  });
  await assert.rejects(
    concepts(cfg, { log: () => {} }),
    (e: Error) =>
      e instanceof UserError &&
      /\$LCBLM_UNSET_KEY is not set; export LCBLM_UNSET_KEY=/.test(e.message),
  );
});

Deno.test("client: concurrency never exceeds the limit (server-side count)", async () => {
  const server = chatServer(() => "ok", answerAny, 30);
  const client = new LlmClient({ baseUrl: server.url, model: "m", concurrency: 3, ...noWait });
  const outs = await Promise.all(
    Array.from(
      { length: 12 },
      (_, i) => client.complete([{ role: "user", content: `q${i}` }], (t) => t),
    ),
  );
  assert.ok(outs.every((o) => o.ok));
  assert.equal(server.calls, 12);
  assert.equal(server.maxInFlight, 3);
  assert.equal(client.stats.maxInFlight, 3);
  await server.close();
});

// ---------------------------------------------------------------------------------------------
// Scoring and contexts.

Deno.test("detection scoring on hand-made answers, against another latent's label", async () => {
  // Hand-made: truth [T, T, F, F, F], answer fits 1 and 3 → tp 1, fn 1, fp 1, tn 2.
  const s = detectionScore([true, true, false, false, false], parseDetection('{"fits":[3,1]}', 5));
  assert.deepEqual(s, { n: 5, accuracy: 3 / 5, precision: 1 / 2, recall: 1 / 2, f1: 1 / 2 });

  // A labeller that names a latent by a word and says a context fits when it contains the word.
  const labeller: Labeller = {
    name: "test",
    label: (input) =>
      Promise.resolve(
        input.frequentTokens[0] === "fail"
          ? { ok: false, reason: "gave up" }
          : { ok: true, value: { concept: input.frequentTokens[0], alternatives: [] } },
      ),
    detect: (label, contexts) =>
      Promise.resolve({ ok: true, value: contexts.map((c) => c.includes(label.concept)) }),
  };
  const task = (word: string) => ({
    input: { examples: [], maxActivation: 1, topTokens: [], frequentTokens: [word] },
    heldOutActive: [`a ${word}`, `b ${word}`],
    heldOutInactive: ["c", "d", "e"],
  });
  const results = await labelAndScore([task("whale"), task("ship"), task("fail")], labeller, 3);
  assert.equal(results[2].status, "failed");
  assert.equal(results[2].reason, "gave up");
  for (const r of results.slice(0, 2)) {
    assert.deepEqual(r.detection, { n: 5, accuracy: 1, precision: 1, recall: 1, f1: 1 });
    // The other label fits nothing here: tn 3, fn 2.
    assert.deepEqual(r.baseline, { n: 5, accuracy: 3 / 5, precision: 0, recall: 0, f1: 0 });
  }
  assert.equal(results[0].baselineFrom, 1);
  assert.equal(results[1].baselineFrom, 0);
});

Deno.test("contexts: top, quantile, held-out and silent windows on a hand-made embeddings file", async () => {
  // Two documents: rows 0–5 (ids 100–105), rows 6–9 (ids 200–203). d = m = 3, activation = x.
  const acts = [
    [0, 0, 0],
    [0, 0, 0],
    [5, 0, 0],
    [0, 0, 0],
    [1, 0, 0],
    [0, 0, 0],
    [0, 0, 0],
    [3, 0, 0],
    [0, 0, 0],
    [0, 2, 0],
  ];
  const path = `${ROOT}/hand.h5`;
  const w = await EmbeddingsWriter.create(path, 3);
  const ids = Int32Array.from([100, 101, 102, 103, 104, 105, 200, 201, 202, 203]);
  w.append("validation", {
    embeddings: Float32Array.from(acts.flat()),
    input_ids: ids,
    next_ids: ids,
    doc_index: Int32Array.from([0, 0, 0, 0, 0, 0, 1, 1, 1, 1]),
    position: Int32Array.from([0, 1, 2, 3, 4, 5, 0, 1, 2, 3]),
  });
  w.close();
  const reader = await EmbeddingsReader.open(path);
  const source = { rows: 10, read: (s: number, e: number) => reader.read("validation", s, e) };
  const settings = {
    examples: 2,
    window: 2,
    windowAfter: 1,
    heldOutActive: 1,
    heldOutInactive: 2,
    maxTokens: 0,
    seed: 1,
    blockRows: 4,
  };
  const got = collectContexts(source, (x) => x, 3, 0, settings);
  assert.equal(got.evaluated, 10);
  assert.deepEqual(got.live.map((l) => l.latent), [0, 1]); // latent 2 never fires
  const [l0, l1] = got.live;
  assert.equal(l0.fires, 3);
  assert.equal(l0.frequency, 0.3);
  assert.equal(l0.maxActivation, 5);
  assert.equal(l0.meanActivation, 3);
  assert.deepEqual(l0.frequentTokens, [{ id: 102, count: 1 }, { id: 104, count: 1 }, {
    id: 201,
    count: 1,
  }]);
  const window = (c: { row: number; ids: number[]; peak: number; activation: number }) => ({
    row: c.row,
    ids: c.ids,
    peak: c.peak,
    activation: c.activation,
  });
  // Top: row 2 → rows 0..3; the window stops at the start of the split.
  assert.deepEqual(window(l0.examples[0]), {
    row: 2,
    ids: [100, 101, 102, 103],
    peak: 2,
    activation: 5,
  });
  assert.equal(l0.examples[0].source, "top");
  // Rows 4 and 7 split between the held-out context and the quantile example.
  const expected = new Map([
    [4, { row: 4, ids: [102, 103, 104, 105], peak: 2, activation: 1 }],
    // Row 7: two tokens before would reach row 5 of the other document: cut at row 6.
    [7, { row: 7, ids: [200, 201, 202], peak: 1, activation: 3 }],
  ]);
  const others = [l0.examples[1], l0.heldOutActive[0]];
  assert.deepEqual(new Set(others.map((c) => c.row)), new Set([4, 7]));
  for (const c of others) assert.deepEqual(window(c), expected.get(c.row));
  assert.equal(l0.examples[1].source, "quantile 1/1");
  // Latent 1 fires once, at the last row: the window stops at the end of the split.
  assert.deepEqual(window(l1.examples[0]), {
    row: 9,
    ids: [201, 202, 203],
    peak: 2,
    activation: 2,
  });
  assert.equal(l1.heldOutActive.length, 0);
  assert.equal(l1.heldOutInactive.length, 2);
  for (const c of [...l0.heldOutInactive, ...l1.heldOutInactive]) {
    assert.equal(c.activation, 0);
    assert.equal(c.ids[c.peak], ids[c.row]);
  }
  // Only the first 5 rows evaluated.
  const first = collectContexts(source, (x) => x, 3, 0, { ...settings, maxTokens: 5 });
  assert.equal(first.evaluated, 5);
  assert.deepEqual(first.live.map((l) => [l.latent, l.fires]), [[0, 2]]);
  reader.close();
});

// ---------------------------------------------------------------------------------------------
// The stage on a hand-made run: random embeddings over real token ids of the test tokenizer,
// untrained SAE and LCBLM weights with latent heads, as the training stages would save them.

const MODEL = `${ROOT}/tiny-gpt2-test`;
await buildOfflineBackbone("tiny-gpt2-test", MODEL);
const D = 32, VOCAB = 512;

const stageConfig = (dir: string, concepts: Record<string, unknown>) =>
  validateConfig({
    run: { dir, seeds: [0] },
    backbone: { model: MODEL, judge: `${ROOT}/judge` },
    train: { backend: "wasm" },
    sae: { k: 4, expansion: 2 },
    lcblm: { concepts: 8, embedding_dim: 4, prior: 0.3 },
    concepts: {
      max_latents: 5,
      contexts: 4,
      window: 6,
      window_after: 2,
      held_out_active: 3,
      held_out_inactive: 3,
      max_tries: 4,
      concurrency: 3,
      ...concepts,
    },
  });

async function makeRun(dir: string): Promise<void> {
  const rng = new Rng(5);
  const rows = 400;
  await Deno.mkdir(dir, { recursive: true });
  const w = await EmbeddingsWriter.create(`${dir}/embeddings.h5`, D);
  w.append("validation", {
    embeddings: Float32Array.from({ length: rows * D }, () => rng.normal()),
    input_ids: Int32Array.from({ length: rows }, () => 3 + rng.int(VOCAB - 3)),
    next_ids: new Int32Array(rows),
    doc_index: Int32Array.from({ length: rows }, (_, i) => Math.floor(i / 50)),
    position: Int32Array.from({ length: rows }, (_, i) => i % 50),
  });
  w.setAttribute("model_id", MODEL);
  w.close();
  const cfg = stageConfig(dir, {});
  const norm = new Standardizer(new Float32Array(D), new Float32Array(D).fill(1)).toTensors();
  const save = async (path: string, tensors: Parameters<typeof encodeSafetensors>[0]) => {
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    await Deno.writeFile(path, encodeSafetensors(tensors));
  };
  const head = async (path: string, inputs: number) => {
    const h = new LinearHead("latent_head", inputs, VOCAB, 0, { kind: "random", seed: 1 });
    await save(path, h.toTensors());
    h.dispose();
  };
  const sample = Float32Array.from({ length: 64 * D }, () => rng.normal());
  const sae = new Sae(D, cfg.sae, 0, sample);
  await save(`${dir}/sae/topk_sae/seed-0/model.safetensors`, { ...sae.toTensors(), ...norm });
  sae.dispose();
  await head(`${dir}/sae/topk_sae/seed-0/latent_head/head.safetensors`, 2 * D);
  const lcblm = new Lcblm(D, cfg.lcblm, 0);
  await save(`${dir}/lcblm/lcblm/seed-0/model.safetensors`, { ...lcblm.toTensors(), ...norm });
  lcblm.dispose();
  await head(`${dir}/lcblm/lcblm/seed-0/latent_head/head.safetensors`, 8 * 4);
}

const RUN = `${ROOT}/run`;
await selectBackend(stageConfig(RUN, {}).train, () => {});
await makeRun(RUN);

async function filesUnder(dir: string): Promise<Array<{ path: string; text: string }>> {
  const out = [];
  for (const e of Deno.readDirSync(dir)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await filesUnder(path));
    else out.push({ path, text: new TextDecoder().decode(await Deno.readFile(path)) });
  }
  return out;
}

Deno.test("stage: half the calls fail, every latent ends labelled or failed-with-reason; replay makes zero calls", async () => {
  // Every conversation's first request fails, cycling through the faults, so about half of all
  // calls fail; conversation 0 (a labelling prompt: labels are asked first) only ever answers
  // without the fields.
  const faults: Fault[] = [
    "slow",
    "429",
    "500",
    "truncated",
    "invalid-json",
    "no-fields",
    "no-choices",
  ];
  const server = chatServer(
    (index, attempt, prompt) =>
      index === 0 && isLabelPrompt(prompt)
        ? "no-fields"
        : attempt === 0
        ? faults[index % faults.length]
        : "ok",
    answerAny,
  );
  Deno.env.set("LCBLM_TEST_KEY", KEY);
  const cfg = stageConfig(RUN, {
    base_url: server.url,
    api_key_env: "LCBLM_TEST_KEY",
    timeout_s: 0.5,
  });
  const logs: string[] = [];
  const waits: number[] = [];
  const options = {
    log: (l: string) => logs.push(l),
    client: { sleep: (ms: number) => (waits.push(ms), Promise.resolve()) },
  };
  const first = await concepts(cfg, options);
  assert.equal(first.message, null);
  assert.deepEqual(first.rows.map((r) => r.model), ["sae", "lcblm"]);
  assert.ok(waits.includes(1000), "Retry-After honoured");
  for (const f of faults) assert.ok(server.served.get(f), `fault ${f} served`);
  const failedShare = 1 - server.served.get("ok")! / server.calls;
  assert.ok(failedShare > 0.45 && failedShare < 0.6, `failed share ${failedShare}`);

  let failed = 0;
  for (const model of ["sae", "lcblm"]) {
    const dir = `${RUN}/concepts/${model}/seed-0`;
    const dict = JSON.parse(await Deno.readTextFile(`${dir}/dictionary.json`));
    assert.equal(dict.labeller, "llm:gpt-4o-mini");
    assert.equal(dict.entries.length, 5);
    for (const e of dict.entries) {
      if (e.status === "labelled") {
        assert.match(e.concept, /^concept \d+$/);
        assert.equal(e.reason, null);
        assert.ok(e.detection && e.baseline, `latent ${e.latent} scored`);
      } else {
        failed++;
        assert.equal(e.status, "failed");
        assert.match(e.reason, /^gave up after 4 tries; last: malformed answer: "concept" must be/);
      }
      assert.equal(e.examples.length, 4);
      assert.ok(e.examples.every((x: { text: string }) => /⟦[\s\S]*⟧/.test(x.text)));
    }
    const html = await Deno.readTextFile(`${dir}/dictionary.html`);
    assert.match(html, /<mark>/);
    const table = await readArrowTable(`${dir}/scores.arrow`);
    assert.deepEqual(
      table.map((r) => r.latent),
      dict.entries.map((e: { latent: number }) => e.latent),
    );
  }
  assert.equal(failed, 1);

  // The key: in every request's Authorization header, nowhere in the outputs or logs.
  assert.deepEqual([...server.auth], [`Bearer ${KEY}`]);
  for (const f of await filesUnder(`${RUN}/concepts`)) assert.ok(!f.text.includes(KEY), f.path);
  assert.ok(!logs.join("\n").includes(KEY));

  // A second run replays from the cache: zero calls, the same dictionaries.
  const calls = server.calls;
  const before = await Deno.readTextFile(`${RUN}/concepts/sae/seed-0/dictionary.json`);
  const second = await concepts(cfg, options);
  assert.equal(server.calls, calls);
  assert.equal(second.stats?.requests, 0);
  assert.deepEqual(second.rows, first.rows);
  assert.equal(await Deno.readTextFile(`${RUN}/concepts/sae/seed-0/dictionary.json`), before);
  await server.close();
  Deno.env.delete("LCBLM_TEST_KEY");
});

Deno.test("stage: without an endpoint, the offline labeller, clearly marked, and how to configure one", async () => {
  const dir = `${ROOT}/run-offline`;
  await Deno.mkdir(dir);
  await makeRun(dir);
  const logs: string[] = [];
  const out = await concepts(stageConfig(dir, { max_latents: 0 }), { log: (l) => logs.push(l) });
  assert.equal(out.labeller, "offline-top-tokens");
  assert.ok(out.message && logs.includes(out.message));
  assert.match(out.message!, /no LLM endpoint is configured/);
  assert.match(out.message!, /base_url = "http:\/\/localhost:11434\/v1"/);
  assert.match(out.message!, /--allow-net=<host>/);
  const dict = JSON.parse(await Deno.readTextFile(`${dir}/concepts/sae/seed-0/dictionary.json`));
  assert.equal(dict.offline, true);
  assert.equal(dict.entries.length, dict.live_latents); // max_latents = 0: all live latents
  for (const e of dict.entries) {
    assert.equal(e.labeller, "offline-top-tokens");
    assert.match(e.concept, /^offline-top-tokens: fires on /);
    assert.equal(e.top_tokens.length, 10);
  }
  assert.match(
    await Deno.readTextFile(`${dir}/concepts/sae/seed-0/dictionary.html`),
    /offline-top-tokens/,
  );
  const rows = await readArrowTable(`${dir}/concepts/lcblm/seed-0/scores.arrow`);
  assert.ok(rows.length > 0 && rows.every((r) => r.labeller === "offline-top-tokens"));
  assert.ok(out.rows.every((r) => r.labeller === "offline-top-tokens"));
});
