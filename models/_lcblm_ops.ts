/**
 * The LCBLM's building blocks as plain tfjs ops: PyTorch-layout linear layers, exact GELU,
 * similarities, the vectorised orthogonality penalty, Bernoulli KL and entropy.
 * @module
 */
import * as tf from "@tensorflow/tfjs";

/** Clamp keeping the batch-mean firing probability of SparsityKL away from 0 and 1. */
const PROB_CLAMP = 1e-6;
/** Clamp keeping the relaxed-Bernoulli uniform noise u away from 0 and 1 (finite logit). */
export const NOISE_CLAMP = 1e-6;
/** ε of the cosine similarity: μ·h / (max(‖μ‖, ε)·max(‖h‖, ε)). */
const COSINE_EPS = 1e-8;
/** Floor of the squared distance under the square root (a finite gradient at μ = h). */
const DISTANCE_FLOOR = 1e-12;

/** Similarity kinds of SPEC section 4. */
type Similarity = "cosine" | "inner" | "distance";

/**
 * y = x Wᵀ + b with W in PyTorch layout [out, in], as `torch.nn.Linear`.
 *
 * @param x Inputs [B, in].
 * @param w Weight [out, in].
 * @param b Bias [out].
 * @returns Outputs [B, out].
 */
export function linear(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D {
  return tf.add(tf.matMul(x, w, false, true), b);
}

/**
 * Σ over the last axis of [B, K, E] as a product with a ones vector. Same value as
 * `tf.sum(x, 2)`, but the gradient is an outer product instead of tfjs's broadcast of a
 * [B, K, 1] tensor, which the cpu backend runs through per-element index arithmetic (~10×
 * slower; it was a third of a training step).
 *
 * @param x [B, K, E].
 * @returns [B, K].
 */
export function sumLast(x: tf.Tensor3D): tf.Tensor2D {
  const [b, k, e] = x.shape;
  return tf.reshape(tf.matMul(tf.reshape(x, [b * k, e]), tf.ones([e, 1])), [b, k]);
}

/**
 * Repeats [B, K] along a new last axis of width E (an outer product with a ones vector), so
 * that `tf.mul(z, expandLast(c, E))` multiplies equal shapes (see {@linkcode sumLast}).
 *
 * @param x [B, K].
 * @param e Width of the new axis.
 * @returns [B, K, E] with out[b, k, :] = x[b, k].
 */
export function expandLast(x: tf.Tensor2D, e: number): tf.Tensor3D {
  const [b, k] = x.shape;
  return tf.reshape(tf.matMul(tf.reshape(x, [b * k, 1]), tf.ones([1, e])), [b, k, e]);
}

/**
 * Exact GELU, x·Φ(x) = ½x(1 + erf(x/√2)): PyTorch's `nn.GELU()` default, not the tanh
 * approximation.
 *
 * @param x Any tensor.
 * @returns GELU(x), same shape.
 */
export function gelu<T extends tf.Tensor>(x: T): T {
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
}

/**
 * Identity forward, zero gradient (PyTorch's `.detach()`).
 *
 * @param x Any tensor.
 * @returns A copy of x through which no gradient flows.
 */
export function stopGradient<T extends tf.Tensor>(x: T): T {
  const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => ({
    value: tf.clone(args[0] as tf.Tensor),
    gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
  }));
  return f(x) as T;
}

/**
 * σ(x) whose gradient is computed as σ(x)·σ(−x) rather than y(1 − y): 1 − y loses its digits in
 * float32 once the gate saturates, σ(−x) does not.
 *
 * @param x Logits, any shape.
 * @returns σ(x), same shape.
 */
export function sigmoid<T extends tf.Tensor>(x: T): T {
  const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [a, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const [on, off] = [tf.sigmoid(a), tf.sigmoid(tf.neg(a))];
    save([on, off]); // the backward pass runs after the forward's tidy has freed `a`
    return {
      value: on,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(dy, tf.mul(saved[0], saved[1])),
    };
  });
  return f(x) as T;
}

