/**
 * Dead-concept resampling for the LCBLM (SPEC section 4): concepts that fire on fewer than
 * 0.1% of a sample of training tokens are re-pointed at residual directions no live concept
 * covers, found by spherical k-means on the tokens with the largest residuals, and their Adam
 * moments are reset. The stage decides when to call it (every `[lcblm].resample_every` epochs
 * until 80% of training).
 *
 * What "re-pointed" sets, for dead concept k given cluster j (unit centroid c_j of the residual
 * directions, member tokens T_j):
 * - the prototype h_k ← mean over T_j of the encoder's current μ_k(x): the point the concept's
 *   embedding already occupies on exactly those tokens, so the gate opens there (for every
 *   encoder and similarity type, without touching the shared encoder);
 * - stacked topology: the decoder block B_k ← a_j·c_j·h_kᵀ/‖h_k‖², a_j = mean over T_j of the
 *   residual's component along c_j, so the concept's direction B_k·h_k (see
 *   `Lcblm.conceptDirections`) becomes the cluster's mean uncovered residual a_j·c_j. In the summed
 *   topology the decoder is shared by all concepts and is left alone;
 * - Adam's m and v are zeroed for every parameter owned by concept k alone: row k of the
 *   prototypes, rows kE…(k+1)E − 1 of the encoder's output layer (weight and bias) and, stacked,
 *   columns kE…(k+1)E − 1 of the decoder weight. The step count is shared and kept.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { Rng } from "../core/rng.ts";
import type { Adam } from "../core/train/adam.ts";
import type { Lcblm } from "./lcblm.ts";

/** Resampling settings. */
export interface ResampleOptions {
  /** Dead: gate α > 0.5 on fewer than this fraction of the sample (SPEC: 0.1%). */
  threshold?: number;
  /** Fraction of the sample, largest residual norms first, that k-means clusters. */
  topFraction?: number;
  /** Most Lloyd iterations of the spherical k-means. */
  iterations?: number;
  /** Seed of the k-means++ initialisation. */
  seed?: number;
  /** Tokens per forward pass while measuring firing rates. */
  chunk?: number;
}

/** What resampling found and did. */
export interface ResampleResult {
  /** Fraction of the sample on which each concept fired, before resampling [K]. */
  firingRate: Float64Array;
  /** The concepts re-pointed, ascending. */
  resampled: number[];
}

/**
 * Re-points dead concepts at uncovered residual directions and resets their Adam moments.
 *
 * @param model The model (its variables are updated in place).
 * @param adam The optimiser over `model.variables()`.
 * @param x A sample of training tokens [n, d] (≥ a few thousand, so 0.1% is measurable).
 * @param options Threshold, clustered fraction, iterations, seed, chunk size.
 * @returns Firing rates and the resampled concepts.
 */
export async function resampleDeadConcepts(
  model: Lcblm,
  adam: Adam,
  x: tf.Tensor2D,
  options: ResampleOptions = {},
): Promise<ResampleResult> {
  const { threshold = 1e-3, topFraction = 0.1, iterations = 20, seed = 0, chunk = 4096 } = options;
  const n = x.shape[0], { k: concepts, e } = model;
  // 1. Firing rates and residual norms over the sample, in evaluation mode.
  const fired = new Float64Array(concepts);
  const residual2 = new Float32Array(n);
  for (let start = 0; start < n; start += chunk) {
    const size = Math.min(chunk, n - start);
    const [counts, norms] = tf.tidy(() => {
      const xs = tf.slice(x, [start, 0], [size, -1]);
      const { probs, mu } = model.encode(xs);
      const r = tf.sub(xs, model.decode(probs, mu));
      return [tf.sum(tf.cast(tf.greater(probs, 0.5), "float32"), 0), tf.sum(tf.square(r), 1)];
    });
    const countData = await counts.data() as Float32Array;
    countData.forEach((c, i) => fired[i] += c);
    residual2.set(await norms.data() as Float32Array, start);
    tf.dispose([counts, norms]);
  }
  const firingRate = fired.map((c) => c / n);
  const dead = [...firingRate.keys()].filter((i) => firingRate[i] < threshold);
  if (dead.length === 0) return { firingRate, resampled: [] };

  // 2. The tokens with the largest residuals, their residuals and the dead concepts' μ.
  const m = Math.min(n, Math.max(16 * dead.length, Math.ceil(topFraction * n)));
  const top = [...residual2.keys()].sort((a, b) => residual2[b] - residual2[a]).slice(0, m);
  const { r, unit, mu } = tf.tidy(() => {
    const xs = tf.gather(x, top);
    const enc = model.encode(xs);
    const r = tf.sub(xs, model.decode(enc.probs, enc.mu)) as tf.Tensor2D; // [M, d]
    const unit = tf.div(r, tf.maximum(tf.norm(r, 2, 1, true), 1e-12)) as tf.Tensor2D;
    return { r, unit, mu: tf.gather(enc.mu, dead, 1) }; // mu: [M, dead, E]
  });
  const { centroids, assign } = sphericalKMeans(
    unit,
    residual2,
    top,
    dead.length,
    iterations,
    seed,
  );
  const along = tf.tidy(() => tf.sum(tf.mul(r, tf.gather(centroids, assign)), 1)); // r_t·c_{j(t)}
  const [alongData, muData, cData] = [await along.data(), await mu.data(), await centroids.data()];
  tf.dispose([r, unit, mu, centroids, along]);

  // 3. Prototypes and (stacked) decoder blocks of the dead concepts.
  const vars = new Map(model.variables().map((v) => [v.name, v]));
  const protos = vars.get("lcblm.prototypes")!.dataSync().slice() as Float32Array;
  const decoder = vars.get("lcblm.decoder.weight")!;
  const w = decoder.dataSync().slice() as Float32Array; // [d, K·E] (stacked)
  const stacked = model.cfg.topology === "stacked";
  const resampled: number[] = [];
  dead.forEach((concept, j) => {
    const members = assign.flatMap((c, t) => (c === j ? [t] : []));
    if (members.length === 0) return;
    const h = new Float64Array(e);
    let a = 0;
    for (const t of members) {
      for (let i = 0; i < e; i++) h[i] += muData[(t * dead.length + j) * e + i] / members.length;
      a += alongData[t] / members.length;
    }
    const h2 = h.reduce((s, v) => s + v * v, 0);
    if (h2 < 1e-12) return; // the encoder gives this concept nothing to point at
    protos.set(h, concept * e);
    if (stacked) {
      for (let row = 0; row < model.d; row++) {
        for (let i = 0; i < e; i++) {
          w[row * concepts * e + concept * e + i] = a * cData[j * model.d + row] * h[i] / h2;
        }
      }
    }
    resampled.push(concept);
  });
  vars.get("lcblm.prototypes")!.assign(tf.tensor(protos, [concepts, e]));
  if (stacked) decoder.assign(tf.tensor(w, decoder.shape));
  await resetMoments(model, adam, resampled);
  return { firingRate, resampled };
}

