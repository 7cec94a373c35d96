// Tests for the GPT-2 ONNX generator and the LM-head graph utilities, on a tiny model
// (vocab 257, d 32, 2 layers, 4 heads) written to a temp dir. Run: deno test -A tests/gpt2_onnx_test.ts

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import ort from "onnxruntime-node";
import onnxProto from "onnx-proto";
import { AutoModelForCausalLM, AutoTokenizer, env, Tensor } from "@huggingface/transformers";
import { Rng } from "../core/rng.ts";
import { randomGpt2Weights } from "../backbone/gpt2_weights.ts";
import { gpt2OnnxModel, writeGpt2Folder } from "../backbone/gpt2_onnx.ts";
import { findLmHead, withHiddenStateOutput } from "../backbone/lm_head.ts";

const { onnx } = onnxProto;
const PYTHON = "/usr/bin/python3";
const SHAPE = {
  vocabSize: 257,
  nPositions: 64,
  nEmbd: 32,
  nLayer: 2,
  nHead: 4,
};
const EOS = 256;
const WEIGHTS = randomGpt2Weights(SHAPE, 7);
const MODEL = gpt2OnnxModel(SHAPE, WEIGHTS);
const ROOT = await Deno.makeTempDir({ prefix: "gpt2_onnx_test_" });
globalThis.addEventListener(
  "unload",
  () => Deno.removeSync(ROOT, { recursive: true }),
);

/** GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards. */
function bytesToUnicode(): string[] {
  const keep = (b: number) =>
    (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let next = 256;
  return Array.from(
    { length: 256 },
    (_, b) => String.fromCodePoint(keep(b) ? b : next++),
  );
}

/** A byte-level BPE tokenizer with no merges: ids 0..255 are bytes, 256 is <|endoftext|>. */
function byteTokenizer() {
  const vocab = Object.fromEntries(bytesToUnicode().map((c, b) => [c, b]));
  vocab["<|endoftext|>"] = EOS;
  const byteLevel = {
    type: "ByteLevel",
    add_prefix_space: false,
    trim_offsets: true,
    use_regex: true,
  };
  return {
    tokenizerJson: {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: [{
        id: EOS,
        content: "<|endoftext|>",
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: true,
        special: true,
      }],
      normalizer: null,
      pre_tokenizer: byteLevel,
      post_processor: byteLevel,
      decoder: byteLevel,
      model: {
        type: "BPE",
        dropout: null,
        unk_token: null,
        fuse_unk: false,
        byte_fallback: false,
        vocab,
        merges: [],
      },
    },
    tokenizerConfig: {
      tokenizer_class: "GPT2Tokenizer",
      bos_token: "<|endoftext|>",
      eos_token: "<|endoftext|>",
      unk_token: "<|endoftext|>",
      add_prefix_space: false,
      model_max_length: SHAPE.nPositions,
      clean_up_tokenization_spaces: false,
    },
    bosTokenId: EOS,
    eosTokenId: EOS,
  };
}

await writeGpt2Folder(`${ROOT}/tiny`, SHAPE, WEIGHTS, byteTokenizer(), {
  seed: 7,
});

/** Runs an ONNX model with onnxruntime-node; fills position_ids and an empty KV cache when declared. */
async function runOrt(
  model: Uint8Array,
  ids: number[][],
  mask?: number[][],
): Promise<Record<string, ort.Tensor>> {
  const session = await ort.InferenceSession.create(model);
  const [b, s] = [ids.length, ids[0].length];
  const m = mask ?? ids.map((row) => row.map(() => 1));
  const int64 = (rows: number[][]) =>
    new ort.Tensor("int64", BigInt64Array.from(rows.flat().map(BigInt)), [
      b,
      s,
    ]);
  const positions = m.map((row) => {
    let c = -1;
    return row.map((x) => (c += x, x ? c : 1)); // cumsum(mask) - 1, padding filled with 1
  });
  const feeds: Record<string, ort.Tensor> = {
    input_ids: int64(ids),
    attention_mask: int64(m),
  };
  if (session.inputNames.includes("position_ids")) {
    feeds.position_ids = int64(positions);
  }
  const headDim = SHAPE.nEmbd / SHAPE.nHead;
  for (
    const name of session.inputNames.filter((n) => n.startsWith("past_key_values."))
  ) {
    feeds[name] = new ort.Tensor("float32", new Float32Array(0), [
      b,
      SHAPE.nHead,
      0,
      headDim,
    ]);
  }
  const out = await session.run(feeds);
  await session.release();
  return out;
}

/** Asserts two arrays have the same length and differ by at most `tol` everywhere. */
function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what: string,
) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  }
  assert.ok(worst <= tol, `${what}: max abs diff ${worst} > ${tol}`);
}

