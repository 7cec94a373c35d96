/**
 * Builds a GPT-2 forward pass as an ONNX model (opset 17) with a KV cache, in the form
 * transformers.js loads as `GPT2LMHeadModel`, and writes a Hugging Face model folder.
 *
 * @module
 */

import onnxProto from "onnx-proto";
import { atomicWrite } from "../core/atomic_write.ts";
import { gpt2HeadDim, gpt2NamedTensors } from "./gpt2_weights.ts";
import type { Gpt2Shape, Gpt2Weights } from "./gpt2_weights.ts";

const { onnx } = onnxProto;
type Attr = onnxProto.onnx.IAttributeProto;
type Dim = string | number;

const LAYER_NORM_EPS = 1e-5;
const { FLOAT, INT64, BOOL } = onnx.TensorProto.DataType;

const int = (name: string, i: number): Attr => ({
  name,
  type: onnx.AttributeProto.AttributeType.INT,
  i,
});
const ints = (name: string, v: number[]): Attr => ({
  name,
  type: onnx.AttributeProto.AttributeType.INTS,
  ints: v,
});
const float = (name: string, f: number): Attr => ({
  name,
  type: onnx.AttributeProto.AttributeType.FLOAT,
  f,
});

/** Builds a graph value_info for a tensor of element type `elemType` and dims `dims`. */
function valueInfo(
  name: string,
  elemType: number,
  dims: Dim[],
): onnxProto.onnx.IValueInfoProto {
  const dim = dims.map((d) => typeof d === "number" ? { dimValue: d } : { dimParam: d });
  return { name, type: { tensorType: { elemType, shape: { dim } } } };
}

/** Collects nodes and initializers, naming each node's outputs after the node. */
class GraphBuilder {
  nodes: onnxProto.onnx.INodeProto[] = [];
  inits: onnxProto.onnx.ITensorProto[] = [];
  #count = 0;

  /** Adds a node and returns its output names (given ones, or generated from the scope). */
  op(
    opType: string,
    inputs: string[],
    scope: string,
    attribute: Attr[] = [],
    outputs: number | string[] = 1,
  ): string[] {
    const name = `${scope}/${opType}_${this.#count++}`;
    const output = typeof outputs === "number"
      ? Array.from({ length: outputs }, (_, i) => `${name}_output_${i}`)
      : outputs;
    this.nodes.push({ name, opType, input: inputs, output, attribute });
    return output;
  }

  /** Adds a one-output node and returns its output name. */
  op1(
    opType: string,
    inputs: string[],
    scope: string,
    attribute: Attr[] = [],
    output?: string,
  ): string {
    return this.op(opType, inputs, scope, attribute, output ? [output] : 1)[0];
  }

  /** Adds a float32 initializer. */
  f32(name: string, dims: number[], data: Float32Array): string {
    const rawData = new Uint8Array(
      data.buffer,
      data.byteOffset,
      data.byteLength,
    );
    this.inits.push({ name, dims, dataType: FLOAT, rawData });
    return name;
  }

  /** Adds an int64 initializer. */
  i64(name: string, dims: number[], values: number[]): string {
    const data = BigInt64Array.from(values.map(BigInt));
    this.inits.push({
      name,
      dims,
      dataType: INT64,
      rawData: new Uint8Array(data.buffer),
    });
    return name;
  }
}

/**
 * Serializes the GPT-2 forward pass as an ONNX ModelProto (opset 17, IR version 8).
 *
 * Inputs: `input_ids`, `attention_mask` (1 = attend, 0 = padding, over past + new tokens),
 * `position_ids` (as transformers.js computes them: cumsum(mask) - 1) and
 * `past_key_values.{i}.key|value`. Outputs: `logits`, `last_hidden_state` (the output of
 * ln_f, i.e. the input of the tied LM-head MatMul) and `present.{i}.key|value`.
 *
 * @param shape The model shape.
 * @param weights Weights matching the shape (tensor names in the graph are HF state-dict names).
 * @returns The serialized model.
 *
 * @example
 * ```ts
 * import { gpt2OnnxModel } from "./gpt2_onnx.ts";
 * import { randomGpt2Weights } from "./gpt2_weights.ts";
 * const shape = { vocabSize: 10, nPositions: 8, nEmbd: 4, nLayer: 1, nHead: 2 };
 * const bytes = gpt2OnnxModel(shape, randomGpt2Weights(shape, 1));
 * if (bytes.length < 1000) throw new Error("Model too small");
 * ```
 */
