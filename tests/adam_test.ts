// Adam/AdamW against a float64 reference and torch.optim.AdamW (tests/py/adamw_reference.py),
// on the fused blas path and the tfjs path (cpu, wasm); state round trip; in-place safety.
// Run: deno test -A tests/adam_test.ts

import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { Rng } from "../core/rng.ts";
import { Adam, type AdamOptions } from "../core/train/adam.ts";
import { openBlasAvailable } from "../core/backends/openblas.ts";
import { selectBackend } from "../core/backends/select_backend.ts";
import { TrainSchema } from "../core/config_schema.ts";

const PYTHON = "/usr/bin/python3";
const SCRIPT = new URL("./py/adamw_reference.py", import.meta.url).pathname;
const N = 257;
const STEPS = 3;
const OPTIONS: Required<AdamOptions> = {
  lr: 1e-2,
  beta1: 0.9,
  beta2: 0.999,
  epsilon: 1e-8,
  weightDecay: 0.05,
};

const rng = new Rng(5);
const f32 = (xs: number[]) => Array.from(Float32Array.from(xs));
const PARAMS = f32(Array.from({ length: N }, () => rng.normal()));
// Gradients over several scales, including exact zeros, so ε and bias correction matter.
const GRADS = Array.from(
  { length: STEPS },
  () =>
    f32(Array.from({ length: N }, (_, i) => i % 17 === 0 ? 0 : rng.normal() * 10 ** (i % 5 - 3))),
);

/** AdamW in float64, the textbook formulas. */
function reference(): { params: number[]; m: number[]; v: number[] } {
  const { lr, beta1, beta2, epsilon, weightDecay } = OPTIONS;
  const p = [...PARAMS], m = new Array(N).fill(0), v = new Array(N).fill(0);
  GRADS.forEach((g, s) => {
    const t = s + 1;
    for (let i = 0; i < N; i++) {
      p[i] *= 1 - lr * weightDecay;
      m[i] = beta1 * m[i] + (1 - beta1) * g[i];
      v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
      const mHat = m[i] / (1 - beta1 ** t), vHat = v[i] / (1 - beta2 ** t);
      p[i] -= lr * mHat / (Math.sqrt(vHat) + epsilon);
    }
  });
  return { params: p, m, v };
}

async function torchReference(): Promise<{ params: number[]; m: number[]; v: number[] } | string> {
  const probe = await new Deno.Command(PYTHON, { args: ["-c", "import torch"], stderr: "null" })
    .output().catch(() => null);
  if (!probe?.success) return `${PYTHON} cannot import torch`;
  const dir = await Deno.makeTempDir({ prefix: "adam_test_" });
  try {
    await Deno.writeTextFile(
      `${dir}/in.json`,
      JSON.stringify({
        params: PARAMS,
        grads: GRADS,
        lr: OPTIONS.lr,
        betas: [OPTIONS.beta1, OPTIONS.beta2],
        eps: OPTIONS.epsilon,
        weight_decay: OPTIONS.weightDecay,
      }),
    );
    const run = await new Deno.Command(PYTHON, {
      args: [SCRIPT, `${dir}/in.json`, `${dir}/out.json`],
    })
      .output();
    if (!run.success) throw new Error(new TextDecoder().decode(run.stderr));
    const out = JSON.parse(await Deno.readTextFile(`${dir}/out.json`));
    assert.equal(out.step, STEPS);
    return { params: out.params, m: out.exp_avg, v: out.exp_avg_sq };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function assertRelClose(got: ArrayLike<number>, want: number[], what: string, rtol = 1e-5) {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    assert.ok(
      err <= rtol * Math.abs(want[i]) + 1e-12,
      `${what}[${i}] is ${got[i]}, expected ${want[i]} (relative error ${err / Math.abs(want[i])})`,
    );
  }
}

async function runOurs(backend: string) {
  await selectBackend(TrainSchema.parse({ backend }), () => {});
  const w = tf.variable(tf.tensor(Float32Array.from(PARAMS)), true, `adam_w_${backend}`);
  const adam = new Adam([w], OPTIONS);
  for (const g of GRADS) {
    const grad = tf.tensor(Float32Array.from(g));
    adam.step({ [w.name]: grad });
    grad.dispose();
  }
  const params = await w.data();
  const state = await adam.getState();
  adam.dispose();
  w.dispose();
  return { params, m: state.m[w.name], v: state.v[w.name], step: state.step };
}

const BACKENDS = openBlasAvailable() ? ["blas", "wasm"] : ["wasm"];
if (BACKENDS.length === 1) console.log("adam_test: skipping blas: OpenBLAS not found");
const torch = await torchReference();
if (typeof torch === "string") console.log(`adam_test: skipping the PyTorch comparison: ${torch}`);

for (const backend of BACKENDS) {
  Deno.test({
    name: `${backend}: AdamW equals a float64 reference`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const ours = await runOurs(backend);
      const want = reference();
      assert.equal(ours.step, STEPS);
      assertRelClose(ours.params, want.params, "params");
      assertRelClose(ours.m, want.m, "m");
      assertRelClose(ours.v, want.v, "v");
    },
  });
  Deno.test({
    name: `${backend}: AdamW equals torch.optim.AdamW`,
    ignore: typeof torch === "string",
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const ours = await runOurs(backend);
      const want = torch as Exclude<typeof torch, string>;
      assertRelClose(ours.params, want.params, "params");
      assertRelClose(ours.m, want.m, "exp_avg");
      assertRelClose(ours.v, want.v, "exp_avg_sq");
    },
  });
}

