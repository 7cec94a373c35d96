// Every available backend (blas, wasm, webgpu on a software adapter) against a float64 JS
// reference: matmuls, fused matmul, elementwise and broadcasting ops, reductions, transpose, topk
// and the gradients of an SAE-like loss; plus backend selection and the blas buffer pool.
// Run: deno test -A tests/backends_test.ts

import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { Rng } from "../core/rng.ts";
import { UserError } from "../core/user_error.ts";
import { loadOpenBlas, openBlasAvailable } from "../core/backends/openblas.ts";
import type { BlasBackend } from "../core/backends/blas_backend.ts";
import { probeGpu } from "../core/backends/webgpu_backend.ts";
import { registerTensorflowBackend } from "../core/backends/tensorflow_backend.ts";
import { selectBackend } from "../core/backends/select_backend.ts";
import { TrainSchema } from "../core/config_schema.ts";

const quiet = () => {};
const train = (backend: string, allowSoftwareGpu = true) =>
  TrainSchema.parse({ backend, allow_software_gpu: allowSoftwareGpu });

const gpu = await probeGpu();
const SKIP: Record<string, string | undefined> = {
  blas: openBlasAvailable()
    ? undefined
    : "OpenBLAS not found (apt-get install libopenblas0-pthread)",
  wasm: undefined,
  webgpu: gpu.found
    ? undefined
    : "navigator.gpu has no adapter (apt-get install mesa-vulkan-drivers)",
};
for (const [name, why] of Object.entries(SKIP)) {
  if (why) console.log(`backends_test: skipping ${name}: ${why}`);
}

// ---- float64 reference ----------------------------------------------------------------------

interface Ref {
  data: Float64Array;
  shape: number[];
}

const size = (shape: number[]) => shape.reduce((p, d) => p * d, 1);
const stridesOf = (shape: number[]) => shape.map((_, i) => size(shape.slice(i + 1)));

function random(rng: Rng, shape: number[]): Ref {
  return { data: Float64Array.from({ length: size(shape) }, () => rng.normal()), shape };
}

/** The float32 value of each reference entry, so both sides start from the same inputs. */
function toTensor(r: Ref): tf.Tensor {
  return tf.tensor(Float32Array.from(r.data), r.shape);
}

function index(flat: number, shape: number[]): number[] {
  return stridesOf(shape).map((s, i) => Math.floor(flat / s) % shape[i]);
}

function at(r: Ref, idx: number[]): number {
  const pad = idx.length - r.shape.length;
  const st = stridesOf(r.shape);
  return r.data[r.shape.reduce((o, d, i) => o + (d === 1 ? 0 : idx[i + pad] * st[i]), 0)];
}

function binary(a: Ref, b: Ref, f: (x: number, y: number) => number): Ref {
  const rank = Math.max(a.shape.length, b.shape.length);
  const pa = [...Array(rank - a.shape.length).fill(1), ...a.shape];
  const pb = [...Array(rank - b.shape.length).fill(1), ...b.shape];
  const shape = pa.map((d, i) => Math.max(d, pb[i]));
  const data = new Float64Array(size(shape));
  for (let i = 0; i < data.length; i++) {
    const idx = index(i, shape);
    data[i] = f(at(a, idx), at(b, idx));
  }
  return { data, shape };
}

function map(a: Ref, f: (x: number) => number): Ref {
  return { data: a.data.map(f), shape: a.shape };
}

function transpose(a: Ref, perm: number[]): Ref {
  const shape = perm.map((p) => a.shape[p]);
  const data = new Float64Array(a.data.length);
  for (let i = 0; i < data.length; i++) {
    const idx = index(i, shape);
    const src = new Array(perm.length);
    perm.forEach((p, k) => src[p] = idx[k]);
    data[i] = at(a, src);
  }
  return { data, shape };
}