export function gpt2OnnxModel(
  shape: Gpt2Shape,
  weights: Gpt2Weights,
): Uint8Array {
  const hd = gpt2HeadDim(shape);
  const { vocabSize: v, nEmbd: d, nHead, nLayer } = shape;
  const g = new GraphBuilder();
  for (const t of gpt2NamedTensors(shape, weights)) {
    g.f32(t.name, t.dims, t.data);
  }

  const one = g.i64("const_one", [], [1]);
  const zero = g.i64("const_zero", [], [0]);
  const split = g.i64("const_qkv_split", [3], [d, d, d]);
  const toHeads = g.i64("const_heads_shape", [4], [0, 0, nHead, hd]);
  const fromHeads = g.i64("const_merge_shape", [3], [0, 0, d]);
  const sqrtHd = g.f32(
    "const_sqrt_head_dim",
    [],
    Float32Array.of(Math.sqrt(hd)),
  );
  const lowest = g.f32(
    "const_lowest",
    [],
    Float32Array.of(-3.4028234663852886e38),
  );
  const half = g.f32("const_half", [], Float32Array.of(0.5));
  const oneF = g.f32("const_one_f", [], Float32Array.of(1));
  const geluC = g.f32("const_gelu_c", [], Float32Array.of(0.044715));
  const geluK = g.f32(
    "const_gelu_k",
    [],
    Float32Array.of(Math.sqrt(2 / Math.PI)),
  );

  // Mask [batch, 1, seq, past + seq]: query i (absolute position past + i) sees keys j <= past + i
  // that the attention_mask does not mark as padding.
  const seq = g.op1(
    "Gather",
    [g.op1("Shape", ["input_ids"], "/mask"), one],
    "/mask",
    [int("axis", 0)],
  );
  const total = g.op1(
    "Gather",
    [g.op1("Shape", ["attention_mask"], "/mask"), one],
    "/mask",
    [int("axis", 0)],
  );
  const past = g.op1("Sub", [total, seq], "/mask");
  const rows = g.op1("Range", [past, total, one], "/mask"); // [seq]
  const cols = g.op1("Range", [zero, total, one], "/mask"); // [total]
  const rowsCol = g.op1(
    "Unsqueeze",
    [rows, g.i64("const_axes_1", [1], [1])],
    "/mask",
  ); // [seq, 1]
  const causal = g.op1("LessOrEqual", [cols, rowsCol], "/mask"); // [seq, total]
  const keep = g.op1("Cast", ["attention_mask"], "/mask", [int("to", BOOL)]); // [batch, total]
  const keep4 = g.op1(
    "Unsqueeze",
    [keep, g.i64("const_axes_12", [2], [1, 2])],
    "/mask",
  ); // [batch, 1, 1, total]
  const allowed = g.op1("And", [causal, keep4], "/mask"); // [batch, 1, seq, total]

  const tokens = g.op1(
    "Gather",
    ["transformer.wte.weight", "input_ids"],
    "/wte",
    [int("axis", 0)],
  );
  const positions = g.op1(
    "Gather",
    ["transformer.wpe.weight", "position_ids"],
    "/wpe",
    [int("axis", 0)],
  );
  let h = g.op1("Add", [tokens, positions], "/embed"); // [batch, seq, d]

  const layerNorm = (
    x: string,
    prefix: string,
    scope: string,
    output?: string,
  ) =>
    g.op1(
      "LayerNormalization",
      [x, `${prefix}.weight`, `${prefix}.bias`],
      scope,
      [
        int("axis", -1),
        float("epsilon", LAYER_NORM_EPS),
      ],
      output,
    );
  const linear = (x: string, prefix: string, scope: string) =>
    g.op1("Add", [
      g.op1("MatMul", [x, `${prefix}.weight`], scope),
      `${prefix}.bias`,
    ], scope);

  for (let i = 0; i < nLayer; i++) {
    const n = `transformer.h.${i}`;
    const s = `/h.${i}`;
    const qkv = linear(
      layerNorm(h, `${n}.ln_1`, `${s}/ln_1`),
      `${n}.attn.c_attn`,
      `${s}/attn`,
    ); // [b, seq, 3d]
    const [q, k, vv] = g.op("Split", [qkv, split], `${s}/attn`, [
      int("axis", 2),
    ], 3);
    const heads = (x: string) =>
      g.op1(
        "Transpose",
        [g.op1("Reshape", [x, toHeads], `${s}/attn`)],
        `${s}/attn`,
        [ints("perm", [0, 2, 1, 3])],
      );
    const keys = g.op1(
      "Concat",
      [`past_key_values.${i}.key`, heads(k)],
      `${s}/attn`,
      [int("axis", 2)],
      `present.${i}.key`,
    );
    const values = g.op1(
      "Concat",
      [`past_key_values.${i}.value`, heads(vv)],
      `${s}/attn`,
      [int("axis", 2)],
      `present.${i}.value`,
    );
    const keysT = g.op1("Transpose", [keys], `${s}/attn`, [
      ints("perm", [0, 1, 3, 2]),
    ]); // [b, h, hd, total]
    const scores = g.op1("Div", [
      g.op1("MatMul", [heads(q), keysT], `${s}/attn`),
      sqrtHd,
    ], `${s}/attn`); // [b, h, seq, total]
    const masked = g.op1("Where", [allowed, scores, lowest], `${s}/attn`);
    const probs = g.op1("Softmax", [masked], `${s}/attn`, [int("axis", -1)]);
    const ctx = g.op1("MatMul", [probs, values], `${s}/attn`); // [b, h, seq, hd]
    const merged = g.op1("Reshape", [
      g.op1("Transpose", [ctx], `${s}/attn`, [ints("perm", [0, 2, 1, 3])]),
      fromHeads,
    ], `${s}/attn`); // [b, seq, d]
    h = g.op1("Add", [h, linear(merged, `${n}.attn.c_proj`, `${s}/attn`)], s);

    const x = linear(
      layerNorm(h, `${n}.ln_2`, `${s}/ln_2`),
      `${n}.mlp.c_fc`,
      `${s}/mlp`,
    ); // [b, seq, 4d]
    // gelu_new (tanh approximation): 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
    const x3 = g.op1("Mul", [g.op1("Mul", [x, x], `${s}/mlp`), x], `${s}/mlp`);
    const inner = g.op1("Mul", [
      g.op1("Add", [x, g.op1("Mul", [x3, geluC], `${s}/mlp`)], `${s}/mlp`),
      geluK,
    ], `${s}/mlp`);
    const tanhPlus1 = g.op1(
      "Add",
      [g.op1("Tanh", [inner], `${s}/mlp`), oneF],
      `${s}/mlp`,
    );
    const gelu = g.op1(
      "Mul",
      [g.op1("Mul", [x, half], `${s}/mlp`), tanhPlus1],
      `${s}/mlp`,
    );
    h = g.op1("Add", [h, linear(gelu, `${n}.mlp.c_proj`, `${s}/mlp`)], s);
  }

  const hidden = layerNorm(h, "transformer.ln_f", "/ln_f"); // [b, seq, d]
  g.op1("Identity", [hidden], "/ln_f", [], "last_hidden_state");
  // Tied head: logits = hidden · wteᵀ, the Transpose of the shared initializer as HF exports it.
  const wteT = g.op1("Transpose", ["transformer.wte.weight"], "/lm_head", [
    ints("perm", [1, 0]),
  ]); // [d, vocab]
  g.op1("MatMul", [hidden, wteT], "/lm_head", [], "logits"); // [b, seq, vocab]

  const cache = (prefix: string, len: string) =>
    Array.from(
      { length: nLayer },
      (_, i) =>
        ["key", "value"].map((kv) =>
          valueInfo(`${prefix}.${i}.${kv}`, FLOAT, [
            "batch_size",
            nHead,
            len,
            hd,
          ])
        ),
    ).flat();
  const graph: onnxProto.onnx.IGraphProto = {
    name: "gpt2",
    node: g.nodes,
    initializer: g.inits,
    input: [
      valueInfo("input_ids", INT64, ["batch_size", "sequence_length"]),
      valueInfo("attention_mask", INT64, [
        "batch_size",
        "total_sequence_length",
      ]),
      valueInfo("position_ids", INT64, ["batch_size", "sequence_length"]),
      ...cache("past_key_values", "past_sequence_length"),
    ],
    output: [
      valueInfo("logits", FLOAT, ["batch_size", "sequence_length", v]),
      valueInfo("last_hidden_state", FLOAT, [
        "batch_size",
        "sequence_length",
        d,
      ]),
      ...cache("present", "total_sequence_length"),
    ],
  };
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: "", version: 17 }],
    producerName: "lcblm",
    graph,
  });
  return onnx.ModelProto.encode(model).finish();
}

