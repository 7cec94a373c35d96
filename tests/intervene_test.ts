// Tests of intervenability: KL and token mass on hand-made distributions, edits through a
// hand-constructed SAE-like head, the random control, and the intervene and steer stages end to
// end on the < 1 MB test model. Run: deno test -A tests/intervene_test.ts

import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { buildOfflineBackbone } from "../backbone/offline_backbones.ts";
import { readArrowTable } from "../core/arrow_table.ts";
import { validateConfig } from "../core/config.ts";
import { Rng } from "../core/rng.ts";
import {
  controlLatent,
  type EditableHead,
  headLogitRows,
  klDivergence,
  latentTokens,
  teacherForcedEffect,
  tokenMass,
  type Trajectory,
} from "../eval/intervention.ts";
import { autoencoderStage } from "../stages/_autoencoder_stage.ts";
import { editColumn, type LatentEdit } from "../stages/_latent_models.ts";
import { baselines } from "../stages/baselines.ts";
import { extract } from "../stages/extract.ts";
import { intervene } from "../stages/intervene.ts";
import { lcblmFamily } from "../stages/lcblm.ts";
import { saeFamily } from "../stages/sae.ts";
import { steerMain } from "../stages/steer.ts";

await tf.setBackend("cpu");

const close = (a: number, b: number, tol: number, what: string) =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

Deno.test("KL and token mass on hand-made distributions", () => {
  // p = (0.5, 0.25, 0.25), q = (0.25, 0.25, 0.5): KL = 0.5 ln 2 + 0 + 0.25 ln 0.5.
  const p = [0.5, 0.25, 0.25].map(Math.log);
  const q = [0.25, 0.25, 0.5].map((v) => Math.log(v) + 7); // a shift changes nothing
  close(klDivergence(p, q), 0.5 * Math.log(2) + 0.25 * Math.log(0.5), 1e-12, "KL(p‖q)");
  close(klDivergence(q, p), 0.25 * Math.log(0.5) + 0.5 * Math.log(2), 1e-12, "KL(q‖p)");
  assert.equal(klDivergence(p, p), 0);
  assert.ok(klDivergence([10, 0, 0], [0, 0, 0]) > 0);
  close(tokenMass(p, [0, 2]), 0.75, 1e-12, "mass");
  assert.throws(() => klDivergence([0, 0], [0, 0, 0]), /2 and 3 tokens/);
});

// A hand-made SAE-like configuration: z = relu(h E) [B, 3], logits = z W [B, 5]. Latent 2's encoder
// column is zero (it never fires); latent 1 writes +5 onto token 3.
const E = tf.tensor2d([[1, 0.5, 0], [-0.5, 1, 0]]); // [d = 2, m = 3]
const W = tf.tensor2d([[1, 0, 0, 0, 0.2], [0, 0, 0, 5, 0], [0, 3, 0, 0, 0]]); // [m, vocab]
const HEAD: EditableHead = {
  logits: (h, edit?: LatentEdit) =>
    tf.tidy(() => {
      const z = tf.relu(tf.matMul(h, E)) as tf.Tensor2D;
      return tf.matMul(edit ? editColumn(z, edit) : z, W) as tf.Tensor2D;
    }),
};
const HIDDEN = Float32Array.of(1, 0, 0.2, 0.9, -1, 2, 0.5, 0.5); // 4 positions, d = 2
const TRAJ: Pick<Trajectory, "hidden" | "d" | "logits" | "vocab"> = {
  hidden: HIDDEN,
  d: 2,
  logits: headLogitRows(HEAD, HIDDEN, 2),
  vocab: 5,
};
const edit = (latent: number, mode: LatentEdit["mode"], value = 0): LatentEdit => ({
  latent,
  mode,
  value,
  keepError: false,
});

Deno.test("ablating an all-zero latent changes nothing: KL exactly 0", () => {
  const effect = teacherForcedEffect(HEAD, TRAJ, edit(2, "ablate"), [1]);
  assert.equal(effect.kl, 0);
  assert.equal(effect.probEdited, effect.probBase);
  // Ablating a live latent does change the distribution.
  assert.ok(teacherForcedEffect(HEAD, TRAJ, edit(0, "ablate"), [0]).kl > 0);
});

Deno.test("a clamp on a latent with a large head weight on token t raises p(t)", () => {
  const tokens = latentTokens(HEAD, TRAJ as Trajectory, 1, 1, 1);
  assert.deepEqual(tokens, [3]);
  const low = teacherForcedEffect(HEAD, TRAJ, edit(1, "clamp", 1), tokens);
  const high = teacherForcedEffect(HEAD, TRAJ, edit(1, "clamp", 4), tokens);
  assert.ok(high.probEdited > low.probEdited, `${high.probEdited} <= ${low.probEdited}`);
  assert.ok(high.probEdited > high.probBase, `${high.probEdited} vs ${high.probBase}`);
  assert.ok(teacherForcedEffect(HEAD, TRAJ, edit(1, "clamp", 0), tokens).probEdited < 0.5);
  assert.ok(high.kl > low.kl);
  // Clamping the control (latent 0) does not raise p(3).
  const ctl = teacherForcedEffect(HEAD, TRAJ, edit(0, "clamp", 4), tokens);
  assert.ok(ctl.probEdited <= ctl.probBase + 1e-9);
});