/** Zeroes Adam's m and v for the parameters owned by the given concepts alone. */
async function resetMoments(model: Lcblm, adam: Adam, concepts: number[]): Promise<void> {
  const state = await adam.getState();
  const { k, e, d } = model;
  const out = model.cfg.encoder === "mlp" ? "lcblm.encoder.2" : "lcblm.encoder.0";
  const fanIn = model.cfg.encoder === "mlp" ? 256 : d;
  for (const moments of [state.m, state.v]) {
    for (const c of concepts) {
      moments["lcblm.prototypes"].fill(0, c * e, (c + 1) * e);
      moments[`${out}.weight`].fill(0, c * e * fanIn, (c + 1) * e * fanIn);
      moments[`${out}.bias`].fill(0, c * e, (c + 1) * e);
      if (model.cfg.topology !== "stacked") continue;
      for (let row = 0; row < d; row++) {
        moments["lcblm.decoder.weight"].fill(0, row * k * e + c * e, row * k * e + (c + 1) * e);
      }
    }
  }
  adam.setState(state);
}

/**
 * Spherical k-means (cosine) on unit rows, k-means++ initialised with picks weighted by the
 * residual energy first, then by (1 − best cosine)².
 *
 * @returns Unit centroids [clusters, d] and each row's cluster.
 */
function sphericalKMeans(
  unit: tf.Tensor2D,
  residual2: Float32Array,
  top: number[],
  clusters: number,
  iterations: number,
  seed: number,
): { centroids: tf.Tensor2D; assign: number[] } {
  const m = unit.shape[0];
  const rng = new Rng(seed);
  const pick = (weights: ArrayLike<number>) => {
    const total = Array.from(weights).reduce((s, v) => s + v, 0);
    let target = rng.next() * total;
    for (let i = 0; i < weights.length; i++) if ((target -= weights[i]) < 0) return i;
    return Math.floor(rng.next() * weights.length); // all weights zero: uniform
  };
  const chosen = [pick(top.map((t) => residual2[t]))];
  const best = new Float64Array(m).fill(-1);
  while (chosen.length < Math.min(clusters, m)) {
    const cos = tf.tidy(() => tf.matMul(unit, tf.gather(unit, [chosen.at(-1)!]), false, true))
      .dataSync();
    cos.forEach((c, i) => best[i] = Math.max(best[i], c));
    chosen.push(pick(Array.from(best, (c) => Math.max(0, 1 - c) ** 2)));
  }
  let centroids = tf.gather(unit, chosen) as tf.Tensor2D;
  let assign: number[] = [];
  for (let it = 0; it < iterations; it++) {
    const next = Array.from(
      tf.tidy(() => tf.argMax(tf.matMul(unit, centroids, false, true), 1)).dataSync(),
    );
    if (next.every((c, i) => c === assign[i])) break;
    assign = next;
    const updated = tf.tidy(() => {
      const sums = tf.unsortedSegmentSum(unit, tf.tensor1d(assign, "int32"), chosen.length);
      const norms = tf.norm(sums, 2, 1, true);
      // An empty cluster keeps its centroid.
      return tf.where(tf.greater(norms, 1e-12), tf.div(sums, tf.maximum(norms, 1e-12)), centroids);
    }) as tf.Tensor2D;
    centroids.dispose();
    centroids = updated;
  }
  return { centroids, assign };
}