/** The tokenizer files and special ids that go into a GPT-2 model folder. */
export interface Gpt2FolderTokenizer {
  /** The contents of `tokenizer.json` (HF tokenizers format). */
  tokenizerJson: object;
  /** The contents of `tokenizer_config.json`. */
  tokenizerConfig: object;
  bosTokenId: number;
  eosTokenId: number;
}

/**
 * Writes a Hugging Face GPT-2 folder that transformers.js loads with
 * `AutoModelForCausalLM.from_pretrained`: `config.json`, `generation_config.json`,
 * `tokenizer.json`, `tokenizer_config.json` and `onnx/model.onnx`, each written atomically.
 *
 * @param dir The folder to write (created if missing).
 * @param shape The model shape.
 * @param weights The weights.
 * @param tokenizer The tokenizer files and special token ids.
 * @param meta Extra provenance (seed, source, ...) saved under `config.json` key "lcblm".
 * @returns Nothing; the files are in `dir`.
 */
export async function writeGpt2Folder(
  dir: string,
  shape: Gpt2Shape,
  weights: Gpt2Weights,
  tokenizer: Gpt2FolderTokenizer,
  meta?: Record<string, unknown>,
): Promise<void> {
  for (const key of ["bosTokenId", "eosTokenId"] as const) {
    const id = tokenizer[key];
    if (!Number.isInteger(id) || id < 0 || id >= shape.vocabSize) {
      throw new RangeError(
        `Cannot use ${key} ${JSON.stringify(id)}: expected an integer in [0, ${shape.vocabSize})`,
      );
    }
  }
  const model = gpt2OnnxModel(shape, weights);
  const { bosTokenId: bos, eosTokenId: eos } = tokenizer;
  const config = {
    model_type: "gpt2",
    architectures: ["GPT2LMHeadModel"],
    vocab_size: shape.vocabSize,
    n_positions: shape.nPositions,
    n_ctx: shape.nPositions,
    n_embd: shape.nEmbd,
    n_layer: shape.nLayer,
    n_head: shape.nHead,
    n_inner: null,
    activation_function: "gelu_new",
    layer_norm_epsilon: LAYER_NORM_EPS,
    initializer_range: 0.02,
    bos_token_id: bos,
    eos_token_id: eos,
    tie_word_embeddings: true,
    use_cache: true,
    "transformers.js_config": { dtype: "fp32" },
    ...(meta ? { lcblm: meta } : {}),
  };
  const generation = { bos_token_id: bos, eos_token_id: eos };
  const json = (x: unknown) => JSON.stringify(x, null, 2) + "\n";
  await Deno.mkdir(`${dir}/onnx`, { recursive: true });
  await atomicWrite(`${dir}/onnx/model.onnx`, model);
  await atomicWrite(
    `${dir}/tokenizer.json`,
    JSON.stringify(tokenizer.tokenizerJson),
  );
  await atomicWrite(
    `${dir}/tokenizer_config.json`,
    json(tokenizer.tokenizerConfig),
  );
  await atomicWrite(`${dir}/generation_config.json`, json(generation));
  await atomicWrite(`${dir}/config.json`, json(config));
}
