import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { loadCheckpoint } from "../core/train/checkpoint.ts";
import { learningRate } from "../core/train/lr_schedule.ts";
import { decodeSafetensors, encodeSafetensors } from "../core/train/safetensors.ts";
import { DivergedError, trainLoop } from "../core/train/train_loop.ts";
import { NextTokenMetrics } from "../eval/next_token_metrics.ts";
import { firingHistogram, ReconstructionMetrics } from "../eval/reconstruction_metrics.ts";
import { LINEAR_SCHEDULE, linearBatches, LinearTrainable } from "./fixtures/linear_trainable.ts";

const PYTHON = "/usr/bin/python3";
const hasNumpy = (() => {
  try {
    return new Deno.Command(PYTHON, { args: ["-c", "import numpy"] }).outputSync().success;
  } catch {
    return false;
  }
})();
if (!hasNumpy) console.log(`skip: ${PYTHON} with numpy is absent (apt-get install python3-numpy)`);

const close = (a: number, b: number, tol = 1e-12) =>
  ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${a} != ${b}`);

Deno.test("safetensors round trip keeps names, shapes, dtypes, values and metadata", () => {
  const bytes = encodeSafetensors({
    "b.weight": { dtype: "F32", shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6.5]) },
    "a": { dtype: "I32", shape: [2], data: new Int32Array([-7, 8]) },
    "c": { dtype: "F64", shape: [1], data: new Float64Array([Math.PI]) },
  }, { format: "pt" });
  const { tensors, metadata } = decodeSafetensors(bytes);
  deepStrictEqual(metadata, { format: "pt" });
  deepStrictEqual(tensors["b.weight"].shape, [2, 3]);
  deepStrictEqual(tensors["b.weight"].data, new Float32Array([1, 2, 3, 4, 5, 6.5]));
  deepStrictEqual(tensors.a.data, new Int32Array([-7, 8]));
  strictEqual(tensors.c.data[0], Math.PI);
  // The data section starts 8-byte aligned, as the format recommends.
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  strictEqual((8 + headerLength) % 8, 0);
  throws(
    () => encodeSafetensors({ x: { dtype: "F32", shape: [3], data: new Float32Array(2) } }),
    /needs 3 values/,
  );
  throws(() => decodeSafetensors(bytes.subarray(0, 20)), /truncated/);
});

Deno.test({
  name: "safetensors files read identically by an independent Python reader",
  ignore: !hasNumpy,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const w = new Float32Array(12).map((_, i) => i * 0.25 - 1);
    await Deno.writeFile(
      `${dir}/t.safetensors`,
      encodeSafetensors({ w: { dtype: "F32", shape: [3, 4], data: w } }, { note: "x" }),
    );
    const py = `
