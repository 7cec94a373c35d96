/**
 * Finds the LM head (unembedding W_U) of a causal-LM ONNX graph and exposes its input, the
 * final hidden state, as a graph output named `last_hidden_state`.
 *
 * @module
 */

import onnxProto from "onnx-proto";

const { onnx } = onnxProto;
type Model = onnxProto.onnx.IModelProto;
type Node = onnxProto.onnx.INodeProto;
type Tensor = onnxProto.onnx.ITensorProto;

/** The LM head of a graph: logits = hidden · weightᵀ (+ bias). */
export interface LmHead {
  /** W_U, row-major [vocab, d]. */
  weight: Float32Array;
  /** The logits bias [vocab], when the graph adds one. */
  bias?: Float32Array;
  vocab: number;
  d: number;
  /** The tensor fed into the head MatMul/Gemm (before any Reshape/Flatten to 2-D for a Gemm). */
  hiddenName: string;
}

/** Ops that move logits around without changing their values, walked through from `logits`. */
const PASS_THROUGH = new Set(["Reshape", "Transpose", "Identity"]);

const toNumber = (x: number | { toNumber(): number }) => typeof x === "number" ? x : x.toNumber();

/** Reads a float32 initializer (raw_data or float_data), refusing external data. */
function readFloats(t: Tensor): { dims: number[]; data: Float32Array } {
  const name = JSON.stringify(t.name);
  const external = t.externalData ?? [];
  if (
    t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL ||
    external.length > 0
  ) {
    const location = external.find((e) => e.key === "location")?.value ?? "?";
    throw new Error(
      `Cannot read LM-head tensor ${name}: it is stored in external data ("${location}"), and external-data models are not supported; re-export the model with its weights inline`,
    );
  }
  if (t.dataType !== onnx.TensorProto.DataType.FLOAT) {
    throw new Error(
      `Cannot read LM-head tensor ${name} of ONNX data type ${t.dataType}: expected float32 (1)`,
    );
  }
  const dims = (t.dims ?? []).map(toNumber);
  const size = dims.reduce((a, b) => a * b, 1);
  let data: Float32Array;
  if (t.rawData && t.rawData.length > 0) {
    data = new Float32Array(Uint8Array.from(t.rawData).buffer); // copy: raw_data may be unaligned
  } else {
    data = Float32Array.from(t.floatData ?? []);
  }
  if (data.length !== size) {
    throw new Error(
      `Cannot read LM-head tensor ${name}: it holds ${data.length} values, expected ${size} for [${dims}]`,
    );
  }
  return { dims, data };
}

/** Transposes a row-major [rows, cols] matrix. */
function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  }
  return out;
}

/** Returns a node's attribute as a number or list of numbers, or undefined. */
function attr(node: Node, name: string): number | number[] | undefined {
  const a = node.attribute?.find((x) => x.name === name);
  if (!a) return undefined;
  if (a.type === onnx.AttributeProto.AttributeType.FLOAT) return a.f ?? 0;
  if (a.type === onnx.AttributeProto.AttributeType.INTS) {
    return (a.ints ?? []).map(toNumber);
  }
  return toNumber(a.i ?? 0);
}

