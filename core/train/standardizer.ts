/**
 * Per-feature standardisation fitted on training tokens in float64 (SPEC section 3), stored with
 * every model and inverted before any original-head scoring.
 * @module
 */
import type { EmbeddingsReader } from "../embeddings_store.ts";
import { FeatureMoments } from "../feature_moments.ts";
import type { NamedTensor } from "./safetensors.ts";

/** Floor on a feature's standard deviation, so constant features do not divide by zero. */
const MIN_STD = 1e-6;

/** x ↦ (x − mean) / std per feature, and back. */
export class Standardizer {
  readonly mean: Float32Array;
  readonly std: Float32Array;

  /**
   * @param mean Per-feature mean [d].
   * @param std Per-feature standard deviation [d] (floored at 1e-6).
   */
  constructor(mean: Float32Array, std: Float32Array) {
    if (mean.length !== std.length) {
      throw new RangeError(
        `Expected mean and std of equal length, got ${mean.length} and ${std.length}`,
      );
    }
    this.mean = mean;
    this.std = std.map((s) => Math.max(s, MIN_STD));
  }

  /**
   * Fit on the training split of an embeddings file, streaming in blocks.
   *
   * @param reader An open embeddings file.
   * @param maxRows Use at most this many leading rows (0: all).
   */
  static fit(reader: EmbeddingsReader, maxRows = 0): Standardizer {
    const moments = new FeatureMoments(reader.d);
    const rows = maxRows > 0 ? Math.min(maxRows, reader.rows("train")) : reader.rows("train");
    const block = 65536;
    for (let start = 0; start < rows; start += block) {
      moments.add(reader.read("train", start, Math.min(rows, start + block)).embeddings);
    }
    const std = moments.m2.map((m) => Math.sqrt(m / moments.n));
    return new Standardizer(Float32Array.from(moments.mean), Float32Array.from(std));
  }

  /** Standardise rows [n, d] in place. */
  apply(x: Float32Array): Float32Array {
    const d = this.mean.length;
    for (let i = 0; i < x.length; i++) x[i] = (x[i] - this.mean[i % d]) / this.std[i % d];
    return x;
  }

  /** Undo {@link apply} on rows [n, d] in place. */
  invert(x: Float32Array): Float32Array {
    const d = this.mean.length;
    for (let i = 0; i < x.length; i++) x[i] = x[i] * this.std[i % d] + this.mean[i % d];
    return x;
  }

  /** As safetensors entries `norm.mean`, `norm.std`. */
  toTensors(): Record<string, NamedTensor> {
    const d = this.mean.length;
    return {
      "norm.mean": { dtype: "F32", shape: [d], data: this.mean },
      "norm.std": { dtype: "F32", shape: [d], data: this.std },
    };
  }

  /** From safetensors entries written by {@link toTensors}. */
  static fromTensors(tensors: Record<string, NamedTensor>): Standardizer {
    const mean = tensors["norm.mean"]?.data;
    const std = tensors["norm.std"]?.data;
    if (!(mean instanceof Float32Array) || !(std instanceof Float32Array)) {
      throw new Error("Expected float32 tensors norm.mean and norm.std");
    }
    return new Standardizer(mean, std);
  }
}
