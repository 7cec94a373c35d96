/**
 * Reconstruction metrics accumulated in float64 over a whole evaluated set (SPEC section 3).
 *
 * FVU = Σ‖x − x̂‖² / Σ‖x − mean(x)‖² with the mean over the whole set, not per batch: averaging
 * per-batch FVUs (as several SAE libraries do) divides by each batch's own variance and gives a
 * different, batch-size-dependent number.
 * @module
 */
import { FeatureMoments } from "../core/feature_moments.ts";

/** Final reconstruction metrics. */
export interface ReconstructionResult {
  /** Tokens evaluated. */
  n: number;
  /** Mean squared error per element. */
  mse: number;
  /** Fraction of variance unexplained over the whole set. */
  fvu: number;
  /** Mean number of active (non-zero) latents per token. */
  l0: number;
  /** Fraction of latents that never fired on the set. */
  deadFraction: number;
  /** Per-latent firing frequency (fraction of tokens where it is non-zero). */
  firingFrequency: Float64Array;
}

/** Accumulates reconstruction metrics batch by batch. */
export class ReconstructionMetrics {
  readonly d: number;
  readonly latents: number;
  #sse = 0;
  #moments: FeatureMoments;
  #fires: Float64Array;
  #active = 0;

  /**
   * @param d Input width.
   * @param latents Number of latents (0 when only reconstruction is measured).
   */
  constructor(d: number, latents: number) {
    this.d = d;
    this.latents = latents;
    this.#moments = new FeatureMoments(d);
    this.#fires = new Float64Array(latents);
  }

  /**
   * Add a batch.
   *
   * @param x Inputs [n, d].
   * @param xHat Reconstructions [n, d].
   * @param z Latent activations [n, latents] (dense; zero = inactive), or omitted.
   */
  add(x: Float32Array, xHat: Float32Array, z?: Float32Array): void {
    const d = this.d;
    const n = x.length / d;
    if (!Number.isInteger(n) || xHat.length !== x.length) {
      throw new RangeError(`Expected x and xHat of equal length, a multiple of d=${d}`);
    }
    for (let i = 0; i < x.length; i++) {
      const e = x[i] - xHat[i];
      this.#sse += e * e;
    }
    this.#moments.add(x);
    if (z !== undefined) this.#addLatents(z, n);
  }

  /** The metrics over everything added so far. */
  result(): ReconstructionResult {
    const n = this.#moments.n;
    const firingFrequency = this.#fires.map((f) => f / n);
    return {
      n,
      mse: this.#sse / (n * this.d),
      fvu: this.#sse / this.#moments.totalSquaredDeviation(),
      l0: this.#active / n,
      deadFraction: this.latents === 0
        ? 0
        : this.#fires.filter((f) => f === 0).length / this.latents,
      firingFrequency,
    };
  }

  #addLatents(z: Float32Array, n: number): void {
    const m = this.latents;
    if (z.length !== n * m) throw new RangeError(`Expected z of ${n}×${m} values, got ${z.length}`);
    for (let r = 0; r < n; r++) {
      for (let k = 0; k < m; k++) {
        if (z[r * m + k] !== 0) {
          this.#fires[k]++;
          this.#active++;
        }
      }
    }
  }
}

/**
 * Histogram of log10 firing frequencies (dead latents counted apart), for plots.
 *
 * @param frequency Per-latent firing frequency.
 * @param bins Bin edges in log10 units, ascending.
 * @returns Counts per bin (values below the first edge go in the first bin) and the dead count.
 */
export function firingHistogram(
  frequency: Float64Array,
  bins: number[] = [-7, -6, -5, -4, -3, -2, -1, 0],
): { edges: number[]; counts: number[]; dead: number } {
  const counts = new Array(bins.length - 1).fill(0);
  let dead = 0;
  for (const f of frequency) {
    if (f === 0) {
      dead++;
      continue;
    }
    const l = Math.log10(f);
    let b = bins.findIndex((edge, i) => i > 0 && l < edge) - 1;
    if (b < 0) b = l < bins[0] ? 0 : counts.length - 1;
    counts[b]++;
  }
  return { edges: bins, counts, dead };
}
