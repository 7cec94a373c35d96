/**
 * Extraction throughput: the extract stage against a bare onnxruntime-node session running the
 * same batches, and a breakdown of where the stage spends its extra time.
 * @module
 */
import * as ort from "onnxruntime-node";
import { type Backbone, loadBackbone } from "../backbone/load_backbone.ts";
import type { Config } from "../core/config_schema.ts";
import { EmbeddingsWriter } from "../core/embeddings_store.ts";
import { loadCorpus } from "../data/corpus.ts";
import { planExtraction, type PlannedWindow } from "../data/extraction_plan.ts";
import { type Split, splitDocuments } from "../data/split.ts";
import { batchRows, extract } from "../stages/extract.ts";
import { median, settle } from "./_stats.ts";

/** One backbone call: the stage's windows and the bare session's ready-made input tensors. */
interface Batch {
  split: Split;
  windows: PlannedWindow[];
  feeds: Record<string, ort.Tensor>;
}

/**
 * Passes of the profile, each over all batches on one session (two sessions taking turns batch
 * by batch slow each other down, so every pass runs alone):
 * - `bare`: bare `session.run` only, all outputs (transformers.js's own fetch);
 * - `bareHiddenOnly`: bare `session.run` fetching only `last_hidden_state` (what the stage
 *   fetches, and the baseline of `ratio`);
 * - `tjsSession`: `run` of the session transformers.js created, on the same tensors;
 * - `hidden`: `backbone.hiddenStates` (the stage's transformers.js call);
 * - `hiddenRows`: + building the stored rows (the stage's own `batchRows`);
 * - `path`: + `EmbeddingsWriter.append` per batch and a writer per shard: the stage's loop body;
 * - `appendOnly`: building rows and appending them without running the backbone.
 */
const PASSES = [
  "bare",
  "bareHiddenOnly",
  "tjsSession",
  "hidden",
  "hiddenRows",
  "path",
  "appendOnly",
] as const;
type Pass = typeof PASSES[number];

/** Medians over the measured rounds, in milliseconds per pass over all batches. */
export interface ThroughputResult {
  /** Stored tokens per pass. */
  tokens: number;
  batches: number;
  /** Median over rounds of (extract() shard loop) / (bare hidden-only pass run right beside it). */
  ratio: number;
  /** Lowest extract() loop time over lowest bare time: the ratio least touched by other load. */
  ratioBest: number;
  /** Preparation outside the loop: corpus loading and tokenising the whole corpus. */
  loadMs: number;
  tokeniseMs: number;
  /** extract(): its shard loop (from its own final progress line), loop + merge, and wall. */
  stageLoopMs: number;
  stageLoopMergeMs: number;
  stageWallMs: number;
  /** The bare pass run beside extract(), fetching only last_hidden_state as the stage does. */
  bareMs: number;
  profile: Record<Pass, number>;
}

/**
 * Measure the stage and a bare session on the same windows, after a warm-up round.
 *
 * @param config Resolved config; `run.dir` must be a scratch folder (it is overwritten).
 * @param rounds Measured rounds after the warm-up.
 * @returns Medians over the rounds.
 */
export async function extractThroughput(
  config: Config,
  rounds: number,
): Promise<ThroughputResult> {
  // 1. Inputs exactly as the stage builds them, timing loading and tokenising separately.
  let t = performance.now();
  const docs = (await loadCorpus(config.data)).documents;
  const loadMs = performance.now() - t;
  const splits = splitDocuments(docs.length, config.data.val_fraction, config.data.split_seed);
  const backbone = await loadBackbone(config.backbone.model, {
    cacheDir: config.backbone.cache_dir,
    workDir: `${config.run.dir}/cache`,
  });
  t = performance.now();
  const tokens = docs.map((d) => backbone.encode(d.text));
  const tokeniseMs = performance.now() - t;
  const ex = config.extract;
  const shards = planExtraction(tokens, splits, {
    maxLength: ex.max_length,
    stride: ex.stride,
    bosId: ex.add_bos ? backbone.bosId : null,
    eosId: ex.add_eos ? backbone.eosId : null,
    maxTokens: ex.max_tokens,
    shardTokens: ex.shard_tokens,
  });
  const bare = await ort.InferenceSession.create(`${backbone.dir}/onnx/model.onnx`);
  const shardBatches = shards.map((s) => {
    const out: Batch[] = [];
    for (let i = 0; i < s.windows.length; i += ex.batch_size) {
      const windows = s.windows.slice(i, i + ex.batch_size);
      out.push({ split: s.split, windows, feeds: bareFeeds(bare, windows) });
    }
    return out;
  });
  const batches = shardBatches.flat();
  const stored = shards.reduce((n, s) => n + s.tokens, 0);
  const tjs = (backbone.model as unknown as { sessions: Record<string, ort.InferenceSession> })
    .sessions.model;
  const scratch = `${config.run.dir}-profile`;
  const passes: Record<Pass, () => Promise<unknown>> = {
    bare: () => runPass(bare, batches),
    bareHiddenOnly: () => runPass(bare, batches, ["last_hidden_state"]),
    tjsSession: () => runPass(tjs, batches),
    hidden: () => pathPass(backbone, shardBatches, { rows: false }),
    hiddenRows: () => pathPass(backbone, shardBatches, { rows: true }),
    path: () => pathPass(backbone, shardBatches, { rows: true, writeTo: scratch }),
    appendOnly: () => pathPass(null, shardBatches, { rows: true, writeTo: scratch }),
  };

  // 2. A warm-up round, then rounds of: extract() and a bare pass side by side (order
  //    alternating, so slow drift in machine load cancels in their ratio), then the profile
  //    passes in a rotating order.
  const samples: Record<string, number[]> = {};
  const keep = (r: number, key: string, ms: number) => {
    if (r > 0) (samples[key] ??= []).push(ms);
  };
  for (let r = 0; r <= rounds; r++) {
    let stage: Record<string, number> = {};
    let bareMs = 0;
    for (const which of r % 2 === 0 ? ["stage", "bare"] : ["bare", "stage"]) {
      await settle();
      if (which === "stage") stage = await stagePass(config, stored);
      else bareMs = await timed(() => runPass(bare, batches, ["last_hidden_state"]));
    }
    for (const [k, v] of Object.entries(stage)) keep(r, k, v);
    keep(r, "bareMs", bareMs);
    keep(r, "ratio", stage.stageLoop / bareMs);
    for (let k = 0; k < PASSES.length; k++) {
      const pass = PASSES[(r + k) % PASSES.length];
      await settle();
      keep(r, pass, await timed(passes[pass]));
    }
  }
  await backbone.dispose();
  await bare.release();
  const m = (key: string) => median(samples[key]);
  return {
    tokens: stored,
    batches: batches.length,
    ratio: m("ratio"),
    ratioBest: Math.min(...samples.stageLoop) / Math.min(...samples.bareMs),
    loadMs,
    tokeniseMs,
    stageLoopMs: m("stageLoop"),
    stageLoopMergeMs: m("stageLoopMerge"),
    stageWallMs: m("stageWall"),
    bareMs: m("bareMs"),
    profile: Object.fromEntries(PASSES.map((p) => [p, m(p)])) as Record<Pass, number>,
  };
}

