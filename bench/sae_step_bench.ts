/**
 * The dense SAE training step (d = 768 → m = 6144, ReLU encoder with bias, linear decoder with
 * bias, loss MSE + 1e-3·mean|z|, Adam lr 1e-4) on every available backend against the same step
 * in PyTorch (tests/py/sae_step_torch.py, 2 threads). Each case runs in its own process so its
 * peak RSS is its own. One line per case, ending `ours=<s> pytorch=<s> ratio=<ours/pytorch>`.
 *
 * Usage: deno task bench:sae [--steps=3] [--rounds=3] [--backends=blas,wasm,webgpu]
 * [--batches=1024,4096]. Seconds are the median step after two warm-up steps; blas alternates
 * ours and PyTorch `rounds` times and reports medians (other processes' load moves both alike).
 * wasm runs once, only at batch 1024 and 2 steps (it is slow); webgpu on a software adapter only
 * with --software-gpu.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { parseArgs } from "node:util";
import { selectBackend } from "../core/backends/select_backend.ts";
import { openBlasAvailable } from "../core/backends/openblas.ts";
import { probeGpu } from "../core/backends/webgpu_backend.ts";
import { TrainSchema } from "../core/config_schema.ts";
import { Adam } from "../core/train/adam.ts";
import { Rng } from "../core/rng.ts";
import { median, medianStepSeconds, peakRssMb, runCase } from "./_stats.ts";
import { runTorchScript } from "./_torch_run.ts";

const D = 768, M = 6144, L1 = 1e-3, LR = 1e-4;
const TORCH_SCRIPT = new URL("../tests/py/sae_step_torch.py", import.meta.url).pathname;

interface Measured {
  seconds: number;
  rss_mb: number;
}

function normal(rng: Rng, n: number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal() * scale);
}

/** Child process: time `steps` steps on one backend after two warm-up steps. */
async function measureOurs(backend: string, batch: number, steps: number): Promise<Measured> {
  await selectBackend(TrainSchema.parse({ backend, allow_software_gpu: true }), () => {});
  const rng = new Rng(0);
  const x = tf.tensor(normal(rng, batch * D, 1), [batch, D]); // [batch, d]
  const wE = tf.variable(tf.tensor(normal(rng, D * M, 0.02), [D, M]), true, "w_e"); // [d, m]
  const bE = tf.variable(tf.zeros([M]), true, "b_e");
  const wD = tf.variable(tf.tensor(normal(rng, M * D, 0.02), [M, D]), true, "w_d"); // [m, d]
  const bD = tf.variable(tf.zeros([D]), true, "b_d");
  const adam = new Adam([wE, bE, wD, bD], { lr: LR });
  const loss = () => {
    // Not tf.fused.matMul: its custom gradient also computes d/dx, a wasted [batch, d] matmul.
    const z = tf.relu(tf.add(tf.matMul(x, wE), bE)); // [batch, m]
    const xHat = tf.fused.matMul({ a: z, b: wD, bias: bD }); // [batch, d]
    return tf.add(tf.mean(tf.square(tf.sub(xHat, x))), tf.mul(L1, tf.mean(tf.abs(z)))) as tf.Scalar;
  };
  const seconds = await medianStepSeconds(async () => {
    const { value, grads } = tf.variableGrads(loss);
    adam.step(grads);
    await value.data();
    tf.dispose([value, ...Object.values(grads)]);
  }, steps);
  return { seconds, rss_mb: peakRssMb() };
}

function measureTorch(batch: number, steps: number): Promise<Measured> {
  return runTorchScript<Measured>(TORCH_SCRIPT, [batch, steps, 2]);
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      case: { type: "string" },
      steps: { type: "string", default: "3" },
      rounds: { type: "string", default: "3" },
      backends: { type: "string", default: "blas,wasm,webgpu" },
      batches: { type: "string", default: "1024,4096" },
      "software-gpu": { type: "boolean", default: false },
    },
  });
  if (values.case) {
    const [backend, batch, steps] = values.case.split(":");
    console.log(JSON.stringify(await measureOurs(backend, Number(batch), Number(steps))));
    return;
  }
  const gpu = await probeGpu();
  const available: Record<string, string | undefined> = {
    blas: openBlasAvailable() ? undefined : "OpenBLAS not found",
    wasm: undefined,
    webgpu: !gpu.found
      ? "no GPU adapter"
      : gpu.fallback && !values["software-gpu"]
      ? `software adapter "${gpu.description}" (pass --software-gpu to time it)`
      : undefined,
  };
  const steps = Number(values.steps);
  const rounds = Number(values.rounds);
  for (const backend of values.backends.split(",")) {
    if (available[backend]) {
      console.log(`sae_step backend=${backend} skipped: ${available[backend]}`);
      continue;
    }
    for (const batch of values.batches.split(",").map(Number)) {
      if (backend === "wasm" && batch !== 1024) continue;
      const n = backend === "wasm" ? 2 : steps;
      const caseRounds = backend === "blas" ? rounds : 1;
      // Alternate the two so load from other processes hits both alike; report medians.
      const ours: Measured[] = [], torch: Measured[] = [];
      for (let r = 0; r < caseRounds; r++) {
        ours.push(await runCase<Measured>(import.meta.filename!, `${backend}:${batch}:${n}`));
        torch.push(await measureTorch(batch, n));
      }
      const [o, t] = [ours, torch].map((ms) => ({
        seconds: median(ms.map((m) => m.seconds)),
        rss_mb: Math.max(...ms.map((m) => m.rss_mb)),
      }));
      console.log(
        `sae_step d=${D} m=${M} batch=${batch} backend=${backend} steps=${n} rounds=${caseRounds} ` +
          `rss_mb=${o.rss_mb.toFixed(0)} pytorch_rss_mb=${t.rss_mb.toFixed(0)} ` +
          `ours=${o.seconds.toFixed(3)} pytorch=${t.seconds.toFixed(3)} ` +
          `ratio=${(o.seconds / t.seconds).toFixed(2)}`,
      );
    }
  }
}

if (import.meta.main) await main();
