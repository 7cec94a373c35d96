/**
 * The SAE loss terms in their sparse and dense formulations (helpers of {@linkcode Sae}).
 *
 * Normalisation: every term is a mean over elements. MSE = mean over the B·d elements of
 * (x̂ − x)²; L1 = mean over the B·m elements of |z|; AuxK = mean over the B·d elements of
 * (e − ê)². Keeping AuxK on the same per-element scale as MSE makes α = 1/32 weigh the two as in
 * Gao et al. (2024), whose normalised MSE divides both by the same data variance — our inputs are
 * standardised per feature (SPEC section 3), so that variance is ≈ 1 and the forms agree.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { gatherCombine, gatherDot, gatherRows, untaped } from "./sparse_topk.ts";

/** TopK latents: the k selected latents per token and their (ReLU'd, possibly zero) values. */
export interface SparseLatents {
  /** [B, k] int32 latent indices. */
  indices: tf.Tensor2D;
  /** [B, k] activations. */
  values: tf.Tensor2D;
}

/** Latents: sparse for topk, dense [B, m] for relu-l1. */
export type SaeLatents = SparseLatents | tf.Tensor2D;

/** Loss terms (scalars); `aux` for topk in training, `l1` for relu-l1. */
export interface SaeLosses {
  mse: tf.Scalar;
  aux?: tf.Scalar;
  l1?: tf.Scalar;
  total: tf.Scalar;
}

/** What {@linkcode Sae.forward} returns. */
export interface SaeOutput {
  /** [B, d] reconstruction. */
  xHat: tf.Tensor2D;
  latents: SaeLatents;
  losses: SaeLosses;
}

/** The SAE's trainable tensors. */
export interface SaeWeights {
  /** [m, d] encoder rows. */
  we: tf.Tensor2D;
  /** [m] encoder bias. */
  be: tf.Tensor1D;
  /** [m, d] decoder rows. */
  wd: tf.Tensor2D;
  /** [d] pre-encoder bias = decoder bias. */
  b: tf.Tensor1D;
}

/**
 * Scatters per-token (index, value) pairs into a dense [B, m] matrix (indices unique per row).
 *
 * @param indices [B, k] int32.
 * @param values [B, k].
 * @param m Number of latents.
 * @returns [B, m], zero outside the given indices.
 */
export function scatterLatents(indices: tf.Tensor2D, values: tf.Tensor2D, m: number): tf.Tensor2D {
  const [batch, k] = indices.shape;
  return tf.tidy(() => {
    const rows = tf.tile(tf.range(0, batch, 1, "int32").reshape([batch, 1]), [1, k]);
    const pairs = tf.stack([rows.reshape([batch * k]), indices.reshape([batch * k])], 1);
    return tf.scatterND(pairs, values.reshape([batch * k]), [batch, m]) as tf.Tensor2D;
  });
}

/**
 * TopK reconstruction without its bias, differentiable to the weights:
 * Σ_κ ReLU(pre[idx_κ]) · W_d[idx_κ].
 *
 * @param xc [B, d] centred inputs x − b (taped).
 * @param w The weights.
 * @param idx [B, k] int32 selected latents (constant).
 * @param sparse Gather/scatter path, or the dense [B, m] formulation for checking.
 * @returns The active values z [B, k] and the decoded [B, d].
 */
export function topkDecode(
  xc: tf.Tensor2D,
  w: SaeWeights,
  idx: tf.Tensor2D,
  sparse: boolean,
): { z: tf.Tensor2D; decoded: tf.Tensor2D } {
  const m = w.we.shape[0];
  if (sparse) {
    const pre = tf.add(gatherDot(xc, w.we, idx), gatherRows<tf.Tensor2D>(w.be, idx));
    const z = tf.relu(pre) as tf.Tensor2D;
    return { z, decoded: gatherCombine(z, w.wd, idx) };
  }
  const mask = untaped(idx, () => scatterLatents(idx, tf.onesLike(idx).toFloat(), m)); // [B, m]
  const pre = tf.add(tf.matMul(xc, w.we, false, true), w.be); // [B, m]
  const zDense = tf.mul(tf.relu(pre), mask) as tf.Tensor2D;
  const z = untaped(idx, () => tf.gather(zDense, idx, 1, 1)) as tf.Tensor2D;
  return { z, decoded: tf.matMul(zDense, w.wd) };
}

/**
 * Up to this many dead latents per k_aux, the sparse path runs AuxK as dense matmuls over the
 * gathered dead rows (6 sgemms of 2·B·n_dead·d, plus gathering n_dead rows and scattering their
 * gradients back) rather than as row products on the selected rows (6 passes of B·k_aux·d
 * multiply-adds, whatever n_dead): sgemm does ~50–75× more multiply-adds per second than the
 * row loops. Measured (d 768, m 24576, k_aux 256, batch 1024, 2 cores): at 48 dead latents per
 * k_aux slot the matmuls are still 10–20% faster; 32 keeps a margin. Both give the same values.
 */
const DENSE_DEAD_RATIO = 32;