/** logits[r] = hidden[r] · Wᵀ (+ b), for hidden [rows, d] and W [vocab, d], in float64. */
function project(
  hidden: ArrayLike<number>,
  w: Float32Array,
  vocab: number,
  d: number,
  bias?: Float32Array,
) {
  const rows = hidden.length / d;
  const out = new Float32Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    for (let v = 0; v < vocab; v++) {
      let acc = bias ? bias[v] : 0;
      for (let k = 0; k < d; k++) acc += hidden[r * d + k] * w[v * d + k];
      out[r * vocab + v] = acc;
    }
  }
  return out;
}

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
if (pythonSkip) {
  console.log(`Skipping the PyTorch reference test: ${pythonSkip}`);
}

Deno.test({
  name: "gpt2 onnx passes onnx's full checker and matches a PyTorch GPT-2 within 1e-4",
  ignore: pythonSkip !== "",
  async fn() {
    const ids = [[72, 101, 108, 108, 111, 32, 119, 111, 114, 108], [
      EOS,
      EOS,
      EOS,
      200,
      3,
      250,
      17,
      99,
      99,
      1,
    ]];
    const mask = [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [
      0,
      0,
      0,
      1,
      1,
      1,
      1,
      1,
      1,
      1,
    ]]; // row 1: left padding
    await Deno.writeFile(`${ROOT}/ref_model.onnx`, MODEL);
    await Deno.writeTextFile(
      `${ROOT}/ref_inputs.json`,
      JSON.stringify({
        input_ids: ids,
        attention_mask: mask,
        n_head: SHAPE.nHead,
      }),
    );
    const script = fileURLToPath(
      new URL("./py/gpt2_reference.py", import.meta.url),
    );
    const py = await new Deno.Command(PYTHON, {
      args: [
        script,
        `${ROOT}/ref_model.onnx`,
        `${ROOT}/ref_inputs.json`,
        `${ROOT}/ref_logits.f32`,
      ],
    }).output();
    const decode = (b: Uint8Array) => new TextDecoder().decode(b);
    assert.ok(
      py.success,
      `python failed:\n${decode(py.stdout)}\n${decode(py.stderr)}`,
    );
    const expected = new Float32Array(
      (await Deno.readFile(`${ROOT}/ref_logits.f32`)).buffer,
    );
    const { logits } = await runOrt(MODEL, ids, mask);
    assert.deepEqual(logits.dims, [2, 10, SHAPE.vocabSize]);
    assertClose(
      logits.data as Float32Array,
      expected,
      1e-4,
      "logits vs PyTorch",
    );
  },
});

Deno.test("transformers.js loads the folder: logits = last_hidden_state · W_Uᵀ, cached greedy = uncached argmax, causal hidden states", async (t) => {
  env.allowRemoteModels = false;
  env.localModelPath = `${ROOT}/`;
  const tokenizer = await AutoTokenizer.from_pretrained("tiny");
  const model = await AutoModelForCausalLM.from_pretrained("tiny", {
    dtype: "fp32",
  });
  const head = findLmHead(MODEL);
  const idsOf = (ids: number[]) =>
    new Tensor("int64", BigInt64Array.from(ids.map(BigInt)), [1, ids.length]);
  const forward = (ids: number[]) =>
    model({ input_ids: idsOf(ids), attention_mask: idsOf(ids.map(() => 1)) });
  const prompt: number[] = Array.from(
    tokenizer("hello world").input_ids.data as BigInt64Array,
    Number,
  );

  await t.step("the byte tokenizer round-trips", () => {
    assert.deepEqual(prompt, [...new TextEncoder().encode("hello world")]);
    assert.equal(tokenizer.decode(prompt), "hello world");
  });

  await t.step(
    "a forward returns logits and last_hidden_state, and logits = hidden · W_Uᵀ",
    async () => {
      const out = await forward(prompt);
      assert.deepEqual(out.logits.dims, [1, prompt.length, SHAPE.vocabSize]);
      assert.deepEqual(out.last_hidden_state.dims, [
        1,
        prompt.length,
        SHAPE.nEmbd,
      ]);
      const expected = project(
        out.last_hidden_state.data,
        head.weight,
        head.vocab,
        head.d,
        head.bias,
      );
      assertClose(
        out.logits.data,
        expected,
        1e-4,
        "logits vs last_hidden_state · W_Uᵀ",
      );
    },
  );

  await t.step(
    "greedy generate() with the KV cache equals argmax of full recomputation",
    async () => {
      const maxNew = 10;
      const result = await model.generate({
        input_ids: idsOf(prompt),
        attention_mask: idsOf(prompt.map(() => 1)),
        max_new_tokens: maxNew,
        do_sample: false,
        return_dict_in_generate: true,
      }) as { sequences: Tensor; past_key_values: Record<string, Tensor> };
      const generated = Array.from(
        result.sequences.data as BigInt64Array,
        Number,
      );
      const ids = [...prompt];
      for (let i = 0; i < maxNew; i++) {
        const logits = (await forward(ids)).logits.data as Float32Array;
        const last = logits.subarray((ids.length - 1) * SHAPE.vocabSize);
        ids.push(last.indexOf(Math.max(...last)));
        if (ids.at(-1) === EOS) break;
      }
      assert.deepEqual(generated, ids);
      assert.equal(generated.length, prompt.length + maxNew); // seed 7 meets no EOS: 10 cached steps
      // The final step fed one token against a cache of all earlier ones.
      assert.equal(
        result.past_key_values["past_key_values.0.key"].dims[2],
        ids.length - 1,
      );
    },
  );

  await t.step(
    "changing a later token leaves earlier last_hidden_state bit-identical",
    async () => {
      const changed = [...prompt];
      changed[7] = (changed[7] + 1) % 256;
      const a = (await forward(prompt)).last_hidden_state.data as Float32Array;
      const b = (await forward(changed)).last_hidden_state.data as Float32Array;
      const before = 7 * SHAPE.nEmbd;
      assert.deepEqual(b.subarray(0, before), a.subarray(0, before));
      assert.notDeepEqual(b.subarray(before), a.subarray(before));
    },
  );

  await model.dispose();
});

