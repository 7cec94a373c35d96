/**
 * Next-token metrics from logits, accumulated in float64: cross-entropy, perplexity, top-1.
 * @module
 */

/** Final next-token metrics over the counted (target ≥ 0) positions. */
export interface NextTokenResult {
  /** Positions with a target. */
  n: number;
  /** Mean cross-entropy in nats. */
  ce: number;
  /** exp(ce). */
  perplexity: number;
  /** Fraction of positions whose argmax logit is the target. */
  top1: number;
}

/** Accumulates cross-entropy and accuracy; targets < 0 are masked out. */
export class NextTokenMetrics {
  readonly vocab: number;
  #n = 0;
  #nll = 0;
  #hits = 0;

  /** @param vocab Logit width. */
  constructor(vocab: number) {
    this.vocab = vocab;
  }

  /**
   * Add a batch of logits.
   *
   * @param logits [n, vocab] row-major.
   * @param targets [n]; −1 = no target.
   * @example
   * ```ts
   * import { ok } from "node:assert";
   * const m = new NextTokenMetrics(2);
   * m.add(new Float32Array([0, 0, 5, 0]), new Int32Array([1, -1]));
   * ok(Math.abs(m.result().ce - Math.log(2)) < 1e-12);
   * ```
   */
  add(logits: Float32Array, targets: Int32Array): void {
    const v = this.vocab;
    if (logits.length !== targets.length * v) {
      throw new RangeError(`Expected ${targets.length}×${v} logits, got ${logits.length}`);
    }
    for (let r = 0; r < targets.length; r++) {
      const t = targets[r];
      if (t < 0) continue;
      if (t >= v) throw new RangeError(`Target ${t} at row ${r} is outside the vocabulary of ${v}`);
      const row = logits.subarray(r * v, (r + 1) * v);
      let max = -Infinity;
      let arg = 0;
      for (let k = 0; k < v; k++) {
        if (row[k] > max) {
          max = row[k];
          arg = k;
        }
      }
      let sum = 0;
      for (let k = 0; k < v; k++) sum += Math.exp(row[k] - max);
      this.#nll += Math.log(sum) + max - row[t];
      this.#n++;
      if (arg === t) this.#hits++;
    }
  }

  /** The metrics over everything added so far. */
  result(): NextTokenResult {
    const ce = this.#nll / this.#n;
    return { n: this.#n, ce, perplexity: Math.exp(ce), top1: this.#hits / this.#n };
  }
}
