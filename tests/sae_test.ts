import * as tf from "@tensorflow/tfjs";
import { deepStrictEqual, notDeepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { type Config, SaeSchema } from "../core/config_schema.ts";
import { Adam } from "../core/train/adam.ts";
import { decodeSafetensors, encodeSafetensors } from "../core/train/safetensors.ts";
import { geometricMedian } from "../models/geometric_median.ts";
import { Sae } from "../models/sae.ts";
import { Rng } from "../core/rng.ts";
import { openBlasAvailable } from "../core/backends/openblas.ts";
import { registerBlasBackend } from "../core/backends/blas_backend.ts";

await tf.setBackend("cpu");
if (openBlasAvailable()) registerBlasBackend();
else console.log("sae_test: blas cases skipped: OpenBLAS not found");

const PYTHON = "/usr/bin/python3";
const torchMissing = (() => {
  try {
    const probe = new Deno.Command(PYTHON, { args: ["-c", "import torch, numpy"] }).outputSync();
    return probe.success ? "" : `${PYTHON} cannot import torch and numpy`;
  } catch {
    return `${PYTHON} is absent`;
  }
})();
if (torchMissing) {
  console.log(`skip: PyTorch reference: ${torchMissing} (apt-get install python3-torch)`);
}

const cfgOf = (o: Partial<Config["sae"]>) => SaeSchema.parse(o);

/** [n, d] Gaussian data with a shifted centre, from a seed. */
function data(n: number, d: number, seed: number, shift = 0.5): Float32Array {
  const rng = new Rng(seed);
  return new Float32Array(n * d).map((_, i) => rng.normal() + (i % d) * shift / d);
}

function weights(sae: Sae): Record<string, Float32Array | Float64Array> {
  return Object.fromEntries(
    Object.entries(sae.toTensors()).map(([k, t]) => [k, t.data as Float32Array]),
  );
}

function assertClose(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  tol: number,
  what: string,
  floor = 1,
) {
  strictEqual(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) {
    const err = Math.abs(a[i] - b[i]);
    ok(err <= tol * Math.max(Math.abs(b[i]), floor), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

/** Marks every third latent dead (counters at the threshold). */
function killSome(sae: Sae): void {
  const t = sae.toTensors();
  const since = t.tokens_since_fired.data as Float64Array;
  for (let i = 0; i < since.length; i += 3) since[i] = sae.cfg.dead_tokens;
  sae.loadTensors(t);
}

Deno.test({
  name: "SAE losses and Adam steps match a PyTorch reference (topk + AuxK, relu-l1)",
  ignore: torchMissing !== "",
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const d = 12, batch = 24, steps = 3;
    const cases = [
      {
        name: "topk",
        cfg: cfgOf({ kind: "topk", expansion: 4, k: 5, k_aux: 7, dead_tokens: 40, lr: 1e-2 }),
      },
      {
        name: "topk_few_dead",
        cfg: cfgOf({ kind: "topk", expansion: 2, k: 3, k_aux: 64, dead_tokens: 1000, lr: 3e-3 }),
      },
      { name: "relu", cfg: cfgOf({ kind: "relu-l1", expansion: 3, l1: 0.05, lr: 1e-2 }) },
    ];
    const models = cases.map(({ cfg }, i) => new Sae(d, cfg, 10 + i, data(64, d, i)));
    const x = tf.tensor2d(data(batch, d, 99), [batch, d]);
    for (const [i, { name }] of cases.entries()) {
      if (models[i].cfg.kind === "topk") killSome(models[i]);
      const t = models[i].toTensors();
      t.x = { dtype: "F32", shape: [batch, d], data: x.dataSync() as Float32Array };
      await Deno.writeFile(`${dir}/${name}.in.safetensors`, encodeSafetensors(t));
    }
    await Deno.writeTextFile(
      `${dir}/cases.json`,
      JSON.stringify(cases.map((c) => ({ ...c, steps }))),
    );
    const run = await new Deno.Command(PYTHON, { args: ["tests/py/sae_reference.py", dir] })
      .output();
    ok(run.success, new TextDecoder().decode(run.stderr));
    for (const [i, { name, cfg }] of cases.entries()) {
      const sae = models[i];
      const adam = new Adam(sae.variables(), { lr: cfg.lr });
      const ours = Array.from({ length: steps }, () => sae.trainStep(x, adam));
      const ref = JSON.parse(await Deno.readTextFile(`${dir}/${name}.out.json`)).steps;
      for (let s = 0; s < steps; s++) {
        for (const [term, value] of Object.entries(ref[s] as Record<string, number>)) {
          assertClose([ours[s][term]], [value], 1e-5, `${name} step ${s} ${term}`, 1e-6);
        }
      }
      if (name === "topk") ok(ref[0].aux > 0 && ours[0].dead_fraction > 0, "AuxK was exercised");
      const out = decodeSafetensors(await Deno.readFile(`${dir}/${name}.out.safetensors`)).tensors;
      for (const [key, value] of Object.entries(weights(sae))) {
        assertClose(value, out[key].data, 1e-5, `${name} ${key}`, 1e-2);
      }
      adam.dispose();
      sae.dispose();
    }
    x.dispose();
    await Deno.remove(dir, { recursive: true });
  },
});

// AuxK on the sparse path runs as dense matmuls over the dead rows while there are at most 32
// dead latents per k_aux (k_aux 20, 64 dead) and as row products beyond (k_aux 1); on blas the
// row products are its fused kernels, on cpu gathers and scatters.
for (const backend of openBlasAvailable() ? ["cpu", "blas"] : ["cpu"]) {
  for (const kAux of [20, 1]) {
    Deno.test(`sparse TopK forward and backward equal the dense formulation (AuxK k_aux ${kAux}, ${backend})`, async () => {
      await tf.setBackend(backend);
      try {
        sparseEqualsDense(kAux);
      } finally {
        await tf.setBackend("cpu");
      }
    });
  }
}

function sparseEqualsDense(kAux: number): void {
  const d = 24, batch = 40;
  const sae = new Sae(
    d,
    cfgOf({ expansion: 8, k: 6, k_aux: kAux, dead_tokens: 10 }),
    3,
    data(50, d, 1),
  );
  killSome(sae);
  const x = tf.tensor2d(data(batch, d, 7), [batch, d]);
  const run = (sparse: boolean) =>
    tf.tidy(() => {
      let parts: number[] = [];
      const { grads } = tf.variableGrads(() => {
        const out = sae.forward(x, { training: true, sparse });
        const { mse, aux, total } = out.losses;
        parts = [mse, aux!, total].map((t) => t.dataSync()[0]);
        parts.push(...out.xHat.dataSync());
        return total;
      }, sae.variables());
      return {
        parts,
        grads: Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, g.dataSync().slice()])),
      };
    });
  const sparse = run(true), dense = run(false);
  ok(sparse.parts[1] > 0, "AuxK is non-zero");
  assertClose(sparse.parts, dense.parts, 1e-5, "forward");
  for (const name of Object.keys(dense.grads)) {
    const scale = Math.max(...Array.from(dense.grads[name], Math.abs));
    assertClose(sparse.grads[name], dense.grads[name], 1e-5, `grad ${name}`, scale);
  }
  const before = tf.memory().numTensors;
  tf.dispose(sae.forward(x, { training: true }) as unknown as tf.TensorContainer);
  strictEqual(tf.memory().numTensors, before, "forward's outputs are all it leaves");
  x.dispose();
  sae.dispose();
}