/**
 * sim(μ_k, h_k) per token and concept.
 *
 * @param mu Encoder outputs [B, K, E].
 * @param h Prototypes [K, E].
 * @param kind cosine, inner, or distance (b − ‖μ − h‖).
 * @param bias The learnable b of "distance".
 * @returns Similarities [B, K].
 */
export function similarity(
  mu: tf.Tensor3D,
  h: tf.Tensor2D,
  kind: Similarity,
  bias?: tf.Scalar,
): tf.Tensor2D {
  if (kind === "distance") {
    const d2 = sumLast(tf.square(tf.sub(mu, h)));
    return tf.sub(bias!, tf.sqrt(tf.maximum(d2, DISTANCE_FLOOR)));
  }
  const dot = sumLast(tf.mul(mu, h));
  if (kind === "inner") return dot;
  const muNorm = tf.maximum(tf.sqrt(sumLast(tf.square(mu))), COSINE_EPS);
  const hNorm = tf.maximum(tf.sqrt(tf.sum(tf.square(h), 1)), COSINE_EPS);
  return tf.div(dot, tf.mul(muNorm, hNorm));
}

/**
 * Σ_{i<j} ‖B̂_iᵀB̂_j‖²_F over the E-column blocks B_i = W[:, iE:(i+1)E] of a decoder weight
 * W [d, K·E] (PyTorch layout: columns index the K·E inputs), B̂_i = B_i / ‖B_i‖_F. Computed as
 * (‖VᵀV‖²_F − Σ_i ‖B̂_iᵀB̂_i‖²_F) / 2 with V = [B̂_1 … B̂_K]; ‖VᵀV‖_F = ‖VVᵀ‖_F, so the
 * smaller Gram matrix ([d, d] or [KE, KE]) is formed.
 *
 * @param w Decoder weight [d, K·E].
 * @param k Number of blocks K.
 * @returns The penalty (scalar).
 */
export function orthogonality(w: tf.Tensor2D, k: number): tf.Scalar {
  const [d, ke] = w.shape;
  const e = ke / k;
  const blocks = tf.reshape(w, [d, k, e]);
  const norms = tf.sqrt(tf.sum(tf.square(blocks), [0, 2], true)); // [1, K, 1]
  const unit = tf.div(blocks, norms);
  const v = tf.reshape(unit, [d, ke]);
  const all = d <= ke ? tf.matMul(v, v, false, true) : tf.matMul(v, v, true, false);
  const perBlock = tf.transpose(unit, [1, 0, 2]) as tf.Tensor3D; // [K, d, E]
  const own = e <= d
    ? tf.matMul(perBlock, perBlock, true, false) // [K, E, E]
    : tf.matMul(perBlock, perBlock, false, true); // [K, d, d]
  return tf.div(tf.sub(tf.sum(tf.square(all)), tf.sum(tf.square(own))), 2);
}

/**
 * Σ_k KL(Bern(p_k) ‖ Bern(π)) with p_k clamped to [PROB_CLAMP, 1 − PROB_CLAMP].
 *
 * @param p Probabilities [K].
 * @param prior π.
 * @returns The summed KL (scalar).
 */
export function bernoulliKl(p: tf.Tensor1D, prior: number): tf.Scalar {
  const q = tf.clipByValue(p, PROB_CLAMP, 1 - PROB_CLAMP);
  const on = tf.mul(q, tf.log(tf.div(q, prior)));
  const one = tf.sub(1, q);
  const off = tf.mul(one, tf.log(tf.div(one, 1 - prior)));
  return tf.sum(tf.add(on, off));
}

/**
 * Binary entropy H(σ(ℓ)) from logits, as softplus(−|ℓ|) + |ℓ|·σ(−|ℓ|) (H is even in ℓ): both
 * terms are positive, so no cancellation when the gate saturates and no clamp is needed.
 *
 * @param logits ℓ, any shape.
 * @returns H in nats, same shape.
 */
export function bernoulliEntropy<T extends tf.Tensor>(logits: T): T {
  const neg = tf.neg(tf.abs(logits));
  return tf.sub(tf.softplus(neg), tf.mul(tf.sigmoid(neg), neg));
}
