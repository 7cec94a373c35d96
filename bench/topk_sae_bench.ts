/**
 * The TopK SAE training step (models/sae.ts: d = 768, m = 24576, k = 32, k_aux = 256, AuxK on
 * from every 10th latent marked dead (a latent leaves the set once it fires, in both), Adam lr 1e-4,
 * batch 1024) on the blas backend, sparse (fused gather/scatter row products; AuxK as matmuls over
 * the dead rows, see models/_sae_losses.ts) and dense paths, against the same step in PyTorch
 * (tests/py/topk_sae_torch.py, 2 threads, dense scatter + matmul decode). Also the LCBLM step (models/lcblm.ts at its default
 * K = 64, E = 32, d = 768, batch 2048) on blas, ours only. Each case runs in its own process.
 * One line per SAE case, ending `ours=<s> pytorch=<s> ratio=<ours/pytorch>`.
 *
 * Usage: deno task bench:topk [--steps=2] [--rounds=2] [--profile]. Seconds are the median step
 * after two warm-up steps; ours and PyTorch alternate `rounds` times and medians are reported
 * (other processes' load moves both alike). --profile prints, per case, where one step's time
 * goes by kernel (tf.profile).
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { parseArgs } from "node:util";
import { selectBackend } from "../core/backends/select_backend.ts";
import { openBlasAvailable } from "../core/backends/openblas.ts";
import { LcblmSchema, SaeSchema, TrainSchema } from "../core/config_schema.ts";
import { Adam } from "../core/train/adam.ts";
import { Rng } from "../core/rng.ts";
import { Sae } from "../models/sae.ts";
import { Lcblm } from "../models/lcblm.ts";
import { median, medianStepSeconds, peakRssMb, runCase } from "./_stats.ts";
import { runTorchScript } from "./_torch_run.ts";

const D = 768, EXPANSION = 32, K = 32, K_AUX = 256, BATCH = 1024, DEAD_EVERY = 10;
const LCBLM_BATCH = 2048;
const TORCH_SCRIPT = new URL("../tests/py/topk_sae_torch.py", import.meta.url).pathname;

interface Measured {
  seconds: number;
  rss_mb: number;
  dead?: number;
  profile?: string;
}

function normal(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal());
}

/** Per kernel name: total ms and calls over one profiled step, largest first. */
async function profileStep(step: () => void): Promise<string> {
  const info = await tf.profile(() => {
    step();
    return tf.scalar(0);
  });
  const byName = new Map<string, { ms: number; calls: number }>();
  let total = 0;
  for (const k of info.kernels) {
    const ms = await k.kernelTimeMs as number;
    const e = byName.get(k.name) ?? { ms: 0, calls: 0 };
    e.ms += ms;
    e.calls++;
    total += ms;
    byName.set(k.name, e);
  }
  const top = [...byName].sort((a, b) => b[1].ms - a[1].ms).slice(0, 12);
  return `kernels_total_ms=${total.toFixed(0)} ` +
    top.map(([n, e]) => `${n}=${e.ms.toFixed(0)}ms/${e.calls}`).join(" ");
}

/** Child process: one case, `steps` timed steps after two warm-up steps. */
async function measureOurs(which: string, steps: number, profile: boolean): Promise<Measured> {
  await selectBackend(TrainSchema.parse({ backend: "blas" }), () => {});
  const rng = new Rng(0);
  let step: () => void;
  let dead: number | undefined;
  let dispose: () => void;
  if (which === "lcblm") {
    const x = tf.tensor2d(normal(rng, LCBLM_BATCH * D), [LCBLM_BATCH, D]);
    const model = new Lcblm(D, LcblmSchema.parse({}), 0);
    const adam = new Adam(model.variables(), { lr: 1e-3 });
    let seed = 0;
    step = () => void model.trainStep(x, adam, seed++);
    dispose = () => tf.dispose([x, ...model.variables()]);
  } else {
    const x = tf.tensor2d(normal(rng, BATCH * D), [BATCH, D]);
    const cfg = SaeSchema.parse({ expansion: EXPANSION, k: K, k_aux: K_AUX, bias_init: "mean" });
    const sae = new Sae(D, cfg, 0, normal(rng, BATCH * D), { sparse: which === "sparse" });
    // AuxK on: every DEAD_EVERY-th latent starts dead (PyTorch uses the same fixed set).
    const state = sae.toTensors();
    const since = state.tokens_since_fired.data as Float64Array;
    for (let i = 0; i < since.length; i += DEAD_EVERY) since[i] = 1e12;
    sae.loadTensors(state);
    const adam = new Adam(sae.variables(), { lr: cfg.lr });
    step = () => void sae.trainStep(x, adam);
    dispose = () => {
      dead = sae.deadMask().reduce((a, b) => a + b, 0);
      x.dispose();
      sae.dispose();
    };
  }
  const seconds = await medianStepSeconds(step, steps);
  const prof = profile ? await profileStep(step) : undefined;
  dispose();
  return { seconds, rss_mb: peakRssMb(), dead, profile: prof };
}

