/**
 * GPT-2 shapes and weights in Hugging Face layout, and a deterministic random initialiser.
 *
 * @module
 */

import { Rng } from "../core/rng.ts";

/** The dimensions of a GPT-2 model (the `config.json` fields of the same names). */
export interface Gpt2Shape {
  /** Number of tokens in the vocabulary (`vocab_size`). */
  vocabSize: number;
  /** Longest sequence the position table covers (`n_positions`). */
  nPositions: number;
  /** Width of the residual stream, d (`n_embd`). */
  nEmbd: number;
  /** Number of transformer blocks (`n_layer`). */
  nLayer: number;
  /** Number of attention heads; must divide nEmbd (`n_head`). */
  nHead: number;
}

/** A LayerNorm's gain and bias, each [d]. */
export interface Gpt2LayerNorm {
  weight: Float32Array; // [d]
  bias: Float32Array; // [d]
}

/** A Conv1D (HF GPT-2's linear layer): y = x · weight + bias, weight stored [in, out]. */
export interface Gpt2Linear {
  weight: Float32Array; // [in, out]
  bias: Float32Array; // [out]
}

/** One transformer block, `transformer.h.{i}` in HF naming. */
export interface Gpt2Block {
  ln1: Gpt2LayerNorm; // ln_1
  cAttn: Gpt2Linear; // attn.c_attn: [d, 3d] (q | k | v)
  attnProj: Gpt2Linear; // attn.c_proj: [d, d]
  ln2: Gpt2LayerNorm; // ln_2
  cFc: Gpt2Linear; // mlp.c_fc: [d, 4d]
  mlpProj: Gpt2Linear; // mlp.c_proj: [4d, d]
}

/** All GPT-2 weights, Float32 row-major in HF layout; the LM head is tied to `wte`. */
export interface Gpt2Weights {
  wte: Float32Array; // [vocab, d]
  wpe: Float32Array; // [nPositions, d]
  h: Gpt2Block[]; // [nLayer]
  lnF: Gpt2LayerNorm; // ln_f
}

/** A named tensor, as it appears in an HF state dict and in our ONNX initializers. */
export interface Gpt2NamedTensor {
  name: string;
  dims: number[];
  data: Float32Array;
}

/**
 * Checks a GPT-2 shape: positive integers, and nEmbd divisible by nHead.
 *
 * @param shape The shape to check.
 * @returns The head width, nEmbd / nHead.
 */
export function gpt2HeadDim(shape: Gpt2Shape): number {
  for (
    const key of [
      "vocabSize",
      "nPositions",
      "nEmbd",
      "nLayer",
      "nHead",
    ] as const
  ) {
    const value = shape[key];
    if (!Number.isInteger(value) || value <= 0) {
      throw new RangeError(
        `Cannot use GPT-2 ${key} ${JSON.stringify(value)}: expected a positive integer`,
      );
    }
  }
  if (shape.nEmbd % shape.nHead !== 0) {
    throw new RangeError(
      `Cannot split nEmbd ${shape.nEmbd} into nHead ${shape.nHead} heads: expected nEmbd divisible by nHead`,
    );
  }
  return shape.nEmbd / shape.nHead;
}

/**
 * Lists the weights under their HF state-dict names with their dims, checking each length.
 *
 * @param shape The model shape.
 * @param weights The weights to list.
 * @returns The tensors in a fixed order: wte, wpe, blocks, ln_f.
 */