Deno.test({
  name: "state round trip: a restored optimiser continues identically",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await selectBackend(TrainSchema.parse({ backend: BACKENDS[0] }), () => {});
    const make = (name: string) => tf.variable(tf.tensor(Float32Array.from(PARAMS)), true, name);
    const [a, b] = [make("round_a"), make("round_b")];
    const adamA = new Adam([a], OPTIONS);
    adamA.step({ round_a: tf.tensor(GRADS[0]) });
    const saved = await adamA.getState();
    b.assign(tf.tensor(await a.data()));
    const adamB = new Adam([b], OPTIONS);
    adamB.setState({
      step: saved.step,
      m: { round_b: saved.m.round_a },
      v: { round_b: saved.v.round_a },
    });
    for (const g of GRADS.slice(1)) {
      adamA.step({ round_a: tf.tensor(g) });
      adamB.step({ round_b: tf.tensor(g) });
    }
    assert.deepEqual(await b.data(), await a.data());
    assert.equal(adamB.iterations, STEPS);
    saved.m.round_a[0] = 1234;
    assert.notEqual((await adamA.getState()).m.round_a[0], 1234, "getState returns copies");
    assert.throws(() => adamB.setState({ step: 1, m: {}, v: {} }), /round_b/);
    tf.dispose([a, b]);
  },
});

Deno.test({
  name: "blas: the in-place step never writes into storage a variable shares",
  ignore: !BACKENDS.includes("blas"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await selectBackend(TrainSchema.parse({ backend: "blas" }), () => {});
    const init = tf.add(tf.zeros([8]), 1);
    const w = tf.variable(init, true, "shared_w");
    const read = w.dataSync();
    const adam = new Adam([w], { lr: 0.5 });
    adam.step({ shared_w: tf.ones([8]) });
    assert.deepEqual([...init.dataSync()], new Array(8).fill(1), "the initial tensor");
    assert.deepEqual([...read], new Array(8).fill(1), "an array read before the step");
    assertRelClose(await w.data(), new Array(8).fill(0.5), "the variable");
    tf.dispose([init, w]);
  },
});

Deno.test({
  name: "blas: AdamW over helper threads (300k parameters) equals the float64 reference",
  ignore: !BACKENDS.includes("blas"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await selectBackend(TrainSchema.parse({ backend: "blas" }), () => {});
    const n = 300_001, r = new Rng(9);
    const p0 = Float32Array.from({ length: n }, () => r.normal());
    const g0 = Float32Array.from({ length: n }, () => r.normal() * 1e-2);
    const w = tf.variable(tf.tensor(p0), true, "big_w");
    const adam = new Adam([w], OPTIONS);
    const g = tf.add(tf.tensor(g0), 0); // in the pool's shared arrays, so the helpers can help
    adam.step({ big_w: g });
    adam.step({ big_w: g });
    const { lr, beta1, beta2, epsilon, weightDecay } = OPTIONS;
    const got = await w.data();
    for (let i = 0; i < n; i += 997) {
      let p = p0[i], m = 0, v = 0;
      for (let t = 1; t <= 2; t++) {
        p *= 1 - lr * weightDecay;
        m = beta1 * m + (1 - beta1) * g0[i];
        v = beta2 * v + (1 - beta2) * g0[i] * g0[i];
        p -= lr * (m / (1 - beta1 ** t)) / (Math.sqrt(v / (1 - beta2 ** t)) + epsilon);
      }
      assertRelClose([got[i]], [p], `p[${i}]`);
    }
    tf.dispose([w, g]);
  },
});