/**
 * AuxK (Gao et al. 2024, appendix A.2): the top k_aux pre-activations among dead latents, ReLU'd
 * as in the main path, decoded with no bias, fitted to the detached residual e = x − x̂.
 *
 * @param x [B, d] inputs.
 * @param xc [B, d] centred inputs (taped).
 * @param xHat [B, d] reconstruction (detached here).
 * @param pre [B, m] pre-activations (constant).
 * @param w The weights.
 * @param dead int32 indices of the dead latents (non-empty).
 * @param kAux How many to decode per token (≤ dead count).
 * @param sparse Gather/scatter path, or the dense formulation.
 * @returns The scalar mean over elements of (e − ê)².
 */
export function auxkLoss(
  x: tf.Tensor2D,
  xc: tf.Tensor2D,
  xHat: tf.Tensor2D,
  pre: tf.Tensor2D,
  w: SaeWeights,
  dead: tf.Tensor1D,
  kAux: number,
  sparse: boolean,
): tf.Scalar {
  const e = untaped(x, () => tf.sub(x, xHat));
  // Local positions within the dead set [B, kAux]; constant (pre is).
  const local = tf.topk(tf.gather(pre, dead, 1), kAux).indices as tf.Tensor2D;
  let eHat: tf.Tensor2D;
  if (sparse && dead.shape[0] <= DENSE_DEAD_RATIO * kAux) {
    // Matmuls over the dead rows only: gathered weights [nDead, d], whose gradients scatter back.
    const deadW: SaeWeights = {
      we: gatherRows<tf.Tensor2D>(w.we, dead),
      be: gatherRows<tf.Tensor1D>(w.be, dead),
      wd: gatherRows<tf.Tensor2D>(w.wd, dead),
      b: w.b,
    };
    eHat = topkDecode(xc, deadW, local, false).decoded;
  } else {
    // Row products (sparse) or the dense formulation, on the selected rows of the whole weights.
    const global = tf.gather(dead, local) as tf.Tensor as tf.Tensor2D;
    eHat = topkDecode(xc, w, global, sparse).decoded;
  }
  return tf.mean(tf.square(tf.sub(e, eHat))) as tf.Scalar;
}

/**
 * Removes the radial component of each decoder row's gradient, g ← g − (g·w / ‖w‖²) w, so a step
 * moves rows along their unit sphere (to first order; rows are renormalised after the step).
 *
 * @param grad [m, d] gradient.
 * @param wd [m, d] decoder rows.
 * @returns The tangential gradient.
 */
export function tangentialGradient(grad: tf.Tensor2D, wd: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const radial = tf.div(tf.sum(tf.mul(grad, wd), 1, true), tf.sum(tf.square(wd), 1, true));
    return tf.sub(grad, tf.mul(radial, wd));
  });
}

/**
 * Rows scaled to unit norm.
 * @param w [m, d].
 * @returns [m, d].
 */
export function unitRows(w: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.div(w, tf.norm(w, "euclidean", 1, true)));
}

/**
 * ReLU SAE: z = ReLU(W_e(x − b) + b_e), x̂ = W_dᵀz + b; loss = MSE + λ·L1.
 *
 * @param x [B, d].
 * @param w The weights.
 * @param lambda `[sae].l1`.
 * @returns Reconstruction, dense latents and losses.
 */
export function reluL1Forward(x: tf.Tensor2D, w: SaeWeights, lambda: number): SaeOutput {
  const xc = tf.sub(x, w.b);
  const z = tf.relu(tf.add(tf.matMul(xc, w.we, false, true), w.be)) as tf.Tensor2D; // [B, m]
  const xHat = tf.add(tf.matMul(z, w.wd), w.b) as tf.Tensor2D;
  const mse = tf.mean(tf.square(tf.sub(xHat, x))) as tf.Scalar;
  const l1 = tf.mean(tf.abs(z)) as tf.Scalar;
  return { xHat, latents: z, losses: { mse, l1, total: tf.add(mse, tf.mul(l1, lambda)) } };
}

/**
 * TopK SAE: z = ReLU(TopK_k(pre)), x̂ = Σ z·W_d[idx] + b; loss = MSE + α·AuxK when `dead` is
 * given (training) and non-empty.
 *
 * @param x [B, d].
 * @param w The weights.
 * @param pre [B, m] pre-activations W_e(x − b) + b_e, computed off the tape.
 * @param o k, k_aux, aux_alpha, the dead latents (null: not training) and the path.
 * @returns Reconstruction, sparse latents and losses.
 */
export function topkForward(
  x: tf.Tensor2D,
  w: SaeWeights,
  pre: tf.Tensor2D,
  o: { k: number; k_aux: number; aux_alpha: number; dead: Int32Array | null; sparse: boolean },
): SaeOutput {
  const xc = tf.sub(x, w.b) as tf.Tensor2D;
  const indices = tf.topk(pre, o.k).indices as tf.Tensor2D;
  const { z, decoded } = topkDecode(xc, w, indices, o.sparse);
  const xHat = tf.add(decoded, w.b) as tf.Tensor2D;
  const mse = tf.mean(tf.square(tf.sub(xHat, x))) as tf.Scalar;
  const latents = { indices, values: z };
  if (o.dead === null) return { xHat, latents, losses: { mse, total: mse } };
  const aux = o.dead.length === 0 ? tf.scalar(0) : auxkLoss(
    x,
    xc,
    xHat,
    pre,
    w,
    tf.tensor1d(o.dead, "int32"),
    Math.min(o.k_aux, o.dead.length),
    o.sparse,
  );
  return { xHat, latents, losses: { mse, aux, total: tf.add(mse, tf.mul(aux, o.aux_alpha)) } };
}
