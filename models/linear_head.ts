/**
 * Next-token heads (SPEC sections 2 and 5): dropout + linear inputs→vocab, trained with
 * cross-entropy on masked targets. New heads use PyTorch's nn.Linear initialisation; a
 * fine-tuned head starts from the backbone's W_U (and bias).
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { Rng } from "../core/rng.ts";
import type { Adam } from "../core/train/adam.ts";
import type { NamedTensor } from "../core/train/safetensors.ts";

/** How a head starts. */
export type HeadInit =
  | { kind: "random"; seed: number }
  | { kind: "weights"; weight: Float32Array /* [vocab, inputs] */; bias: Float32Array | null };

/** Dropout + linear map to vocabulary logits. */
export class LinearHead {
  readonly name: string;
  readonly inputs: number;
  readonly vocab: number;
  readonly dropout: number;
  readonly weight: tf.Variable; // [vocab, inputs]
  readonly bias: tf.Variable; // [vocab]

  /**
   * @param name Variable-name prefix, unique among trained variables (e.g. "head").
   * @param inputs Input width (d, or the number of latents).
   * @param vocab Vocabulary size.
   * @param dropout Dropout rate on the inputs during training.
   * @param init Random (nn.Linear: U(±1/√inputs)) or given weights.
   */
  constructor(name: string, inputs: number, vocab: number, dropout: number, init: HeadInit) {
    this.name = name;
    this.inputs = inputs;
    this.vocab = vocab;
    this.dropout = dropout;
    let w: Float32Array, b: Float32Array;
    if (init.kind === "random") {
      const rng = new Rng(init.seed);
      const bound = 1 / Math.sqrt(inputs);
      w = Float32Array.from({ length: vocab * inputs }, () => (2 * rng.next() - 1) * bound);
      b = Float32Array.from({ length: vocab }, () => (2 * rng.next() - 1) * bound);
    } else {
      if (init.weight.length !== vocab * inputs) {
        throw new RangeError(
          `Expected a [${vocab}, ${inputs}] weight, got ${init.weight.length} values`,
        );
      }
      w = init.weight.slice();
      b = init.bias ? init.bias.slice() : new Float32Array(vocab);
    }
    // In a tidy: tf.variable shares the initial tensor's data, and that tensor must not outlive it.
    this.weight = tf.tidy(() =>
      tf.variable(tf.tensor2d(w, [vocab, inputs]), true, `${name}.weight`)
    );
    this.bias = tf.tidy(() => tf.variable(tf.tensor1d(b), true, `${name}.bias`));
  }

  /**
   * Logits of a batch.
   *
   * @param x Inputs [B, inputs].
   * @param dropoutSeed When given, apply dropout (training) with this seed.
   * @returns Logits [B, vocab].
   */
  logits(x: tf.Tensor2D, dropoutSeed?: number): tf.Tensor2D {
    return tf.tidy(() => {
      const h = dropoutSeed === undefined || this.dropout === 0
        ? x
        : tf.dropout(x, this.dropout, undefined, dropoutSeed) as tf.Tensor2D;
      return tf.add(tf.matMul(h, this.weight, false, true), this.bias);
    });
  }

  /**
   * Mean cross-entropy over positions with a target (targets < 0 are masked out).
   *
   * @param logits [B, vocab].
   * @param targets [B] int32.
   */
  static crossEntropy(logits: tf.Tensor2D, targets: Int32Array): tf.Scalar {
    return tf.tidy(() => {
      const mask = Float32Array.from(targets, (t) => t >= 0 ? 1 : 0);
      const count = mask.reduce((a, b) => a + b, 0);
      const safe = tf.tensor1d(Int32Array.from(targets, (t) => Math.max(t, 0)), "int32");
      const logp = tf.logSoftmax(logits);
      const picked = tf.sum(tf.mul(logp, tf.oneHot(safe, logits.shape[1])), 1);
      return tf.div(tf.neg(tf.sum(tf.mul(picked, tf.tensor1d(mask)))), Math.max(count, 1));
    });
  }

  /**
   * One optimisation step on a batch.
   *
   * @param x Inputs [B, inputs] (consumed by the caller's tidy scope).
   * @param targets [B]; −1 = no target.
   * @param adam The optimiser over this head's variables.
   * @param seed Dropout seed for this step.
   * @returns The batch loss.
   */
  trainStep(x: tf.Tensor2D, targets: Int32Array, adam: Adam, seed: number): number {
    return tf.tidy(() => {
      const { value, grads } = tf.variableGrads(
        () => LinearHead.crossEntropy(this.logits(x, seed), targets),
        [this.weight, this.bias],
      );
      adam.step(grads);
      return value.dataSync()[0];
    });
  }

  /** Trainable variables. */
  variables(): tf.Variable[] {
    return [this.weight, this.bias];
  }

  /** Weights as safetensors entries `<name>.weight`, `<name>.bias`. */
  toTensors(): Record<string, NamedTensor> {
    return {
      [`${this.name}.weight`]: {
        dtype: "F32",
        shape: [this.vocab, this.inputs],
        data: this.weight.dataSync() as Float32Array,
      },
      [`${this.name}.bias`]: {
        dtype: "F32",
        shape: [this.vocab],
        data: this.bias.dataSync() as Float32Array,
      },
    };
  }

  /** Load weights written by {@link toTensors}. */
  loadTensors(tensors: Record<string, NamedTensor>): void {
    this.weight.assign(
      tf.tensor2d(tensors[`${this.name}.weight`].data as Float32Array, [this.vocab, this.inputs]),
    );
    this.bias.assign(tf.tensor1d(tensors[`${this.name}.bias`].data as Float32Array));
  }

  /** Free the variables. */
  dispose(): void {
    this.weight.dispose();
    this.bias.dispose();
  }
}
