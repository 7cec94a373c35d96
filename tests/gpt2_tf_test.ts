// Tests for the TensorFlow.js GPT-2 (models/gpt2_tf.ts) on a tiny model (vocab 61, d 16, 2 layers,
// 2 heads): it matches the exported ONNX graph (onnxruntime) and a PyTorch forward and backward,
// converts back to HF weights exactly, is causal, and learns. Run: deno test -A tests/gpt2_tf_test.ts

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs";
import ort from "onnxruntime-node";
import { gpt2OnnxModel } from "../backbone/gpt2_onnx.ts";
import {
  gpt2NamedTensors,
  type Gpt2Shape,
  type Gpt2Weights,
  randomGpt2Weights,
} from "../backbone/gpt2_weights.ts";
import { registerBlasBackend } from "../core/backends/blas_backend.ts";
import { Rng } from "../core/rng.ts";
import { Adam } from "../core/train/adam.ts";
import { Gpt2Tf } from "../models/gpt2_tf.ts";

const PYTHON = "/usr/bin/python3";
const pythonSkip = (() => {
  try {
    const probe = new Deno.Command(PYTHON, {
      args: ["-c", "import onnx, torch, numpy"],
      stderr: "piped",
    }).outputSync();
    return probe.success ? "" : `${PYTHON} cannot import onnx, torch and numpy`;
  } catch (e) {
    return `${PYTHON} cannot run (${(e as Error).message})`;
  }
})();
if (pythonSkip) console.log(`Skipping the PyTorch gradient test: ${pythonSkip}`);
const SHAPE: Gpt2Shape = { vocabSize: 61, nPositions: 16, nEmbd: 16, nLayer: 2, nHead: 2 };
const IDS = [
  [5, 17, 3, 60, 0, 42, 42, 8, 13, 29, 31, 2],
  [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 28, 22],
];

/** GPT-2 init plus N(0, 0.1) on every value (biases and LayerNorms included): O(1) logits. */
function perturbedWeights(seed: number): Gpt2Weights {
  const weights = randomGpt2Weights(SHAPE, seed);
  const rng = new Rng(seed + 1);
  for (const t of gpt2NamedTensors(SHAPE, weights)) {
    for (let i = 0; i < t.data.length; i++) t.data[i] += 0.1 * rng.normal();
  }
  return weights;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "lengths differ");
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** Logits [b, s, vocab] of the ONNX graph for full-length inputs and an empty KV cache. */
async function onnxLogits(model: Uint8Array, ids: number[][]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(model);
  const [b, s] = [ids.length, ids[0].length];
  const int64 = (rows: number[][]) =>
    new ort.Tensor("int64", BigInt64Array.from(rows.flat().map(BigInt)), [b, s]);
  const feeds: Record<string, ort.Tensor> = {
    input_ids: int64(ids),
    attention_mask: int64(ids.map((row) => row.map(() => 1))),
    position_ids: int64(ids.map((row) => row.map((_, j) => j))),
  };
  const headDim = SHAPE.nEmbd / SHAPE.nHead;
  for (const name of session.inputNames.filter((n) => n.startsWith("past_key_values."))) {
    feeds[name] = new ort.Tensor("float32", new Float32Array(0), [b, SHAPE.nHead, 0, headDim]);
  }
  const out = await session.run(feeds);
  await session.release();
  return out.logits.data as Float32Array;
}

/** The backends to check: cpu, and blas where OpenBLAS loads. */
function backends(): string[] {
  try {
    registerBlasBackend();
    return ["cpu", "blas"];
  } catch {
    return ["cpu"];
  }
}

for (const backend of backends()) {
  Deno.test(`${backend}: tfjs logits = exported ONNX logits (onnxruntime) within 1e-4`, async () => {
    await tf.setBackend(backend);
    const model = new Gpt2Tf(`onnx_${backend}`, SHAPE, perturbedWeights(3));
    const ours = tf.tidy(() => model.logits(tf.tensor2d(IDS, undefined, "int32")).dataSync());
    const theirs = await onnxLogits(gpt2OnnxModel(SHAPE, await model.weights()), IDS);
    model.dispose();
    assert.ok(Math.max(...theirs.map(Math.abs)) > 0.5, "logits should be O(1)");
    const diff = maxAbsDiff(ours, theirs);
    assert.ok(diff <= 1e-4, `max abs diff ${diff}`);
  });
}