function reduce(a: Ref, axes: number[], mean: boolean, keepDims = false): Ref {
  const kept = a.shape.map((d, i) => axes.includes(i) ? 1 : d);
  const data = new Float64Array(size(kept));
  for (let i = 0; i < a.data.length; i++) {
    const idx = index(i, a.shape).map((v, k) => axes.includes(k) ? 0 : v);
    data[idx.reduce((o, v, k) => o + v * stridesOf(kept)[k], 0)] += a.data[i];
  }
  const n = axes.reduce((p, ax) => p * a.shape[ax], 1);
  const shape = keepDims ? kept : a.shape.filter((_, i) => !axes.includes(i));
  return { data: mean ? data.map((x) => x / n) : data, shape };
}

function matMul(a: Ref, b: Ref, ta = false, tb = false): Ref {
  const swap = (r: Ref) => {
    const n = r.shape.length;
    return transpose(r, [...Array(n - 2).keys(), n - 1, n - 2]);
  };
  const A = ta ? swap(a) : a, B = tb ? swap(b) : b;
  const [m, k] = A.shape.slice(-2), n = B.shape[B.shape.length - 1];
  const batch = Math.max(size(A.shape.slice(0, -2)), size(B.shape.slice(0, -2)));
  const outer = A.shape.length >= B.shape.length ? A.shape.slice(0, -2) : B.shape.slice(0, -2);
  const data = new Float64Array(batch * m * n);
  const ba = size(A.shape.slice(0, -2)), bb = size(B.shape.slice(0, -2));
  for (let t = 0; t < batch; t++) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let q = 0; q < k; q++) {
          s += A.data[(t % ba) * m * k + i * k + q] * B.data[(t % bb) * k * n + q * n + j];
        }
        data[t * m * n + i * n + j] = s;
      }
    }
  }
  return { data, shape: [...outer, m, n] };
}

async function expectClose(got: tf.Tensor, want: Ref, what: string, rtol = 2e-4) {
  assert.deepEqual(got.shape, want.shape, `${what}: shape`);
  const values = await got.data();
  const scale = Math.max(1, ...want.data.map(Math.abs));
  for (let i = 0; i < want.data.length; i++) {
    const err = Math.abs(values[i] - want.data[i]);
    assert.ok(
      err <= rtol * scale,
      `${what}: element ${i} is ${values[i]}, expected ${want.data[i]} (error ${err})`,
    );
  }
}

// ---- the cases, run on each backend ---------------------------------------------------------

