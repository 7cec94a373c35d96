/**
 * Benchmark of the extract stage: throughput against a bare onnxruntime session, HDF5 store
 * rates, and peak memory at two corpus sizes. Prints machine-readable lines on stdout.
 *
 * Run from the repo root: `deno task bench:extract` (flags: `--parts=1,2,3 --rounds=5
 * --slice=32768 --rss-tokens=50000,300000 --rss-repeats=3 --h5-repeats=3`).
 * @module
 */
import { parseArgs } from "node:util";
import { loadConfig } from "../core/config.ts";
import { extractThroughput } from "./_extract_throughput.ts";
import { h5Throughput } from "./_h5_throughput.ts";
import { peakRss } from "./_peak_rss.ts";
import { fixed } from "./_stats.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    parts: { type: "string", default: "1,2,3" },
    rounds: { type: "string", default: "5" },
    slice: { type: "string", default: "32768" },
    "rss-tokens": { type: "string", default: "50000,300000" },
    "rss-repeats": { type: "string", default: "3" },
    "h5-repeats": { type: "string", default: "3" },
  },
});
const parts = new Set(values.parts.split(","));
const scratch = await Deno.makeTempDir({ prefix: "lcblm-bench-" });
const loadStart = loadAverage();

try {
  // 1. Stage vs bare session on the same windows: `slice` stored tokens per split.
  if (parts.has("1")) {
    const { config } = await loadConfig([
      `--run.dir=${scratch}/extract`,
      `--extract.max_tokens=${values.slice}`,
    ]);
    const r = await extractThroughput(config, Number(values.rounds));
    const rate = (ms: number) => fixed(r.tokens / (ms / 1000));
    console.log(
      `extract tokens/s: stage=${rate(r.stageLoopMs)} bare=${rate(r.bareMs)} ratio=${
        fixed(r.ratio, 3)
      }`,
    );
    const list = (o: Record<string, number>) =>
      Object.entries(o).map(([k, v]) => `${k}=${fixed(v, 1)}`).join(" ");
    const passes = {
      stage_loop: r.stageLoopMs,
      stage_loop_merge: r.stageLoopMergeMs,
      stage_wall: r.stageWallMs,
      corpus_load: r.loadMs,
      tokenise_all: r.tokeniseMs,
      bare_run: r.bareMs,
    };
    console.log(
      `extract passes ms: tokens=${r.tokens} batches=${r.batches} ${list(passes)} ratio_best=${
        fixed(r.ratioBest, 3)
      }`,
    );
    const p = r.profile;
    const profile = {
      bare_run: p.bare,
      bare_run_hidden_only: p.bareHiddenOnly,
      tjs_session_run: p.tjsSession,
      hidden_states: p.hidden,
      hidden_states_rows: p.hiddenRows,
      hidden_states_rows_append: p.path,
      rows_append_only: p.appendOnly,
    };
    console.log(`extract profile ms: ${list(profile)}`);
  }

  // 2. HDF5 store: d=768 float32 rows in 4096-row blocks, 20 blocks (252 MB of embeddings).
  if (parts.has("2")) {
    const h5 = await h5Throughput(scratch, {
      d: 768,
      blockRows: 4096,
      blocks: 20,
      repeats: Number(values["h5-repeats"]),
    });
    console.log(`h5 write MB/s=${fixed(h5.writeMBs)} read MB/s=${fixed(h5.readMBs)}`);
    console.log(`h5 detail: MB=${fixed(h5.megabytes)} d=768 block_rows=4096`);
  }

  // 3. Peak RSS of fresh `stages/extract.ts` processes at two corpus sizes.
  if (parts.has("3")) {
    const sizes = values["rss-tokens"].split(",").map(Number);
    const runs = [];
    for (const n of sizes) {
      runs.push(await peakRss(scratch, n, Number(values["rss-repeats"])));
    }
    const each = runs.map((r) => `tokens=${r.tokens} rss=${fixed(r.rssMB)}`).join("; ");
    const ratio = runs[runs.length - 1].rssMB / runs[0].rssMB;
    console.log(`peak RSS MB: ${each}; ratio=${fixed(ratio, 3)}`);
    console.log(
      `peak RSS detail: ${
        runs.map((r) => `max_tokens=${r.maxTokens} samples=${r.samplesMB.map((x) => fixed(x))}`)
          .join("; ")
      }`,
    );
  }
  // Other work on the machine slows onnxruntime's spinning thread pool badly: say how busy it was.
  console.log(
    `bench conditions: cpus=${navigator.hardwareConcurrency} loadavg_start=${loadStart} loadavg_end=${loadAverage()}`,
  );
} finally {
  await Deno.remove(scratch, { recursive: true });
}

/** The 1-minute load average, or "?" where /proc is not there. */
function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
  } catch {
    return "?";
  }
}