Deno.test("weights() returns the weights it was built from (c_attn split into q|k|v and back)", async () => {
  await tf.setBackend("cpu");
  const weights = perturbedWeights(5);
  const model = new Gpt2Tf("roundtrip", SHAPE, weights);
  const back = gpt2NamedTensors(SHAPE, await model.weights());
  model.dispose();
  for (const [i, t] of gpt2NamedTensors(SHAPE, weights).entries()) {
    assert.deepEqual(back[i].data, t.data, t.name);
  }
});

Deno.test("causal: changing token 6 leaves the logits of positions 0..5 unchanged", () => {
  tf.setBackend("cpu");
  const model = new Gpt2Tf("causal", SHAPE, perturbedWeights(7));
  const changed = IDS.map((row) => row.map((t, j) => j === 6 ? (t + 1) % 61 : t));
  const [a, b] = [IDS, changed].map((ids) =>
    tf.tidy(() => model.logits(tf.tensor2d(ids, undefined, "int32")).arraySync())
  );
  model.dispose();
  for (let r = 0; r < 2; r++) {
    assert.ok(maxAbsDiff(a[r].slice(0, 6).flat(), b[r].slice(0, 6).flat()) === 0, "leak");
    assert.ok(maxAbsDiff(a[r][6], b[r][6]) > 1e-3, "position 6 should change");
  }
});

Deno.test({
  name: "loss and gradients match a PyTorch reference (tests/py/gpt2_grad_reference.py)",
  ignore: pythonSkip !== "",
  fn: torchGradients,
});

async function torchGradients() {
  await tf.setBackend("cpu");
  const model = new Gpt2Tf("torch", SHAPE, perturbedWeights(11));
  const weights = await model.weights();
  const dir = await Deno.makeTempDir({ prefix: "gpt2_tf_test_" });
  try {
    await Deno.writeFile(`${dir}/model.onnx`, gpt2OnnxModel(SHAPE, weights));
    await Deno.writeTextFile(
      `${dir}/inputs.json`,
      JSON.stringify({ input_ids: IDS, n_head: SHAPE.nHead }),
    );
    const script = fileURLToPath(new URL("./py/gpt2_grad_reference.py", import.meta.url));
    const py = await new Deno.Command(PYTHON, {
      args: [script, `${dir}/model.onnx`, `${dir}/inputs.json`, `${dir}/out.json`],
    }).output();
    assert.ok(py.success, `python failed:\n${new TextDecoder().decode(py.stderr)}`);
    const ref = JSON.parse(await Deno.readTextFile(`${dir}/out.json`)) as {
      loss: number;
      grads: Record<string, number[]>;
    };
    // Our gradients in HF layout: the same conversion as the weights, applied to the grads.
    const ids = tf.tensor2d(IDS, undefined, "int32");
    const { value, grads } = tf.variableGrads(() => model.loss(ids), model.variables());
    assert.ok(
      Math.abs(value.dataSync()[0] - ref.loss) < 1e-5,
      `loss ${value.dataSync()} vs ${ref.loss}`,
    );
    const asModel = new Gpt2Tf("torch_grads", SHAPE, weights);
    for (const v of asModel.variables()) {
      v.assign(grads[v.name.replace("torch_grads/", "torch/")]);
    }
    const ours = gpt2NamedTensors(SHAPE, await asModel.weights());
    asModel.dispose();
    tf.dispose([ids, value, ...Object.values(grads)]);
    for (const t of ours) {
      const diff = maxAbsDiff(t.data, ref.grads[t.name]);
      assert.ok(diff <= 1e-5, `${t.name}: max abs diff ${diff}`);
    }
  } finally {
    model.dispose();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a few AdamW steps lower the loss on a fixed batch", () => {
  tf.setBackend("cpu");
  const model = new Gpt2Tf("learn", SHAPE, randomGpt2Weights(SHAPE, 13));
  const adam = new Adam(model.variables(), { lr: 1e-2, weightDecay: 0.01 });
  const ids = tf.tensor2d(IDS, undefined, "int32");
  const losses = Array.from(
    { length: 20 },
    (_, step) => model.trainStep(ids, adam, { seed: step }),
  );
  ids.dispose();
  adam.dispose();
  model.dispose();
  assert.ok(Math.abs(losses[0] - Math.log(61)) < 0.1, `initial loss ${losses[0]} ≈ log 61`);
  assert.ok(losses[19] < 0.5 * losses[0], `loss ${losses[0]} → ${losses[19]}`);
});