Deno.test("bias starts at the geometric median (or mean); tied init with unit decoder rows", () => {
  const d = 6;
  const sample = data(30, d, 5, 4);
  sample.set([100, -80, 50, 0, 0, 9], 0); // an outlier token the median resists
  const sae = new Sae(d, cfgOf({ expansion: 2, k: 4 }), 1, sample);
  const w = weights(sae);
  assertClose(w.b, geometricMedian(sample, d), 1e-6, "median bias");
  deepStrictEqual(w.W_e, w.W_d);
  const dirs = sae.featureDirections();
  assertClose(dirs, w.W_d, 1e-6, "unit rows");
  for (let i = 0; i < sae.m; i++) {
    const n = Math.hypot(...w.W_d.subarray(i * d, (i + 1) * d));
    ok(Math.abs(n - 1) < 1e-6, `row ${i} has norm ${n}`);
  }
  const mean = new Sae(d, cfgOf({ expansion: 2, k: 4, bias_init: "mean" }), 1, sample);
  const expected = new Float64Array(d);
  sample.forEach((v, i) => expected[i % d] += v / 30);
  assertClose(weights(mean).b, expected, 1e-6, "mean bias");
  throws(() => new Sae(d, cfgOf({ k: 4 }), 1, new Float32Array(7)), /non-empty \[n, 6\]/);
  throws(() => new Sae(d, cfgOf({ expansion: 1, k: 7 }), 1, sample), /at most the 6 latents/);
  sae.dispose();
  mean.dispose();
});