function runOurs(which: string, steps: number, profile: boolean): Promise<Measured> {
  return runCase<Measured>(import.meta.filename!, `${which}:${steps}${profile ? ":profile" : ""}`);
}

/** PyTorch as installed, without the OpenBLAS variables tuned for our process. */
function runTorch(steps: number): Promise<Measured> {
  return runTorchScript<Measured>(TORCH_SCRIPT, [BATCH, steps, 2, DEAD_EVERY]);
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      case: { type: "string" },
      steps: { type: "string", default: "2" },
      rounds: { type: "string", default: "2" },
      profile: { type: "boolean", default: false },
    },
  });
  if (values.case) {
    const [which, steps, profile] = values.case.split(":");
    console.log(JSON.stringify(await measureOurs(which, Number(steps), profile === "profile")));
    return;
  }
  if (!openBlasAvailable()) {
    console.log("topk_sae_step skipped: OpenBLAS not found");
    return;
  }
  const steps = Number(values.steps), rounds = Number(values.rounds);
  const results: Record<string, Measured[]> = { sparse: [], dense: [], torch: [], lcblm: [] };
  // Alternate ours and PyTorch so load from other processes hits both alike.
  for (let r = 0; r < rounds; r++) {
    const profile = values.profile && r === 0;
    results.sparse.push(await runOurs("sparse", steps, profile));
    results.torch.push(await runTorch(steps));
    results.dense.push(await runOurs("dense", steps, profile));
    results.torch.push(await runTorch(steps));
    results.lcblm.push(await runOurs("lcblm", steps, profile));
  }
  const med = (ms: Measured[]) => median(ms.map((m) => m.seconds));
  const torch = med(results.torch);
  const torchRss = Math.max(...results.torch.map((m) => m.rss_mb));
  for (const path of ["sparse", "dense"]) {
    const ms = results[path];
    const ours = med(ms);
    console.log(
      `topk_sae_step d=${D} m=${D * EXPANSION} k=${K} k_aux=${K_AUX} batch=${BATCH} auxk=on ` +
        `dead_start=${Math.ceil(D * EXPANSION / DEAD_EVERY)} dead_end=${ms[0].dead} ` +
        `pytorch_dead_end=${
          results.torch[0].dead
        } path=${path} backend=blas steps=${steps} rounds=${rounds} ` +
        `rss_mb=${Math.max(...ms.map((m) => m.rss_mb)).toFixed(0)} ` +
        `pytorch_rss_mb=${torchRss.toFixed(0)} ` +
        `ours=${ours.toFixed(3)} pytorch=${torch.toFixed(3)} ratio=${(ours / torch).toFixed(2)}`,
    );
  }
  console.log(
    `lcblm_step K=64 E=32 d=${D} batch=${LCBLM_BATCH} backend=blas steps=${steps} ` +
      `rounds=${rounds} rss_mb=${Math.max(...results.lcblm.map((m) => m.rss_mb)).toFixed(0)} ` +
      `ours=${med(results.lcblm).toFixed(3)}`,
  );
  for (const path of ["sparse", "dense", "lcblm"]) {
    const p = results[path][0].profile;
    if (p) console.log(`profile ${path}: ${p}`);
  }
}

if (import.meta.main) await main();