/** Locates the LM head in a decoded model. */
function locateHead(model: Model): LmHead {
  const graph = model.graph ?? {};
  const outputs = (graph.output ?? []).map((o) => o.name);
  if (!outputs.includes("logits")) {
    throw new Error(
      `Cannot find the LM head: the graph has no output "logits"; its outputs are ${
        JSON.stringify(outputs)
      }`,
    );
  }
  const producer = new Map<string, Node>();
  const constants = new Map<string, Tensor>();
  for (const t of graph.initializer ?? []) constants.set(t.name ?? "", t);
  for (const n of graph.node ?? []) {
    for (const o of n.output ?? []) producer.set(o, n);
    const value = n.attribute?.find((a) => a.name === "value")?.t;
    if (n.opType === "Constant" && value) {
      constants.set(n.output?.[0] ?? "", value);
    }
  }
  // A weight input: an initializer, or a Transpose (perm [1, 0]) of one, which flips its layout.
  const weightOf = (
    name: string,
  ): { tensor: Tensor; transposed: boolean } | undefined => {
    const direct = constants.get(name);
    if (direct) return { tensor: direct, transposed: false };
    const node = producer.get(name);
    const perm = node && attr(node, "perm");
    const src = node?.opType === "Transpose" ? constants.get(node.input?.[0] ?? "") : undefined;
    if (src && (perm === undefined || JSON.stringify(perm) === "[1,0]")) {
      return { tensor: src, transposed: true };
    }
  };

  const biases: Float32Array[] = [];
  let name = "logits";
  for (;;) {
    const node = producer.get(name);
    if (!node) {
      throw new Error(
        `Cannot find the LM head: tensor "${name}" on the path from "logits" has no producing node`,
      );
    }
    const inputs = node.input ?? [];
    if (PASS_THROUGH.has(node.opType ?? "")) {
      name = inputs[0];
    } else if (node.opType === "Add" && inputs.some((i) => constants.has(i))) {
      const b = inputs.findIndex((i) => constants.has(i));
      biases.push(readFloats(constants.get(inputs[b])!).data);
      name = inputs[1 - b];
    } else if (node.opType === "MatMul" || node.opType === "Gemm") {
      const isGemm = node.opType === "Gemm";
      const w = weightOf(inputs[1]);
      if (!w || (isGemm && attr(node, "transA"))) {
        throw new Error(
          `Cannot find the LM head: ${node.opType} "${node.name}" does not multiply "${
            inputs[0]
          }" by a 2-D initializer`,
        );
      }
      const { dims, data } = readFloats(w.tensor);
      if (dims.length !== 2) {
        throw new Error(
          `Cannot use LM-head tensor "${w.tensor.name}" of dims [${dims}]: expected a 2-D matrix`,
        );
      }
      // As stored, B is [d, vocab] unless a Transpose or Gemm transB flips it (not both).
      const flipped = w.transposed !== Boolean(isGemm && attr(node, "transB"));
      const [vocab, d] = flipped ? dims : [dims[1], dims[0]];
      let weight = flipped ? Float32Array.from(data) : transpose(data, dims[0], dims[1]);
      if (isGemm) {
        const alpha = (attr(node, "alpha") as number | undefined) ?? 1;
        const beta = (attr(node, "beta") as number | undefined) ?? 1;
        if (alpha !== 1) weight = weight.map((x) => x * alpha);
        const c = inputs[2] ? constants.get(inputs[2]) : undefined;
        if (inputs[2] && !c) {
          throw new Error(
            `Cannot read the Gemm bias "${inputs[2]}": expected an initializer`,
          );
        }
        if (c) biases.push(readFloats(c).data.map((x) => x * beta));
      }
      let hiddenName = inputs[0];
      const flat = producer.get(hiddenName);
      if (
        isGemm && (flat?.opType === "Reshape" || flat?.opType === "Flatten")
      ) hiddenName = flat.input![0];
      const bias = biases.length ? new Float32Array(vocab) : undefined;
      for (const b of biases) {
        if (b.length !== vocab) {
          throw new Error(
            `Cannot use an LM-head bias of length ${b.length}: expected ${vocab}`,
          );
        }
        bias!.forEach((_, i) => bias![i] += b[i]);
      }
      return { weight, bias, vocab, d, hiddenName };
    } else {
      throw new Error(
        `Cannot find the LM head: reached ${node.opType} "${node.name}" from "logits"; expected Add (bias), Reshape, Transpose, Identity, then MatMul or Gemm`,
      );
    }
  }
}

/**
 * Finds the LM head of a causal-LM ONNX graph by walking back from the output `logits`
 * through Add (bias), Reshape, Transpose and Identity to the MatMul or Gemm whose weight is an
 * initializer (possibly behind a Transpose, as in a tied head).
 *
 * @param model A serialized ONNX ModelProto with weights inline.
 * @returns W_U [vocab, d], the bias if any, and the name of the hidden state fed into the head.
 *
 * @example
 * ```ts ignore
 * const { weight, vocab, d } = findLmHead(await Deno.readFile("onnx/model.onnx"));
 * ```
 */
export function findLmHead(model: Uint8Array): LmHead {
  return locateHead(onnx.ModelProto.decode(model));
}

/**
 * Makes a graph return its final hidden state: if it has no output `last_hidden_state`, adds an
 * Identity from the LM head's input to a new output `last_hidden_state` [batch, seq, d].
 *
 * @param model A serialized ONNX ModelProto.
 * @returns The model (unchanged when it already has the output) and whether it was added.
 */
export function withHiddenStateOutput(
  model: Uint8Array,
): { model: Uint8Array; added: boolean } {
  const decoded = onnx.ModelProto.decode(model);
  const graph = decoded.graph ?? {};
  if ((graph.output ?? []).some((o) => o.name === "last_hidden_state")) {
    return { model, added: false };
  }
  const { hiddenName, d } = locateHead(decoded);
  const exists = (graph.node ?? []).some((n) => n.output?.includes("last_hidden_state"));
  const node = exists || hiddenName === "last_hidden_state" ? [] : [{
    name: "/last_hidden_state/Identity",
    opType: "Identity",
    input: [hiddenName],
    output: ["last_hidden_state"],
  }];
  // Reuse the logits' symbolic batch and sequence dims so the declared shapes agree.
  const logitsDims = graph.output?.find((o) => o.name === "logits")?.type?.tensorType?.shape
    ?.dim ?? [];
  const dim: onnxProto.onnx.TensorShapeProto.IDimension[] = [0, 1].map((i) => ({
    dimParam: logitsDims[i]?.dimParam || ["batch_size", "sequence_length"][i],
  }));
  dim.push({ dimValue: d });
  const output = [{
    name: "last_hidden_state",
    type: {
      tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim } },
    },
  }];
  // Protobuf merges concatenated messages (embedded messages merge, repeated fields append), so
  // appending a ModelProto holding only the new node and output edits the graph without
  // re-encoding, and keeps fields this onnx-proto schema does not know.
  const patch = onnx.ModelProto.encode({ graph: { node, output } }).finish();
  const out = new Uint8Array(model.length + patch.length);
  out.set(model);
  out.set(patch, model.length);
  return { model: out, added: true };
}