const CASES: Record<string, (rng: Rng) => Promise<void>> = {
  async "matmul, all transposes, batched and broadcast batch"(rng) {
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
      for (const [as, bs] of [[[5, 7], [7, 3]], [[2, 5, 7], [2, 7, 3]], [[2, 5, 7], [7, 3]]]) {
        const swap = (s: number[]) => [...s.slice(0, -2), s[s.length - 1], s[s.length - 2]];
        const a = random(rng, ta ? swap(as) : as), b = random(rng, tb ? swap(bs) : bs);
        const got = tf.matMul(toTensor(a), toTensor(b), ta, tb);
        await expectClose(got, matMul(a, b, ta, tb), `matMul ${as}x${bs} ta=${ta} tb=${tb}`);
      }
    }
    const a = random(rng, [96, 130]), b = random(rng, [80, 130]);
    await expectClose(
      tf.matMul(toTensor(a), toTensor(b), false, true),
      matMul(a, b, false, true),
      "big",
    );
  },
  async "fused matmul with bias and relu"(rng) {
    const a = random(rng, [6, 9]), b = random(rng, [9, 4]), row = random(rng, [4]);
    const full = random(rng, [6, 4]);
    const pre = matMul(a, b);
    await expectClose(
      tf.fused.matMul({ a: toTensor(a), b: toTensor(b), bias: toTensor(row), activation: "relu" }),
      map(binary(pre, row, (x, y) => x + y), (x) => Math.max(x, 0)),
      "fused relu, row bias",
    );
    await expectClose(
      tf.fused.matMul({ a: toTensor(a), b: toTensor(b), bias: toTensor(full) }),
      binary(pre, full, (x, y) => x + y),
      "fused linear, full bias",
    );
  },
  async "relu and step"(rng) {
    const x = random(rng, [7, 11]);
    await expectClose(tf.relu(toTensor(x)), map(x, (v) => Math.max(v, 0)), "relu");
    await expectClose(tf.step(toTensor(x)), map(x, (v) => v > 0 ? 1 : 0), "step");
    await expectClose(tf.step(toTensor(x), 0.25), map(x, (v) => v > 0 ? 1 : 0.25), "step 0.25");
  },
  async "broadcasting add, mul, sub, div"(rng) {
    const ops: [
      string,
      (a: tf.Tensor, b: tf.Tensor) => tf.Tensor,
      (x: number, y: number) => number,
    ][] = [
      ["add", tf.add, (x, y) => x + y],
      ["mul", tf.mul, (x, y) => x * y],
      ["sub", tf.sub, (x, y) => x - y],
      ["div", tf.div, (x, y) => x / (Math.abs(y) < 0.1 ? 0.1 : y)],
    ];
    const shapes = [
      [[5, 6], [6]],
      [[5, 6], [5, 1]],
      [[5, 6], []],
      [[], [5, 6]],
      [[6], [5, 6]],
      [[5, 1], [5, 6]],
      [[5, 6], [5, 6]],
      [[2, 1, 4], [3, 1]],
      [[2, 3, 4], [1, 3, 1]],
    ];
    for (const [name, op, f] of ops) {
      for (const [as, bs] of shapes) {
        const a = random(rng, as);
        const b = name === "div"
          ? map(random(rng, bs), (y) => Math.abs(y) < 0.1 ? 0.1 : y)
          : random(rng, bs);
        await expectClose(op(toTensor(a), toTensor(b)), binary(a, b, f), `${name} ${as} ${bs}`);
      }
    }
  },
  async "sum and mean over axes"(rng) {
    const x2 = random(rng, [6, 5]), x3 = random(rng, [3, 4, 5]);
    for (
      const [x, axes, keep] of [
        [x2, [0], false],
        [x2, [1], true],
        [x2, [0, 1], false],
        [x3, [0, 2], false],
        [x3, [1], true],
        [x3, [2], false],
        [x3, [0], false],
      ] as const
    ) {
      await expectClose(
        tf.sum(toTensor(x), [...axes], keep),
        reduce(x, [...axes], false, keep),
        `sum ${axes}`,
      );
      await expectClose(
        tf.mean(toTensor(x), [...axes], keep),
        reduce(x, [...axes], true, keep),
        `mean ${axes}`,
      );
    }
  },
  async "transpose"(rng) {
    const x2 = random(rng, [7, 3]), x3 = random(rng, [2, 3, 4]);
    await expectClose(tf.transpose(toTensor(x2)), transpose(x2, [1, 0]), "2-D");
    for (const perm of [[0, 2, 1], [2, 0, 1], [1, 0, 2], [1, 2, 0]]) {
      await expectClose(tf.transpose(toTensor(x3), perm), transpose(x3, perm), `perm ${perm}`);
    }
  },
  async "topk values"(rng) {
    const x = random(rng, [4, 10]);
    const want = new Float64Array(12);
    for (let r = 0; r < 4; r++) {
      [...x.data.slice(r * 10, r * 10 + 10)].sort((p, q) => q - p).slice(0, 3)
        .forEach((v, j) => want[r * 3 + j] = v);
    }
    await expectClose(tf.topk(toTensor(x), 3).values, { data: want, shape: [4, 3] }, "topk");
  },
  async "gradients of an SAE loss (MSE + L1)"(rng) {
    const [n, d, m, lambda] = [6, 5, 8, 1e-2];
    const x = random(rng, [n, d]), we = random(rng, [d, m]), be = random(rng, [m]);
    const wd = random(rng, [m, d]), bd = random(rng, [d]);
    // Reference backprop in float64.
    const pre = binary(matMul(x, we), be, (p, q) => p + q);
    const z = map(pre, (v) => Math.max(v, 0));
    const diff = binary(binary(matMul(z, wd), bd, (p, q) => p + q), x, (p, q) => p - q);
    const dxhat = map(diff, (v) => 2 * v / (n * d));
    const dz = binary(
      matMul(dxhat, wd, false, true),
      z,
      (g, v) => g + lambda * Math.sign(v) / (n * m),
    );
    const dpre = binary(dz, pre, (g, v) => v > 0 ? g : 0);
    const want: Record<string, Ref> = {
      we: matMul(x, dpre, true, false),
      be: reduce(dpre, [0], false),
      wd: matMul(z, dxhat, true, false),
      bd: reduce(dxhat, [0], false),
    };
    const vars = Object.fromEntries(
      Object.entries({ we, be, wd, bd }).map((
        [k, r],
      ) => [k, tf.variable(toTensor(r), true, `sae_${k}_${tf.getBackend()}`)]),
    );
    const xt = toTensor(x);
    for (const fused of [false, true]) {
      const { value, grads } = tf.variableGrads(() => {
        const h = fused
          ? tf.relu(tf.fused.matMul({ a: xt, b: vars.we, bias: vars.be }))
          : tf.relu(tf.add(tf.matMul(xt, vars.we), vars.be));
        const xhat = tf.add(tf.matMul(h, vars.wd), vars.bd);
        return tf.add(tf.mean(tf.square(tf.sub(xhat, xt))), tf.mul(lambda, tf.mean(tf.abs(h))));
      });
      const loss = reduce(map(diff, (v) => v * v), [0, 1], true).data[0] +
        lambda * reduce(map(z, Math.abs), [0, 1], true).data[0];
      await expectClose(value, { data: new Float64Array([loss]), shape: [] }, "loss");
      for (const k of Object.keys(want)) {
        await expectClose(grads[vars[k].name], want[k], `d loss / d ${k} (fused=${fused})`);
      }
      tf.dispose([value, ...Object.values(grads)]);
    }
    tf.dispose(Object.values(vars));
  },
  async "tf.grad through broadcasting and reductions"(rng) {
    const a = random(rng, [4, 3]), c = random(rng, [3]);
    const g = tf.grad((t: tf.Tensor) =>
      tf.sum(tf.mul(tf.sub(t, toTensor(c)), tf.mean(t, 1, true)))
    );
    // f = Σ_ij (a_ij − c_j)·μ_i with μ_i = mean_j a_ij: ∂f/∂a_ij = μ_i + Σ_k (a_ik − c_k)/3
    const mu = reduce(a, [1], true, true);
    const s = reduce(binary(a, c, (p, q) => p - q), [1], false, true);
    const rows = binary(mu, s, (p, q) => p + q / 3);
    const want = binary(rows, { data: new Float64Array(3), shape: [3] }, (p) => p);
    await expectClose(g(toTensor(a)), want, "grad");
  },
};