export function gpt2NamedTensors(
  shape: Gpt2Shape,
  weights: Gpt2Weights,
): Gpt2NamedTensor[] {
  gpt2HeadDim(shape);
  const { vocabSize: v, nPositions: p, nEmbd: d, nLayer } = shape;
  if (weights.h.length !== nLayer) {
    throw new RangeError(
      `Cannot use ${weights.h.length} GPT-2 blocks: expected nLayer = ${nLayer}`,
    );
  }
  const out: Gpt2NamedTensor[] = [
    { name: "transformer.wte.weight", dims: [v, d], data: weights.wte },
    { name: "transformer.wpe.weight", dims: [p, d], data: weights.wpe },
  ];
  weights.h.forEach((b, i) => {
    const n = `transformer.h.${i}`;
    out.push(
      { name: `${n}.ln_1.weight`, dims: [d], data: b.ln1.weight },
      { name: `${n}.ln_1.bias`, dims: [d], data: b.ln1.bias },
      {
        name: `${n}.attn.c_attn.weight`,
        dims: [d, 3 * d],
        data: b.cAttn.weight,
      },
      { name: `${n}.attn.c_attn.bias`, dims: [3 * d], data: b.cAttn.bias },
      {
        name: `${n}.attn.c_proj.weight`,
        dims: [d, d],
        data: b.attnProj.weight,
      },
      { name: `${n}.attn.c_proj.bias`, dims: [d], data: b.attnProj.bias },
      { name: `${n}.ln_2.weight`, dims: [d], data: b.ln2.weight },
      { name: `${n}.ln_2.bias`, dims: [d], data: b.ln2.bias },
      { name: `${n}.mlp.c_fc.weight`, dims: [d, 4 * d], data: b.cFc.weight },
      { name: `${n}.mlp.c_fc.bias`, dims: [4 * d], data: b.cFc.bias },
      {
        name: `${n}.mlp.c_proj.weight`,
        dims: [4 * d, d],
        data: b.mlpProj.weight,
      },
      { name: `${n}.mlp.c_proj.bias`, dims: [d], data: b.mlpProj.bias },
    );
  });
  out.push(
    { name: "transformer.ln_f.weight", dims: [d], data: weights.lnF.weight },
    { name: "transformer.ln_f.bias", dims: [d], data: weights.lnF.bias },
  );
  for (const t of out) {
    const want = t.dims.reduce((a, b) => a * b, 1);
    if (!(t.data instanceof Float32Array) || t.data.length !== want) {
      throw new RangeError(
        `Cannot use GPT-2 tensor "${t.name}" of length ${t.data?.length}: expected a Float32Array of ${want} values [${t.dims}]`,
      );
    }
  }
  return out;
}

/**
 * Draws GPT-2 weights deterministically from a seed, with GPT-2's initialisation:
 * N(0, 0.02) for embeddings and linear weights, N(0, 0.02 / sqrt(2 · nLayer)) for the two
 * residual projections (Radford et al. 2019, §2.3), zero biases, unit LayerNorm gains.
 *
 * @param shape The model shape.
 * @param seed An integer seed; the same seed and shape give identical weights.
 * @returns Fresh weights.
 *
 * @example
 * ```ts
 * import { randomGpt2Weights } from "./gpt2_weights.ts";
 * const shape = { vocabSize: 10, nPositions: 8, nEmbd: 4, nLayer: 1, nHead: 2 };
 * const w = randomGpt2Weights(shape, 1);
 * if (w.wte.length !== 40 || w.h[0].cAttn.weight.length !== 48) throw new Error("Bad shapes");
 * ```
 */
export function randomGpt2Weights(shape: Gpt2Shape, seed: number): Gpt2Weights {
  gpt2HeadDim(shape);
  const rng = new Rng(seed);
  const { vocabSize: v, nPositions: p, nEmbd: d, nLayer } = shape;
  const std = 0.02;
  const residStd = std / Math.sqrt(2 * nLayer);
  const normal = (n: number, s: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = rng.normal() * s;
    return a;
  };
  const layerNorm = () => ({
    weight: new Float32Array(d).fill(1),
    bias: new Float32Array(d),
  });
  const linear = (nIn: number, nOut: number, s: number) => ({
    weight: normal(nIn * nOut, s),
    bias: new Float32Array(nOut),
  });
  const wte = normal(v * d, std);
  const wpe = normal(p * d, std);
  const h: Gpt2Block[] = [];
  for (let i = 0; i < nLayer; i++) {
    h.push({
      ln1: layerNorm(),
      cAttn: linear(d, 3 * d, std),
      attnProj: linear(d, d, residStd),
      ln2: layerNorm(),
      cFc: linear(d, 4 * d, std),
      mlpProj: linear(4 * d, d, residStd),
    });
  }
  return { wte, wpe, h, lnF: layerNorm() };
}
