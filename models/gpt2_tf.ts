/**
 * GPT-2 in TensorFlow.js over {@link Gpt2Weights} held as variables: the same forward as the
 * ONNX graph of `backbone/gpt2_onnx.ts` (LayerNorm ε 1e-5, tanh-GELU "gelu_new", causal
 * attention, LM head tied to `wte`), the next-token cross-entropy, and a way back to
 * {@link Gpt2Weights} for export.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import {
  gpt2HeadDim,
  gpt2NamedTensors,
  type Gpt2Shape,
  type Gpt2Weights,
} from "../backbone/gpt2_weights.ts";
import type { Adam } from "../core/train/adam.ts";
import { gatherRows } from "./sparse_topk.ts";

const LAYER_NORM_EPS = 1e-5;
const GELU_K = Math.sqrt(2 / Math.PI);
const QKV = ["q", "k", "v"] as const;

/** Training-mode options of a forward pass. */
export interface Gpt2ForwardOptions {
  /** Dropout rate on the embeddings and both residual branches (GPT-2's resid/embd pdrop). */
  dropout?: number;
  /** Seed of this pass's dropout masks. */
  seed?: number;
}

/**
 * A GPT-2 language model whose weights are TensorFlow.js variables.
 *
 * @example Logits of a tiny random model
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { randomGpt2Weights } from "../backbone/gpt2_weights.ts";
 * import { Gpt2Tf } from "./gpt2_tf.ts";
 * await tf.setBackend("cpu");
 * const shape = { vocabSize: 11, nPositions: 8, nEmbd: 8, nLayer: 1, nHead: 2 };
 * const model = new Gpt2Tf("doc", shape, randomGpt2Weights(shape, 1));
 * const logits = model.logits(tf.tensor2d([[1, 2, 3]], [1, 3], "int32"));
 * if (logits.shape.join() !== "1,3,11") throw new Error("Bad shape");
 * model.dispose();
 * ```
 */
export class Gpt2Tf {
  readonly shape: Gpt2Shape;
  readonly name: string;
  #vars = new Map<string, tf.Variable>();
  #masks = new Map<number, tf.Tensor2D>();

  /**
   * @param name Variable-name prefix, unique among live variables (e.g. the recipe name).
   * @param shape The model shape.
   * @param weights Initial weights (copied into variables), e.g. `randomGpt2Weights`.
   */
  constructor(name: string, shape: Gpt2Shape, weights: Gpt2Weights) {
    this.name = name;
    this.shape = shape;
    const add = (key: string, data: Float32Array, dims: number[]) => {
      const value = tf.tensor(data.slice(), dims);
      this.#vars.set(key, tf.variable(value, true, `${name}/${key}`));
      value.dispose();
    };
    const d = shape.nEmbd;
    for (const t of gpt2NamedTensors(shape, weights)) {
      const qkv = /^(.*\.attn\.c_attn)\.(weight|bias)$/.exec(t.name);
      if (!qkv) {
        add(t.name, t.data, t.dims);
        continue;
      }
      // c_attn [d, 3d] is held as three [d, d] parts: slicing activations or weights by column
      // runs through the slow generic cpu Slice/SplitV loops.
      QKV.forEach((part, j) => {
        const key = `${qkv[1]}.${part}.${qkv[2]}`;
        if (qkv[2] === "bias") return add(key, t.data.subarray(j * d, (j + 1) * d), [d]);
        const block = new Float32Array(d * d);
        for (let r = 0; r < d; r++) {
          block.set(t.data.subarray(r * 3 * d + j * d, r * 3 * d + (j + 1) * d), r * d);
        }
        add(key, block, [d, d]);
      });
    }
  }

