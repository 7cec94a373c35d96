/**
 * SAE initial weights and dead-latent bookkeeping (helpers of {@linkcode Sae} in sae.ts).
 * @module
 */
import type { Config } from "../core/config_schema.ts";
import { Rng } from "../core/rng.ts";
import { geometricMedian } from "./geometric_median.ts";

/** Initial weights as plain arrays. */
export interface SaeInit {
  /** [m, d] decoder rows, unit norm, random directions. */
  decoder: Float32Array;
  /** [m, d] encoder rows: a copy of the decoder ("tied init", not tied in training). */
  encoder: Float32Array;
  /** [d] pre-encoder bias = decoder bias: geometric median (or mean) of the sample. */
  bias: Float32Array;
}

/**
 * Deterministic initial weights: decoder rows are isotropic Gaussian directions normalised to unit
 * length (drawn from `seed` only), the encoder is their copy, the bias a robust centre of the data.
 *
 * @param d Input width.
 * @param m Number of latents.
 * @param seed Integer seed.
 * @param sample [n, d] training tokens, row-major.
 * @param biasInit How to centre: geometric median (robust to outlier tokens) or mean.
 * @returns The weights.
 */
export function initialWeights(
  d: number,
  m: number,
  seed: number,
  sample: Float32Array,
  biasInit: Config["sae"]["bias_init"],
): SaeInit {
  const n = sample.length / d;
  if (!Number.isInteger(n) || n === 0) {
    throw new RangeError(
      `Cannot initialise the SAE bias from a sample of ${sample.length} values: expected a ` +
        `non-empty [n, ${d}] array`,
    );
  }
  const rng = new Rng(seed);
  const decoder = new Float32Array(m * d);
  const row = new Float64Array(d);
  for (let i = 0; i < m; i++) {
    let norm = 0;
    for (let j = 0; j < d; j++) {
      row[j] = rng.normal();
      norm += row[j] * row[j];
    }
    norm = Math.sqrt(norm);
    for (let j = 0; j < d; j++) decoder[i * d + j] = row[j] / norm;
  }
  let centre: Float64Array;
  if (biasInit === "geometric_median") {
    centre = geometricMedian(sample, d);
  } else {
    centre = new Float64Array(d);
    for (let i = 0; i < sample.length; i++) centre[i % d] += sample[i] / n;
  }
  return { decoder, encoder: decoder.slice(), bias: Float32Array.from(centre) };
}

/**
 * Tokens since each latent last fired (a non-zero activation), updated every training step; a
 * latent is dead once its count reaches the threshold (AuxK, Gao et al. 2024 appendix A.2).
 * Counts are float64 so runs past 2^31 tokens stay exact.
 */
export class DeadTracker {
  /** Tokens since each latent last fired. */
  readonly sinceFired: Float64Array;
  /** Tokens without firing after which a latent is dead. */
  readonly threshold: number;

  /**
   * @param m Number of latents.
   * @param threshold `[sae].dead_tokens`.
   */
  constructor(m: number, threshold: number) {
    this.sinceFired = new Float64Array(m);
    this.threshold = threshold;
  }

  /**
   * Records one batch.
   * @param tokens Tokens in the batch.
   * @param fired Latents that fired on at least one of them.
   */
  update(tokens: number, fired: Iterable<number>): void {
    for (let i = 0; i < this.sinceFired.length; i++) this.sinceFired[i] += tokens;
    for (const i of fired) this.sinceFired[i] = 0;
  }

  /** Indices of the dead latents, ascending. */
  deadIndices(): Int32Array {
    const out: number[] = [];
    for (let i = 0; i < this.sinceFired.length; i++) {
      if (this.sinceFired[i] >= this.threshold) out.push(i);
    }
    return Int32Array.from(out);
  }
}