/** Milliseconds `f` takes. */
async function timed(f: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await f();
  return performance.now() - t;
}

/**
 * The whole extract() into a clean run folder. Its shard-loop time comes from the stage's final
 * progress line (printed right after the loop); `tokensPerSecond` also counts the merge.
 */
async function stagePass(config: Config, stored: number): Promise<Record<string, number>> {
  await Deno.remove(config.run.dir, { recursive: true }).catch(() => {});
  const lines: string[] = [];
  const log = console.error;
  console.error = (...args: unknown[]) => lines.push(args.join(" "));
  let summary;
  const t = performance.now();
  try {
    summary = await extract(config, { force: true });
  } finally {
    console.error = log;
  }
  const wall = performance.now() - t;
  const done = Object.values(summary.tokens).reduce((a, b) => a + b, 0);
  const last = lines.findLast((l) => l.startsWith("extract: ") && l.includes(" tok/s"));
  const rate = Number(last?.match(/ ([\d.]+) tok\/s/)?.[1]);
  if (done !== stored || !Number.isFinite(rate) || rate <= 0) {
    throw new Error(`extract() stored ${done} tokens (expected ${stored}); last line "${last}"`);
  }
  return {
    stageLoop: (stored / rate) * 1000,
    stageLoopMerge: (stored / summary.tokensPerSecond) * 1000,
    stageWall: wall,
  };
}

/**
 * The stage's loop body over all batches, or parts of it: hiddenStates (zeros instead when
 * `backbone` is null), then optionally the rows, then optionally appends to a writer per shard.
 */
async function pathPass(
  backbone: Backbone | null,
  shardBatches: Batch[][],
  options: { rows: boolean; writeTo?: string },
): Promise<void> {
  const d = backbone?.d ?? 128;
  if (options.writeTo) await Deno.mkdir(options.writeTo, { recursive: true });
  for (const [i, shard] of shardBatches.entries()) {
    const writer = options.writeTo
      ? await EmbeddingsWriter.create(`${options.writeTo}/shard-${i}.h5`, d)
      : null;
    for (const { split, windows } of shard) {
      const ids = windows.map((w) => w.ids);
      const hidden = backbone
        ? await backbone.hiddenStates(ids)
        : new Float32Array(ids.length * Math.max(...ids.map((s) => s.length)) * d);
      if (!options.rows) continue;
      const rows = batchRows(windows, hidden, d);
      writer?.append(split, rows);
    }
    writer?.close();
  }
  if (options.writeTo) await Deno.remove(options.writeTo, { recursive: true });
}

/** Every batch through `session.run`, optionally fetching only some outputs. */
async function runPass(
  session: ort.InferenceSession,
  batches: Batch[],
  fetches?: string[],
): Promise<void> {
  for (const b of batches) {
    if (fetches) await session.run(b.feeds, fetches);
    else await session.run(b.feeds);
  }
}

/**
 * The tensors transformers.js feeds the graph for a right-padded batch: ids, mask, position ids
 * (cumulative mask, 1 at padding, as its `create_position_ids`) and empty past key/values.
 */
function bareFeeds(session: ort.InferenceSession, windows: PlannedWindow[]) {
  const b = windows.length;
  const len = Math.max(...windows.map((w) => w.ids.length));
  const ids = new BigInt64Array(b * len); // [b, len]
  const mask = new BigInt64Array(b * len);
  const pos = new BigInt64Array(b * len).fill(1n);
  windows.forEach((w, i) =>
    w.ids.forEach((id, j) => {
      ids[i * len + j] = BigInt(id);
      mask[i * len + j] = 1n;
      pos[i * len + j] = BigInt(j);
    })
  );
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor("int64", ids, [b, len]),
    attention_mask: new ort.Tensor("int64", mask, [b, len]),
    position_ids: new ort.Tensor("int64", pos, [b, len]),
  };
  for (const meta of session.inputMetadata) {
    if (!meta.name.startsWith("past_key_values") || !meta.isTensor) continue;
    // [b, heads, past = 0, head dim]
    const shape = meta.shape.map((s) => typeof s === "number" ? s : s.includes("batch") ? b : 0);
    feeds[meta.name] = new ort.Tensor("float32", new Float32Array(0), shape);
  }
  return feeds;
}