/** Builds a one-output head graph: hidden [batch, seq, d] → `body` → logits. */
function headGraph(
  nodes: onnxProto.onnx.INodeProto[],
  inits: onnxProto.onnx.ITensorProto[],
  d: number,
  vocab: number,
) {
  const info = (name: string, last: number) => ({
    name,
    type: {
      tensorType: {
        elemType: 1,
        shape: {
          dim: [{ dimParam: "batch_size" }, { dimParam: "sequence_length" }, {
            dimValue: last,
          }],
        },
      },
    },
  });
  const graph = {
    name: "head",
    node: nodes,
    initializer: inits,
    input: [info("hidden", d)],
    output: [info("logits", vocab)],
  };
  return onnx.ModelProto.encode({
    irVersion: 8,
    opsetImport: [{ domain: "", version: 17 }],
    graph,
  }).finish();
}

const f32 = (
  name: string,
  dims: number[],
  data: Float32Array,
): onnxProto.onnx.ITensorProto => ({
  name,
  dims,
  dataType: 1,
  rawData: new Uint8Array(data.buffer),
});
const i64 = (name: string, values: number[]): onnxProto.onnx.ITensorProto => ({
  name,
  dims: [values.length],
  dataType: 7,
  int64Data: values,
});

Deno.test("lm_head: findLmHead and withHiddenStateOutput", async (t) => {
  const rng = new Rng(3);
  const [d, vocab] = [3, 5];
  const w = Float32Array.from({ length: d * vocab }, () => rng.normal()); // [vocab, d] or [d, vocab]
  const bias = Float32Array.from({ length: vocab }, () => rng.normal());
  const hidden = [[[0.5, -1, 2], [1, 0, -0.25]]]; // [1, 2, d]

  await t.step("finds the tied head of our model: exactly wte", () => {
    const head = findLmHead(MODEL);
    assert.deepEqual([head.vocab, head.d, head.bias], [
      SHAPE.vocabSize,
      SHAPE.nEmbd,
      undefined,
    ]);
    assert.deepEqual(head.weight, WEIGHTS.wte);
    assert.equal(withHiddenStateOutput(MODEL).added, false);
  });

  await t.step(
    "re-adds a removed last_hidden_state output, equal to the original's",
    async () => {
      const m = onnx.ModelProto.decode(MODEL);
      const graph = m.graph!;
      graph.output = (graph.output ?? []).filter((o) => o.name !== "last_hidden_state");
      graph.node = (graph.node ?? []).filter((n) => !n.output?.includes("last_hidden_state"));
      const { model, added } = withHiddenStateOutput(
        onnx.ModelProto.encode(m).finish(),
      );
      assert.ok(added);
      const ids = [[10, 20, 30, 40]];
      const [before, after] = [
        await runOrt(MODEL, ids),
        await runOrt(model, ids),
      ];
      assert.deepEqual(after.last_hidden_state.dims, [1, 4, SHAPE.nEmbd]);
      assert.deepEqual(
        after.last_hidden_state.data,
        before.last_hidden_state.data,
      );
      assert.deepEqual(after.logits.data, before.logits.data);
    },
  );

  await t.step("a Gemm head with transB behind Reshapes", async () => {
    const model = headGraph(
      [
        {
          opType: "Reshape",
          input: ["hidden", "flat_shape"],
          output: ["flat"],
        },
        {
          opType: "Gemm",
          input: ["flat", "W", "b"],
          output: ["gemm"],
          attribute: [{ name: "transB", type: 2, i: 1 }],
        },
        {
          opType: "Shape",
          input: ["hidden"],
          output: ["hs"],
          attribute: [{ name: "end", type: 2, i: 2 }],
        },
        {
          opType: "Concat",
          input: ["hs", "vocab_dim"],
          output: ["out_shape"],
          attribute: [{ name: "axis", type: 2, i: 0 }],
        },
        { opType: "Reshape", input: ["gemm", "out_shape"], output: ["logits"] },
      ],
      [
        f32("W", [vocab, d], w),
        f32("b", [vocab], bias),
        i64("flat_shape", [-1, d]),
        i64("vocab_dim", [vocab]),
      ],
      d,
      vocab,
    );
    const head = findLmHead(model);
    assert.deepEqual([
      head.weight,
      head.bias,
      head.vocab,
      head.d,
      head.hiddenName,
    ], [w, bias, vocab, d, "hidden"]);
    const { model: withHidden } = withHiddenStateOutput(model);
    const session = await ort.InferenceSession.create(withHidden);
    const out = await session.run({
      hidden: new ort.Tensor("float32", Float32Array.from(hidden.flat(2)), [
        1,
        2,
        d,
      ]),
    });
    await session.release();
    assert.deepEqual(
      [...out.last_hidden_state.data as Float32Array],
      hidden.flat(2),
    );
    assertClose(
      out.logits.data as Float32Array,
      project(hidden.flat(2), head.weight, vocab, d, head.bias),
      1e-5,
      "Gemm logits",
    );
  });

  await t.step(
    "a MatMul on a [d, vocab] initializer plus a float_data bias Add",
    () => {
      const model = headGraph(
        [
          { opType: "MatMul", input: ["hidden", "W"], output: ["mm"] },
          { opType: "Add", input: ["bias", "mm"], output: ["logits"] },
        ],
        [f32("W", [d, vocab], w), {
          name: "bias",
          dims: [vocab],
          dataType: 1,
          floatData: [...bias],
        }],
        d,
        vocab,
      );
      const head = findLmHead(model);
      const wt = Float32Array.from(
        { length: d * vocab },
        (_, i) => w[(i % d) * vocab + Math.floor(i / d)],
      ); // [vocab, d]
      assert.deepEqual([head.weight, head.bias, head.hiddenName], [
        wt,
        bias,
        "hidden",
      ]);
    },
  );

  await t.step("an external-data initializer gives a clear error", () => {
    const external: onnxProto.onnx.ITensorProto = {
      name: "lm_head.weight",
      dims: [d, vocab],
      dataType: 1,
      dataLocation: 1,
      externalData: [{ key: "location", value: "model.onnx_data" }, {
        key: "offset",
        value: "0",
      }],
    };
    const model = headGraph(
      [{
        opType: "MatMul",
        input: ["hidden", "lm_head.weight"],
        output: ["logits"],
      }],
      [external],
      d,
      vocab,
    );
    assert.throws(
      () => findLmHead(model),
      /"lm_head\.weight".*external data.*not supported.*inline/,
    );
  });
});