for (const backend of ["blas", "wasm", "webgpu"]) {
  for (const [name, run] of Object.entries(CASES)) {
    Deno.test({
      name: `${backend}: ${name}`,
      ignore: SKIP[backend] !== undefined,
      sanitizeResources: false,
      sanitizeOps: false,
      async fn() {
        await selectBackend(train(backend), quiet);
        tf.engine().startScope();
        try {
          await run(new Rng(11));
        } finally {
          tf.engine().endScope();
        }
      },
    });
  }
}

// ---- selection ------------------------------------------------------------------------------

Deno.test({
  name: "auto picks webgpu only on a real GPU, else blas when OpenBLAS loads",
  ignore: SKIP.blas !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const lines: string[] = [];
    const choice = await selectBackend(train("auto", false), (l) => lines.push(l));
    assert.equal(choice.name, gpu.found && !gpu.fallback ? "webgpu" : "blas");
    assert.equal(tf.getBackend(), choice.name);
    assert.match(lines[0], new RegExp(`^backend: ${choice.name} \\(auto: `));
  },
});

Deno.test({
  name: "a software adapter is refused unless allow_software_gpu",
  ignore: !gpu.fallback,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await assert.rejects(selectBackend(train("webgpu", false), quiet), /allow_software_gpu/);
  },
});