Deno.test("the random control is another latent, seeded, live ones first", () => {
  const live = [true, true, false, true, true];
  for (let seed = 0; seed < 50; seed++) {
    const j = controlLatent(1, live, new Rng(seed));
    assert.notEqual(j, 1);
    assert.notEqual(j, 2);
    assert.equal(j, controlLatent(1, live, new Rng(seed)));
  }
  assert.equal(controlLatent(0, [true, false], new Rng(0)), 1);
  assert.throws(() => controlLatent(0, [true], new Rng(0)), /one latent/);
});

// ---- The stages on a tiny trained run (one seed, SAE and LCBLM) ----

const ROOT = await Deno.makeTempDir({ prefix: "intervene_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(ROOT, { recursive: true }));
const MODEL = `${ROOT}/tiny-gpt2-test`;
const JUDGE = `${ROOT}/tiny-judge`;
await buildOfflineBackbone("tiny-gpt2-test", MODEL);
await buildOfflineBackbone("tiny-gpt2-test", JUDGE); // same weights, another path: a distinct judge
const RUN = `${ROOT}/run`;
const CONFIG = validateConfig({
  run: { dir: RUN, seeds: [0] },
  backbone: { model: MODEL, judge: JUDGE },
  data: { max_documents: 30 },
  extract: { max_length: 64, stride: 64, max_tokens: 1200 },
  train: { backend: "blas", checkpoint_every: 0 },
  heads: { epochs: 1, batch_size: 256 },
  sae: { batch_size: 256, epochs: 1, k: 4, k_aux: 16, dead_tokens: 500, expansion: 2 },
  lcblm: { concepts: 8, embedding_dim: 4, batch_size: 256, epochs: 1, prior: 0.3 },
  generate: { batch_size: 2, bootstrap: 100 },
  intervene: {
    configurations: ["sae_latents", "lcblm_latents"],
    latents: 2,
    scales: [4],
    clamps: [8],
    samples: 2,
    max_new_tokens: 6,
    top_tokens: 3,
    activation_tokens: 300,
  },
});
await extract(CONFIG);
await baselines(CONFIG);
await autoencoderStage(CONFIG, saeFamily(CONFIG));
await autoencoderStage(CONFIG, lcblmFamily(CONFIG));

Deno.test("intervene stage: dose-response rows, controls on other latents, plot", async () => {
  const { rows, points, table } = await intervene(CONFIG, () => {});
  // 2 configurations × 1 seed × 2 latents × 3 doses × 2 roles; both kinds load together (the
  // LCBLM allows one live model: its statistics are taken before the trained set is loaded).
  assert.equal(rows.length, 24);
  assert.deepEqual([...new Set(rows.map((r) => r.configuration))], [
    "sae_latents",
    "lcblm_latents",
  ]);
  for (const r of rows) {
    if (r.role === "control") assert.notEqual(r.edited_latent, r.latent);
    else assert.equal(r.edited_latent, r.latent);
    assert.ok((r.kl as number) >= 0 && Number.isFinite(r.kl as number));
  }
  const saved = await readArrowTable(`${RUN}/intervene/dose_response.arrow`);
  assert.equal(saved.length, 24);
  assert.ok(points.some((p) => p.mode === "clamp" && p.dose === 0)); // ablation in both panels
  const svg = await Deno.readTextFile(`${RUN}/intervene/dose_response.svg`);
  assert.match(svg, /^<svg[^>]*xmlns/);
  assert.ok(svg.includes("sae_latents") && svg.includes("<circle"));
  assert.match(table, /^configuration\tmode\tdose/);
  console.log(table);
});

Deno.test("steer: prints base and steered continuations; a big clamp changes the text", async () => {
  const lines: string[] = [];
  const cfg = `${ROOT}/steer.toml`;
  await Deno.writeTextFile(cfg, "");
  const [result] = await steerMain([
    `--config=${cfg}`,
    `--run.dir=${RUN}`,
    "--run.seeds=[0]",
    `--backbone.model=${MODEL}`,
    `--backbone.judge=${JUDGE}`,
    "--data.max_documents=30",
    "--extract.max_length=64",
    "--extract.stride=64",
    "--extract.max_tokens=1200",
    "--sae.k=4",
    "--sae.expansion=2",
    "--lcblm.concepts=8",
    "--lcblm.embedding_dim=4",
    "--lcblm.prior=0.3",
    "--train.backend=blas",
    "--generate.temperature=0",
    "--prompt",
    "Call me",
    "--configuration",
    "sae_latents",
    "--tokens",
    "8",
    "--latent",
    "1",
    "--clamp",
    "1000",
  ], { print: (l) => lines.push(l), ask: () => null });
  const out = lines.join("\n");
  assert.ok(out.includes("base") && out.includes("steered: latent 1 clamp 1000"), out);
  assert.ok(result.base.length > 0);
  assert.notEqual(result.steered[0], result.base);
  assert.ok(out.includes(result.base.slice(0, 20).replace(/\n.*/s, "")));
});