Deno.test("determinism: same seed gives identical bytes, another seed other weights; bad shapes are refused", () => {
  assert.deepEqual(gpt2OnnxModel(SHAPE, randomGpt2Weights(SHAPE, 7)), MODEL);
  const other = randomGpt2Weights(SHAPE, 8);
  assert.notDeepEqual(other.wte, WEIGHTS.wte);
  assert.notDeepEqual(other.h[1].mlpProj.weight, WEIGHTS.h[1].mlpProj.weight);
  assert.throws(
    () => randomGpt2Weights({ ...SHAPE, nEmbd: 30 }, 1),
    /divisible by nHead/,
  );
  assert.throws(
    () => randomGpt2Weights({ ...SHAPE, nLayer: 0 }, 1),
    /nLayer 0: expected a positive integer/,
  );

  const rng = new Rng(123);
  rng.normal();
  const saved = rng.state; // mid-pair: the spare normal is part of the state
  const a = [rng.normal(), rng.next(), rng.int(10)];
  rng.restore(saved);
  assert.deepEqual([rng.normal(), rng.next(), rng.int(10)], a);
  assert.deepEqual(
    new Rng(5).shuffle([1, 2, 3, 4, 5]),
    new Rng(5).shuffle([1, 2, 3, 4, 5]),
  );
});
