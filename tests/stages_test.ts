// End-to-end tests of the training stages (baselines, sae, lcblm) on the < 1 MB test model:
// artifacts and tables, skip-when-finished, determinism over seeds, bad inputs, and the SAELens
// export checked against the model it came from.
// Run: deno test -A tests/stages_test.ts

import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { buildOfflineBackbone } from "../backbone/offline_backbones.ts";
import { readArrowTable } from "../core/arrow_table.ts";
import { validateConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { EmbeddingsReader, EmbeddingsWriter } from "../core/embeddings_store.ts";
import { decodeSafetensors } from "../core/train/safetensors.ts";
import { Standardizer } from "../core/train/standardizer.ts";
import { UserError } from "../core/user_error.ts";
import { autoencoderStage } from "../stages/_autoencoder_stage.ts";
import { baselines } from "../stages/baselines.ts";
import { extract } from "../stages/extract.ts";
import { lcblmFamily } from "../stages/lcblm.ts";
import { saeFamily } from "../stages/sae.ts";

const ROOT = await Deno.makeTempDir({ prefix: "stages_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(ROOT, { recursive: true }));
const MODEL = `${ROOT}/tiny-gpt2-test`;
await buildOfflineBackbone("tiny-gpt2-test", MODEL);

const config = (dir: string, extra: Record<string, Record<string, unknown>> = {}) =>
  validateConfig({
    run: { dir, seeds: [0, 1, 2] },
    backbone: { model: MODEL, judge: `${ROOT}/judge` },
    data: { max_documents: 40 },
    extract: { max_length: 64, stride: 64, max_tokens: 1500 },
    train: { backend: "blas", checkpoint_every: 5 },
    heads: { epochs: 1, batch_size: 256 },
    sae: { batch_size: 256, epochs: 1, k: 4, k_aux: 16, dead_tokens: 500, expansion: 2 },
    lcblm: { concepts: 8, embedding_dim: 4, batch_size: 256, epochs: 1, prior: 0.3 },
    ...extra,
  });

const RUN = `${ROOT}/run`;
await extract(config(RUN));

Deno.test("baselines: original head scored once, trained heads per seed, table saved", async () => {
  const { rows } = await baselines(config(RUN));
  assert.deepEqual(rows.map((r) => `${r.model}/${r.seed}`), [
    "original_head/-1",
    "finetuned_head/0",
    "new_head/0",
    "finetuned_head/1",
    "new_head/1",
    "finetuned_head/2",
    "new_head/2",
  ]);
  for (const r of rows) {
    assert.ok(Math.abs(Number(r.val_ppl) - Math.exp(Number(r.val_ce))) < 1e-6 * Number(r.val_ppl));
  }
  // A random 512-token model is near-uniform: CE close to ln 512.
  assert.ok(Math.abs(Number(rows[0].val_ce) - Math.log(512)) < 0.1);
  assert.deepEqual(await readArrowTable(`${RUN}/baselines/metrics.arrow`), rows);
  const m = JSON.parse(await Deno.readTextFile(`${RUN}/baselines/new_head/seed-0/metrics.json`));
  assert.ok(m.history.losses.length > 0 && m.best.step > 0);
  assert.ok(await Deno.stat(`${RUN}/baselines/new_head/seed-0/config.toml`));
});

Deno.test("sae: metrics per seed, skip when finished, SAELens export reproduces the SAE", async () => {
  const cfg = config(RUN);
  const first = await autoencoderStage(cfg, saeFamily(cfg));
  assert.equal(first.rows.length, 3);
  for (const r of first.rows) {
    // TopK: at most k active (the ReLU after TopK may zero a few).
    assert.ok(Number(r.l0) <= 4 && Number(r.l0) > 3, `L0 ${r.l0}`);
    assert.ok(Number(r.fvu) > 0 && Number(r.fvu) < 1.5);
    assert.ok(Number(r.dead_fraction) >= 0 && Number(r.dead_fraction) <= 1);
  }
  // Different seeds, different models; rerun skips and returns the same rows.
  assert.notEqual(first.rows[0].fvu, first.rows[1].fvu);
  const before = (await Deno.stat(`${RUN}/sae/topk_sae/seed-0/metrics.json`)).mtime;
  const again = await autoencoderStage(cfg, saeFamily(cfg));
  assert.deepEqual(again.rows, first.rows);
  assert.deepEqual((await Deno.stat(`${RUN}/sae/topk_sae/seed-0/metrics.json`)).mtime, before);

  // SAELens: relu(x·W_enc + b_enc − b_dec·W_enc) top-k, decode with W_dec + b_dec, on RAW x,
  // must equal standardise → our SAE → invert.
  const dir = `${RUN}/sae/topk_sae/seed-0`;
  const lens = decodeSafetensors(await Deno.readFile(`${dir}/saelens/sae_weights.safetensors`));
  const ours = decodeSafetensors(await Deno.readFile(`${dir}/model.safetensors`)).tensors;
  const lensCfg = JSON.parse(await Deno.readTextFile(`${dir}/saelens/cfg.json`));
  assert.equal(lensCfg.architecture, "topk");
  assert.deepEqual(lensCfg.activation_fn_kwargs, { k: 4 });
  const reader = await EmbeddingsReader.open(`${RUN}/embeddings.h5`);
  const x = reader.read("validation", 0, 16).embeddings;
  reader.close();
  const std = Standardizer.fromTensors(ours);
  const t = lens.tensors;
  const [ourHat, lensHat] = tf.tidy(() => {
    const xs = tf.tensor2d(x, [16, 32]);
    const topkDecode = (pre: tf.Tensor2D, wd: tf.Tensor2D, b: tf.Tensor) => {
      const { values, indices } = tf.topk(pre, 4);
      const z = tf.relu(values);
      const dense = tf.sum(tf.mul(tf.oneHot(indices, pre.shape[1]), tf.expandDims(z, 2)), 1);
      return tf.add(tf.matMul(dense, wd), b);
    };
    const f = (name: string, shape: number[]) => tf.tensor(ours[name].data as Float32Array, shape);
    const xn = tf.div(tf.sub(xs, tf.tensor1d(std.mean)), tf.tensor1d(std.std));
    const pre = tf.add(
      tf.matMul(tf.sub(xn, f("b", [32])), f("W_e", [64, 32]), false, true),
      f("b_e", [64]),
    );
    const ourN = topkDecode(pre as tf.Tensor2D, f("W_d", [64, 32]) as tf.Tensor2D, f("b", [32]));
    const our = tf.add(tf.mul(ourN, tf.tensor1d(std.std)), tf.tensor1d(std.mean));
    const g = (name: string, shape: number[]) => tf.tensor(t[name].data as Float32Array, shape);
    const bDec = g("b_dec", [32]);
    const lpre = tf.add(tf.matMul(tf.sub(xs, bDec), g("W_enc", [32, 64])), g("b_enc", [64]));
    const lhat = topkDecode(lpre as tf.Tensor2D, g("W_dec", [64, 32]) as tf.Tensor2D, bDec);
    return [our.dataSync(), lhat.dataSync()];
  });
  let worst = 0;
  for (let i = 0; i < ourHat.length; i++) worst = Math.max(worst, Math.abs(ourHat[i] - lensHat[i]));
  assert.ok(worst < 1e-3 * (1 + Math.max(...Array.from(ourHat, Math.abs))), `max diff ${worst}`);
});

Deno.test("lcblm: metrics per seed, concept L0 within K, same seed repeats", async () => {
  const cfg = config(RUN);
  const { rows } = await autoencoderStage(cfg, lcblmFamily(cfg));
  assert.equal(rows.length, 3);
  for (const r of rows) assert.ok(Number(r.l0) >= 0 && Number(r.l0) <= 8);
  // Same seed in a fresh run dir: identical metrics (deterministic on one backend).
  const other = `${ROOT}/run-repeat`;
  await Deno.mkdir(other);
  await Deno.copyFile(`${RUN}/embeddings.h5`, `${other}/embeddings.h5`);
  const cfg2 = config(other, { run: { dir: other, seeds: [1] } });
  const repeat = await autoencoderStage(cfg2, lcblmFamily(cfg2));
  assert.deepEqual(repeat.rows[0], rows[1]);
  // Resampling every epoch of three: two passes (at 1/3 and 2/3 of training, not after 80%),
  // each on the stage's sample, logged beside the model.
  const lcblm = { ...cfg2.lcblm, epochs: 3, resample_every: 1 };
  const cfg3 = validateConfig({ ...cfg2, lcblm });
  await autoencoderStage(cfg3, lcblmFamily(cfg3));
  const dir = `${other}/lcblm/lcblm/seed-1`;
  const { steps } = JSON.parse(await Deno.readTextFile(`${dir}/metrics.json`));
  const events = JSON.parse(await Deno.readTextFile(`${dir}/resampling.json`));
  const every = Math.round(steps / 3);
  assert.deepEqual(events.map((e: { step: number }) => e.step), [every, 2 * every]);
  for (const e of events) assert.ok(e.resampled.every((k: number) => k >= 0 && k < 8));
  await assert.rejects(Deno.stat(`${RUN}/lcblm/lcblm/seed-0/resampling.json`), "only when on");
});

Deno.test("training stages refuse embeddings of another backbone or with NaN, writing nothing", async () => {
  const wrong = config(RUN, { backbone: { model: `${ROOT}/other-model`, judge: `${ROOT}/judge` } });
  await assert.rejects(
    baselines(wrong),
    (e: Error) => e instanceof UserError && /holds embeddings of backbone/.test(e.message),
  );
  const missing = config(`${ROOT}/nothing-here`);
  await assert.rejects(
    baselines(missing),
    (e: Error) => e instanceof UserError && /deno task extract/.test(e.message),
  );
  await assert.rejects(Deno.stat(`${ROOT}/nothing-here/baselines`));
  // A file with a NaN embedding.
  const nanDir = `${ROOT}/nan-run`;
  await Deno.mkdir(nanDir);
  const w = await EmbeddingsWriter.create(`${nanDir}/embeddings.h5`, 2);
  const ids = new Int32Array([1, 2, 3]);
  w.append("train", {
    embeddings: new Float32Array([0, 1, NaN, 2, 3, 4]),
    input_ids: ids,
    next_ids: ids,
    doc_index: ids,
    position: ids,
  });
  w.setAttribute("model_id", MODEL);
  w.close();
  await assert.rejects(
    autoencoderStage(config(nanDir), saeFamily(config(nanDir))),
    (e: Error) =>
      e instanceof UserError && /non-finite embedding \(NaN\) in train row 1/.test(e.message),
  );
  await assert.rejects(Deno.stat(`${nanDir}/sae`));
});

Deno.test("trained configurations: logits, edits, keep-error identity", async () => {
  const { loadTrainedSet } = await import("../stages/_trained_models.ts");
  const cfg = config(RUN);
  const reader = await EmbeddingsReader.open(`${RUN}/embeddings.h5`);
  const set = await loadTrainedSet(cfg, reader, 0);
  assert.deepEqual(set.configurations.map((c) => c.name), [
    "original",
    "finetuned_head",
    "new_head",
    "sae_latents",
    "sae_recon_original",
    "lcblm_latents",
    "lcblm_recon_original",
  ]);
  const x = reader.read("validation", 0, 8).embeddings;
  const wU = reader.array("lm_head/weight")!.data as Float32Array;
  reader.close();
  const byName = Object.fromEntries(set.configurations.map((c) => [c.name, c]));
  const values = (name: string, edit?: Parameters<typeof byName.original.logits>[1]) =>
    tf.tidy(() => byName[name].logits(tf.tensor2d(x, [8, 32]), edit).dataSync());
  // The original head is h·W_Uᵀ, computed here in float64.
  const orig = values("original");
  for (const [r, v] of [[0, 0], [3, 100], [7, 511]]) {
    let s = 0;
    for (let j = 0; j < 32; j++) s += x[r * 32 + j] * wU[v * 32 + j];
    assert.ok(Math.abs(orig[r * 512 + v] - s) < 1e-4);
  }
  for (const kind of ["sae", "lcblm"]) {
    const name = `${kind}_recon_original`;
    // Keeping the error with a no-op edit gives back h exactly: the original head's logits.
    const same = values(name, { latent: 0, mode: "scale", value: 1, keepError: true });
    for (let i = 0; i < orig.length; i++) assert.ok(Math.abs(same[i] - orig[i]) < 1e-3);
    // Without the error term, a no-op edit is the plain reconstruction.
    const recon = values(name);
    const noop = values(name, { latent: 0, mode: "scale", value: 1, keepError: false });
    assert.deepEqual(Array.from(noop), Array.from(recon));
    // Ablating a latent changes the latent-head logits.
    const edited = values(`${kind}_latents`, {
      latent: 1,
      mode: "clamp",
      value: 5,
      keepError: false,
    });
    assert.notDeepEqual(Array.from(edited), Array.from(values(`${kind}_latents`)));
  }
  set.dispose();
  // Settings that do not match the trained models: an error naming the key, nothing loaded.
  const changed = (section: "sae" | "lcblm", key: string, value: unknown) =>
    validateConfig({ ...cfg, [section]: { ...cfg[section], [key]: value } });
  const mismatched: Array<[Config, RegExp]> = [
    [
      changed("lcblm", "concepts", 9),
      /\[lcblm\]\.concepts is 9 in the configuration, .* trained with 8/,
    ],
    [
      changed("sae", "k", 3),
      /\[sae\]\.k is 3 in the configuration, .* trained with 4: set \[sae\]\.k = 4/,
    ],
    [changed("lcblm", "encoder", "mlp"), /\[lcblm\]\.encoder is "mlp" .* trained with "shallow"/],
  ];
  const again = await EmbeddingsReader.open(`${RUN}/embeddings.h5`);
  const before = tf.memory().numTensors;
  (await loadTrainedSet(cfg, again, 0)).dispose();
  assert.equal(tf.memory().numTensors, before, "dispose frees everything a load made");
  for (const [bad, message] of mismatched) {
    await assert.rejects(
      loadTrainedSet(bad, again, 0),
      (e: Error) => e instanceof UserError && message.test(e.message),
    );
  }
  assert.equal(tf.memory().numTensors, before, "a refused load leaves no tensors");
  again.close();
});