Deno.test("a bad blas_library path names the path and the install command", () => {
  assert.throws(
    () => loadOpenBlas("/nonexistent/libopenblas.so"),
    (e: Error) =>
      e instanceof UserError && e.message.includes("/nonexistent/libopenblas.so") &&
      e.message.includes("apt-get install libopenblas0-pthread"),
  );
});

Deno.test("tensorflow explains why tfjs-node-gpu is absent", async () => {
  await assert.rejects(
    registerTensorflowBackend("file:///nonexistent/tfjs-node-gpu.js"),
    (e: Error) => e instanceof UserError && e.message.includes("libtensorflow"),
  );
});

// ---- the blas pool never recycles arrays that escaped -----------------------------------------

Deno.test({
  name: "blas: dataSync arrays and slice views survive disposal and reuse",
  ignore: SKIP.blas !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await selectBackend(train("blas"), quiet);
    const a = tf.add(tf.ones([1000]), tf.ones([1000]));
    const read = a.dataSync();
    const view = tf.slice(tf.mul(a, 3), [0], [10]);
    a.dispose();
    const churn = [tf.add(tf.ones([1000]), 5), tf.mul(tf.ones([1000]), 7)];
    assert.equal(read[0], 2);
    assert.deepEqual([...view.dataSync()], new Array(10).fill(6));
    tf.dispose([view, ...churn]);
    const backend = tf.backend() as BlasBackend;
    const v = tf.add(tf.ones([4]), 1);
    assert.ok(backend.writableInPlace(v));
    const shared = tf.variable(v);
    assert.ok(!backend.writableInPlace(shared), "a variable sharing its initial value");
    tf.dispose([v, shared]);
  },
});

Deno.test({
  name: "blas: large kernels split over helper threads give the single-thread results",
  ignore: SKIP.blas !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await selectBackend(train("blas"), quiet);
    const rng = new Rng(3);
    const [rows, cols] = [512, 1031]; // above the parallel threshold, rows not a multiple of 2
    const x = random(rng, [rows, cols]), row = random(rng, [cols]), col = random(rng, [rows, 1]);
    // Adding 0 puts the inputs in the pool's shared arrays, which the helpers can reach.
    const [xt, rt, ct] = [x, row, col].map((r) => tf.add(toTensor(r), 0));
    const xs = Float32Array.from(x.data);
    const check = async (got: tf.Tensor, f: (i: number) => number, what: string) => {
      const values = await got.data();
      for (let i = 0; i < values.length; i++) {
        const want = Math.fround(f(i));
        assert.ok(
          Math.abs(values[i] - want) <= 1e-6 * Math.max(1, Math.abs(want)),
          `${what} at ${i}`,
        );
      }
    };
    await check(tf.add(xt, rt), (i) => xs[i] + Math.fround(row.data[i % cols]), "row add");
    await check(
      tf.mul(ct, xt),
      (i) => Math.fround(col.data[Math.floor(i / cols)]) * xs[i],
      "col mul",
    );
    await check(tf.sub(xt, xt), () => 0, "same-shape sub");
    await check(tf.div(xt, 4), (i) => xs[i] / 4, "scalar div");
    await check(tf.relu(xt), (i) => Math.max(xs[i], 0), "relu");
    tf.dispose([xt, rt, ct]);
  },
});
