// End-to-end test of `deno task train-backbones` on a few tiny steps (the real tokenizer and
// corpus, a short context), and of `deno task backbones` copying the committed trained models.
// Run: deno test -A tests/train_backbones_test.ts

import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { buildOfflineBackbone, OFFLINE_BACKBONES } from "../backbone/offline_backbones.ts";
import { trainBackbone } from "../stages/train_backbones.ts";

const ROOT = await Deno.makeTempDir({ prefix: "train_backbones_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(ROOT, { recursive: true }));

Deno.test("train-backbones: a 2-step run exports a folder transformers.js generates from, then skips", async () => {
  await tf.setBackend("cpu");
  const options = {
    root: `${ROOT}/trained`,
    workRoot: `${ROOT}/work`,
    overrides: {
      steps: 2,
      batchSize: 2,
      context: 16,
      valContexts: 2,
      validateEvery: 1,
      warmupSteps: 1,
      prompts: ["The whale"],
    },
  };
  const first = await trainBackbone("tiny-gpt2", options);
  assert.equal(first.skipped, false);
  assert.equal(first.steps, 2);
  assert.ok(Math.abs(first.valLoss - first.uniformLoss) < 1, `val CE ${first.valLoss}`);
  assert.equal(first.samples?.greedy.length, 1);
  assert.ok(first.samples!.sampled[0].startsWith("The whale"), first.samples!.sampled[0]);
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/trained/tiny-gpt2/config.json`));
  assert.equal(config.n_embd, OFFLINE_BACKBONES["tiny-gpt2"].shape.nEmbd);
  assert.equal(config.lcblm.result.steps, 2);
  const again = await trainBackbone("tiny-gpt2", options);
  assert.equal(again.skipped, true);
  assert.equal(again.valLoss, first.valLoss);
});

Deno.test("backbones: recipes with trained weights copy the committed folder, once", async () => {
  for (const [name, recipe] of Object.entries(OFFLINE_BACKBONES)) {
    if (!recipe.trained) continue;
    const dir = `${ROOT}/copy/${name}`;
    assert.equal(await buildOfflineBackbone(name, dir), true);
    for (const file of ["config.json", "tokenizer.json", "onnx/model.onnx"]) {
      assert.deepEqual(
        await Deno.readFile(`${dir}/${file}`),
        await Deno.readFile(`${recipe.trained}/${file}`),
        `${name}/${file}`,
      );
    }
    assert.equal(await buildOfflineBackbone(name, dir), false);
  }
});