Deno.test("relu-l1 keeps decoder rows at unit norm through training", () => {
  const d = 10;
  const sae = new Sae(
    d,
    cfgOf({ kind: "relu-l1", expansion: 4, lr: 0.05, l1: 0.1 }),
    2,
    data(40, d, 2),
  );
  const adam = new Adam(sae.variables(), { lr: 0.05 });
  const x = tf.tensor2d(data(64, d, 3), [64, d]);
  const first = sae.trainStep(x, adam);
  ok("l1" in first && !("aux" in first));
  for (let s = 0; s < 4; s++) sae.trainStep(x, adam);
  const wd = weights(sae).W_d;
  for (let i = 0; i < sae.m; i++) {
    const n = Math.hypot(...wd.subarray(i * d, (i + 1) * d));
    ok(Math.abs(n - 1) < 1e-5, `row ${i} has norm ${n}`);
  }
  const z = sae.encode(x) as tf.Tensor2D;
  deepStrictEqual(z.shape, [64, sae.m]);
  tf.dispose([x, z]);
  adam.dispose();
  sae.dispose();
});

Deno.test("dead tracking counts tokens since each latent fired", () => {
  const d = 8, batch = 16;
  const sae = new Sae(d, cfgOf({ expansion: 8, k: 2, dead_tokens: 40 }), 4, data(20, d, 4));
  const adam = new Adam(sae.variables(), { lr: 1e-3 });
  const x = tf.tensor2d(data(batch, d, 6), [batch, d]);
  const fired = new Set<number>();
  for (let step = 1; step <= 3; step++) {
    const z = sae.encode(x) as { indices: tf.Tensor2D; values: tf.Tensor2D };
    const idx = z.indices.dataSync(), val = z.values.dataSync();
    const now = new Set(Array.from(idx).filter((_, i) => val[i] > 0));
    tf.dispose([z.indices, z.values]);
    now.forEach((i) => fired.add(i));
    const stats = sae.trainStep(x, adam);
    const since = sae.toTensors().tokens_since_fired.data;
    for (let i = 0; i < sae.m; i++) {
      strictEqual(since[i], now.has(i) ? 0 : fired.has(i) ? since[i] : step * batch, `latent ${i}`);
    }
    strictEqual(stats.dead_fraction, step * batch >= 40 ? (sae.m - fired.size) / sae.m : 0);
  }
  const mask = sae.deadMask();
  for (let i = 0; i < sae.m; i++) strictEqual(mask[i], fired.has(i) ? 0 : 1);
  x.dispose();
  adam.dispose();
  sae.dispose();
});

Deno.test("same seed gives identical weights after training, different seeds differ", () => {
  const d = 8;
  const cfg = cfgOf({ expansion: 4, k: 3, k_aux: 4, dead_tokens: 32, lr: 1e-2 });
  const sample = data(32, d, 8);
  const x = tf.tensor2d(data(32, d, 9), [32, d]);
  const train = (seed: number) => {
    const sae = new Sae(d, cfg, seed, sample);
    const adam = new Adam(sae.variables(), { lr: cfg.lr });
    for (let s = 0; s < 4; s++) sae.trainStep(x, adam);
    const w = weights(sae);
    adam.dispose();
    sae.dispose();
    return w;
  };
  deepStrictEqual(train(1), train(1));
  notDeepStrictEqual(train(1).W_d, train(2).W_d);
  x.dispose();
});

Deno.test("toTensors/loadTensors round trip continues training identically", async () => {
  const d = 8;
  const cfg = cfgOf({ expansion: 4, k: 3, k_aux: 4, dead_tokens: 24, lr: 1e-2 });
  const sample = data(32, d, 10);
  const batches = [11, 12, 13, 14].map((s) => tf.tensor2d(data(16, d, s), [16, d]));
  const a = new Sae(d, cfg, 1, sample);
  const adamA = new Adam(a.variables(), { lr: cfg.lr });
  a.trainStep(batches[0], adamA);
  a.trainStep(batches[1], adamA);
  const saved = decodeSafetensors(encodeSafetensors(a.toTensors())).tensors;
  const state = await adamA.getState();
  const b = new Sae(d, cfg, 2, sample);
  const [prefixA, prefixB] = [a, b].map((s) => s.variables()[0].name.replace(".W_e", ""));
  ok(prefixA !== prefixB, "a second live SAE gets its own names");
  b.loadTensors(saved);
  const renamed = {
    ...state,
    m: {} as Record<string, Float32Array>,
    v: {} as Record<string, Float32Array>,
  };
  for (const name of Object.keys(state.m)) {
    renamed.m[name.replace(prefixA, prefixB)] = state.m[name];
    renamed.v[name.replace(prefixA, prefixB)] = state.v[name];
  }
  const adamB = new Adam(b.variables(), { lr: cfg.lr });
  adamB.setState(renamed);
  for (const x of batches.slice(2)) deepStrictEqual(a.trainStep(x, adamA), b.trainStep(x, adamB));
  deepStrictEqual(weights(a), weights(b));
  throws(() => b.loadTensors({ ...saved, W_e: saved.b }), /"W_e": expected shape \[32,8\]/);
  tf.dispose(batches);
  [adamA, adamB].forEach((o) => o.dispose());
  [a, b].forEach((s) => s.dispose());
});