import json, struct, sys, numpy as np
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
s, e = h["w"]["data_offsets"]
a = np.frombuffer(b[8 + n + s:8 + n + e], dtype="<f4").reshape(h["w"]["shape"])
print(json.dumps({"shape": list(a.shape), "sum": float(a.astype(np.float64).sum()), "x12": float(a[1, 2]), "meta": h["__metadata__"]}))
`;
    const out = new Deno.Command(PYTHON, { args: ["-c", py, `${dir}/t.safetensors`] }).outputSync();
    const r = JSON.parse(new TextDecoder().decode(out.stdout));
    deepStrictEqual(r.shape, [3, 4]);
    close(r.sum, w.reduce((a, b) => a + b, 0));
    strictEqual(r.x12, w[6]);
    deepStrictEqual(r.meta, { note: "x" });
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test("FVU over the whole set, hand-computed, differs from the per-batch average", () => {
  // One feature. Batches {1, 3} and {11, 13}; the reconstruction is each batch's own mean.
  const m = new ReconstructionMetrics(1, 0);
  m.add(new Float32Array([1, 3]), new Float32Array([2, 2]));
  m.add(new Float32Array([11, 13]), new Float32Array([12, 12]));
  const r = m.result();
  // Σ‖x − x̂‖² = 4; whole-set mean 7, Σ‖x − 7‖² = 36 + 16 + 16 + 36 = 104.
  close(r.fvu, 4 / 104);
  close(r.mse, 1);
  // The per-batch formula: each batch's FVU is 2/2 = 1, so their average is 1, not 0.0385.
  const perBatch = [[1, 3, 2], [11, 13, 12]].map(([a, b, mean]) => {
    const sse = (a - mean) ** 2 + (b - mean) ** 2;
    const mu = (a + b) / 2;
    return sse / ((a - mu) ** 2 + (b - mu) ** 2);
  });
  strictEqual((perBatch[0] + perBatch[1]) / 2, 1);
  ok(Math.abs(r.fvu - 1) > 0.9);
});

Deno.test("FVU stays exact when the mean dwarfs the variance (no cancellation)", () => {
  const m = new ReconstructionMetrics(1, 0);
  const offset = 1e6;
  for (let b = 0; b < 50; b++) {
    const x = new Float32Array([offset + 1, offset - 1, offset + 1, offset - 1]);
    m.add(x, new Float32Array([offset, offset, offset, offset]));
  }
  close(m.result().fvu, 1, 1e-9);
});

Deno.test("L0, dead fraction and firing frequencies from dense latents", () => {
  const m = new ReconstructionMetrics(2, 3);
  // 4 tokens, latents: token0 fires {0}, token1 {0, 2}, token2 {}, token3 {0}; latent 1 is dead.
  const z = new Float32Array([1, 0, 0, 2, 0, 3, 0, 0, 0, 0.5, 0, 0]);
  m.add(new Float32Array(8).fill(1), new Float32Array(8).fill(1), z);
  const r = m.result();
  strictEqual(r.l0, 4 / 4);
  strictEqual(r.deadFraction, 1 / 3);
  deepStrictEqual(Array.from(r.firingFrequency), [0.75, 0, 0.25]);
  const h = firingHistogram(r.firingFrequency, [-2, -1, 0]);
  deepStrictEqual(h, { edges: [-2, -1, 0], counts: [0, 2], dead: 1 });
});

Deno.test("cross-entropy, perplexity and top-1 against hand-computed values, masked targets", () => {
  const m = new NextTokenMetrics(3);
  const logits = new Float32Array([Math.log(1), Math.log(2), Math.log(1), 0, 0, 9, 5, 0, 0]);
  m.add(logits, new Int32Array([1, -1, 2]));
  const r = m.result();
  const nll1 = -Math.log(2 / 4); // p(1) = 2/4, argmax 1: a hit
  const nll3 = -(0 - Math.log(Math.exp(5) + 2)); // argmax 0: a miss
  strictEqual(r.n, 2);
  close(r.ce, (nll1 + nll3) / 2, 1e-6);
  close(r.perplexity, Math.exp((nll1 + nll3) / 2), 1e-6);
  strictEqual(r.top1, 0.5);
  throws(() => m.add(new Float32Array(3), new Int32Array([3])), /outside the vocabulary/);
});

Deno.test("learning rate: warm-up, cosine, floor", () => {
  const s = { lr: 2, warmupSteps: 4, totalSteps: 14, minLrFraction: 0.25 };
  strictEqual(learningRate(s, 0), 0.5);
  strictEqual(learningRate(s, 3), 2);
  strictEqual(learningRate(s, 4), 2);
  close(learningRate(s, 9), 0.5 + 1.5 * (1 + Math.cos(Math.PI / 2)) / 2);
  strictEqual(learningRate(s, 14), 0.5);
  strictEqual(learningRate(s, 100), 0.5);
});

Deno.test("train loop: resume after kill -9 gives the same final weights as a clean run", async () => {
  const tmp = await Deno.makeTempDir();
  const script = new URL("./fixtures/linear_trainable.ts", import.meta.url).pathname;
  const run = (dir: string, delay: number) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, dir, String(delay)],
      stdout: "null",
      stderr: "null",
    }).spawn();
  // Clean run.
  strictEqual((await run(`${tmp}/clean`, 0).status).code, 0);
  const clean = await Deno.readTextFile(`${tmp}/clean/final.json`);
  // Killed run: wait until a few checkpoints exist, then SIGKILL.
  const child = run(`${tmp}/killed`, 20);
  for (let i = 0; i < 500; i++) {
    const c = await loadCheckpoint<{ step: number }>(`${tmp}/killed/checkpoints`).catch(() => null);
    if (c && c.state.step >= 8) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill("SIGKILL");
  await child.status;
  const partial = await loadCheckpoint<{ step: number }>(`${tmp}/killed/checkpoints`);
  ok(partial && partial.state.step >= 8 && partial.state.step < 60, `step ${partial?.state.step}`);
  await rejects(Deno.stat(`${tmp}/killed/final.json`));
  strictEqual((await run(`${tmp}/killed`, 0).status).code, 0);
  strictEqual(await Deno.readTextFile(`${tmp}/killed/final.json`), clean);
  await Deno.remove(tmp, { recursive: true });
});

Deno.test("train loop: NaN stops with the step named and the last good checkpoint kept", async () => {
  const dir = await Deno.makeTempDir();
  const options = {
    dir,
    label: "nan",
    schedule: LINEAR_SCHEDULE,
    epochBatches: linearBatches,
    validateEvery: 100,
    checkpointEvery: 5,
    patience: 0,
    resume: false,
  };
  await rejects(
    trainLoop(new LinearTrainable(0, 12), options),
    (e: Error) => e instanceof DivergedError && /NaN at step 12/.test(e.message),
  );
  const kept = await loadCheckpoint<{ step: number }>(`${dir}/checkpoints`);
  strictEqual(kept?.state.step, 10);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("train loop: early stopping keeps the best-validation checkpoint", async () => {
  const dir = await Deno.makeTempDir();
  const model = new LinearTrainable(0, -1, [5, 3, 4, 4.5, 6, 7]);
  const r = await trainLoop(model, {
    dir,
    label: "early",
    schedule: { ...LINEAR_SCHEDULE, totalSteps: 1000 },
    epochBatches: linearBatches,
    validateEvery: 10,
    checkpointEvery: 0,
    patience: 3,
    resume: false,
  });
  ok(r.stoppedEarly);
  strictEqual(r.steps, 50);
  deepStrictEqual(r.best, { value: 3, step: 20 });
  const best = await loadCheckpoint<{ step: number }>(`${dir}/best`);
  strictEqual(best?.state.step, 20);
  await Deno.remove(dir, { recursive: true });
});