  /** The trainable variables, in HF state-dict order. */
  variables(): tf.Variable[] {
    return [...this.#vars.values()];
  }

  /**
   * Final-norm hidden states (the LM head's input).
   *
   * @param ids Token ids [B, T] int32, T ≤ nPositions; positions 0..T-1.
   * @param options Dropout (training only).
   * @returns [B, T, d].
   */
  hidden(ids: tf.Tensor2D, options: Gpt2ForwardOptions = {}): tf.Tensor3D {
    const [b, t] = ids.shape;
    const { nEmbd: d, nHead, nLayer, nPositions } = this.shape;
    if (t > nPositions) {
      throw new RangeError(`Cannot run ${t} positions: the model has nPositions = ${nPositions}`);
    }
    const hd = gpt2HeadDim(this.shape);
    const rate = options.dropout ?? 0;
    let drops = 0;
    const dropout = (x: tf.Tensor2D): tf.Tensor2D =>
      rate > 0
        ? tf.dropout(x, rate, undefined, (options.seed ?? 0) * 1000 + drops++) as tf.Tensor2D
        : x;
    const w = (name: string) => this.#vars.get(name)!;
    const keep = this.#causalMask(t); // [T, T]
    return tf.tidy(() => {
      // 1. Embeddings [B·T, d]: token rows (scatter-add gradient) + the first T position rows
      const tokens = gatherRows<tf.Tensor2D>(w("transformer.wte.weight"), ids.reshape([b * t]));
      const positions = tf.slice(w("transformer.wpe.weight"), [0, 0], [t, d]);
      const embedded = tf.add(tokens.reshape([b, t, d]), positions).reshape([b * t, d]);
      let h = dropout(embedded as tf.Tensor2D);
      for (let i = 0; i < nLayer; i++) {
        const n = `transformer.h.${i}`;
        // 2. Attention: heads [B·H, T, hd], scores / √hd, causal mask, softmax
        const x = layerNorm(h, w(`${n}.ln_1.weight`), w(`${n}.ln_1.bias`));
        const [q, k, v] = QKV.map((part) =>
          linear(x, w(`${n}.attn.c_attn.${part}.weight`), w(`${n}.attn.c_attn.${part}.bias`))
            .reshape([b, t, nHead, hd]).transpose([0, 2, 1, 3]).reshape([b * nHead, t, hd])
        );
        const scores = tf.div(tf.matMul(q, k, false, true), Math.sqrt(hd)); // [B·H, T, T]
        const ctx = tf.matMul(maskedSoftmax(scores, keep), v) // [B·H, T, hd]
          .reshape([b, nHead, t, hd]).transpose([0, 2, 1, 3]).reshape([b * t, d]) as tf.Tensor2D;
        const attn = linear(ctx, w(`${n}.attn.c_proj.weight`), w(`${n}.attn.c_proj.bias`));
        h = tf.add(h, dropout(attn)) as tf.Tensor2D;
        // 3. MLP with gelu_new
        const y = layerNorm(h, w(`${n}.ln_2.weight`), w(`${n}.ln_2.bias`));
        const fc = linear(y, w(`${n}.mlp.c_fc.weight`), w(`${n}.mlp.c_fc.bias`));
        const mlp = linear(geluNew(fc), w(`${n}.mlp.c_proj.weight`), w(`${n}.mlp.c_proj.bias`));
        h = tf.add(h, dropout(mlp)) as tf.Tensor2D;
      }
      const out = layerNorm(h, w("transformer.ln_f.weight"), w("transformer.ln_f.bias"));
      return out.reshape([b, t, d]);
    });
  }

  /**
   * Next-token logits through the tied head.
   *
   * @param ids Token ids [B, T] int32.
   * @param options Dropout (training only).
   * @returns [B, T, vocab].
   */
  logits(ids: tf.Tensor2D, options: Gpt2ForwardOptions = {}): tf.Tensor3D {
    const [b, t] = ids.shape;
    return tf.tidy(() => {
      const h = this.hidden(ids, options).reshape([b * t, this.shape.nEmbd]);
      return tf.matMul(h, this.#vars.get("transformer.wte.weight")!, false, true)
        .reshape([b, t, this.shape.vocabSize]);
    });
  }

  /**
   * Mean next-token cross-entropy (nats): position i predicts ids[:, i + 1].
   *
   * @param ids Token ids [B, T] int32, T ≥ 2.
   * @param options Dropout (training only).
   * @returns A scalar over the B·(T − 1) predictions.
   */
  loss(ids: tf.Tensor2D, options: Gpt2ForwardOptions = {}): tf.Scalar {
    const [b, t] = ids.shape;
    if (t < 2) throw new RangeError(`Cannot score ${t} token(s): expected at least 2 per row`);
    const v = this.shape.vocabSize;
    return tf.tidy(() => {
      const inputs = tf.slice(ids, [0, 0], [b, t - 1]);
      const targets = tf.slice(ids, [0, 1], [b, t - 1]).reshape([b * (t - 1)]);
      const logits = this.logits(inputs, options).reshape([b * (t - 1), v]);
      return crossEntropy(logits as tf.Tensor2D, targets as tf.Tensor1D);
    });
  }

  /**
   * One AdamW step on the training loss.
   *
   * @param ids A batch of contexts [B, T] int32.
   * @param adam The optimiser over {@link variables}.
   * @param options Dropout and its seed.
   * @returns The loss before the update.
   */
  trainStep(ids: tf.Tensor2D, adam: Adam, options: Gpt2ForwardOptions = {}): number {
    const { value, grads } = tf.variableGrads(() => this.loss(ids, options), this.variables());
    adam.step(grads);
    const loss = value.dataSync()[0];
    tf.dispose([value, ...Object.values(grads)]);
    return loss;
  }

  /**
   * The current weights, copied out in HF layout (for `gpt2OnnxModel` / `writeGpt2Folder`).
   *
   * @returns Fresh arrays.
   */
  async weights(): Promise<Gpt2Weights> {
    const get = async (name: string) =>
      new Float32Array(await this.#vars.get(name)!.data() as Float32Array);
    const ln = async (p: string) => ({
      weight: await get(`${p}.weight`),
      bias: await get(`${p}.bias`),
    });
    const h = [];
    for (let i = 0; i < this.shape.nLayer; i++) {
      const n = `transformer.h.${i}`;
      h.push({
        ln1: await ln(`${n}.ln_1`),
        cAttn: await this.#cAttn(`${n}.attn.c_attn`),
        attnProj: await ln(`${n}.attn.c_proj`),
        ln2: await ln(`${n}.ln_2`),
        cFc: await ln(`${n}.mlp.c_fc`),
        mlpProj: await ln(`${n}.mlp.c_proj`),
      });
    }
    return {
      wte: await get("transformer.wte.weight"),
      wpe: await get("transformer.wpe.weight"),
      h,
      lnF: await ln("transformer.ln_f"),
    };
  }

  /** c_attn in HF layout: weight [d, 3d] = [q | k | v] by column, bias [3d]. */
  async #cAttn(prefix: string): Promise<{ weight: Float32Array; bias: Float32Array }> {
    const d = this.shape.nEmbd;
    const weight = new Float32Array(d * 3 * d), bias = new Float32Array(3 * d);
    for (const [j, part] of QKV.entries()) {
      const w = await this.#vars.get(`${prefix}.${part}.weight`)!.data() as Float32Array;
      for (let r = 0; r < d; r++) weight.set(w.subarray(r * d, (r + 1) * d), r * 3 * d + j * d);
      bias.set(await this.#vars.get(`${prefix}.${part}.bias`)!.data() as Float32Array, j * d);
    }
    return { weight, bias };
  }

  /** Frees the variables and cached masks. */
  dispose(): void {
    for (const v of this.#vars.values()) v.dispose();
    for (const m of this.#masks.values()) m.dispose();
    this.#vars.clear();
    this.#masks.clear();
  }

  /** [T, T]: 1 where key j ≤ query i, else 0; cached per T. */
  #causalMask(t: number): tf.Tensor2D {
    let mask = this.#masks.get(t);
    if (!mask) {
      const data = new Float32Array(t * t);
      for (let i = 0; i < t; i++) data.fill(1, i * t, i * t + i + 1);
      mask = tf.keep(tf.tensor2d(data, [t, t])); // outlives the tidy that first asks for it
      this.#masks.set(t, mask);
    }
    return mask;
  }
}

/** y = x · weight + bias (HF Conv1D, weight [in, out]); x [N, in]. */
function linear(x: tf.Tensor2D, weight: tf.Tensor, bias: tf.Tensor): tf.Tensor2D {
  return tf.add(tf.matMul(x, weight as tf.Tensor2D), bias);
}

/** LayerNorm over the last axis with ε 1e-5 (biased variance, as torch and ONNX). */
function layerNorm(x: tf.Tensor2D, gain: tf.Tensor, bias: tf.Tensor): tf.Tensor2D {
  const centred = tf.sub(x, tf.mean(x, 1, true));
  const variance = tf.mean(tf.square(centred), 1, true);
  return tf.add(tf.mul(tf.mul(centred, tf.rsqrt(tf.add(variance, LAYER_NORM_EPS))), gain), bias);
}

/** gelu_new: 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))). */
function geluNew(x: tf.Tensor2D): tf.Tensor2D {
  const inner = tf.mul(tf.add(x, tf.mul(tf.mul(tf.mul(x, x), x), 0.044715)), GELU_K);
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
}

/**
 * Softmax over the last axis where `keep` is 1, exactly 0 where it is 0 (the ONNX graph's
 * `Where(allowed, scores, lowest)` then Softmax). Built from registered kernels with the gradient
 * y ⊙ (dy − Σ dy ⊙ y): the stock cpu Softmax broadcasts through slow generic loops, and an
 * additive −1e9 mask would send half the scores through Math.exp's slow far-negative path.
 *
 * @param scores [..., T, T].
 * @param keep [T, T] of 0/1.
 */
function maskedSoftmax(scores: tf.Tensor, keep: tf.Tensor2D): tf.Tensor {
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const kept = tf.mul(x, keep);
    const e = tf.mul(tf.exp(tf.sub(kept, tf.max(kept, -1, true))), keep);
    const y = tf.div(e, tf.sum(e, -1, true));
    save([y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, [saved]: tf.Tensor[]) =>
        tf.mul(saved, tf.sub(dy, tf.sum(tf.mul(dy, saved), -1, true))),
    };
  });
  return op(scores);
}

/**
 * Mean cross-entropy of rows of logits against target ids. One pass over the logits computes the
 * loss and the gradient (softmax − one-hot) / N together (the [N, V] logits dominate a small
 * model's step; composing it from tfjs ops takes about eight passes and a one-hot matrix).
 *
 * @param logits [N, V].
 * @param targets [N] int32 ids in [0, V).
 * @returns The mean over the N rows, in nats.
 */
function crossEntropy(logits: tf.Tensor2D, targets: tf.Tensor1D): tf.Scalar {
  const [n, v] = logits.shape;
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [x, save] = args as [tf.Tensor2D, tf.GradSaveFunc];
    const z = x.dataSync() as Float32Array, y = targets.dataSync();
    const grad = new Float32Array(n * v);
    let total = 0;
    for (let r = 0; r < n; r++) {
      const row = z.subarray(r * v, (r + 1) * v), g = grad.subarray(r * v, (r + 1) * v);
      let max = -Infinity;
      for (let j = 0; j < v; j++) if (row[j] > max) max = row[j];
      let sum = 0;
      for (let j = 0; j < v; j++) sum += g[j] = Math.exp(row[j] - max);
      total += Math.log(sum) + max - row[y[r]];
      const scale = 1 / (sum * n);
      for (let j = 0; j < v; j++) g[j] *= scale;
      g[y[r]] -= 1 / n;
    }
    save([tf.tensor2d(grad, [n, v])]);
    return {
      value: tf.scalar(total / n),
      gradFunc: (dy: tf.Tensor, [g]: tf.Tensor[]) => tf.mul(g, dy),
    };
  });
  return op(logits) as tf.Scalar;
}
