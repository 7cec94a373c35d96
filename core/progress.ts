/**
 * Progress lines for long work: done/total, rate, ETA; at most one line a second on stderr.
 * @module
 */

/** Reports progress of a counted task (tokens, steps). */
export class Progress {
  #label: string;
  #unit: string;
  #total: number;
  #done = 0;
  #start = performance.now();
  #last = 0;

  /**
   * @param label What is being done, e.g. "extract train".
   * @param total Units to do in all (0 when unknown).
   * @param unit Unit name for the rate, e.g. "tok".
   */
  constructor(label: string, total: number, unit: string) {
    this.#label = label;
    this.#total = total;
    this.#unit = unit;
  }

  /** Units per second since the start. */
  get rate(): number {
    return this.#done /
      Math.max((performance.now() - this.#start) / 1000, 1e-9);
  }

  /** Add `n` finished units; prints when a second has passed since the last line. */
  advance(n: number): void {
    this.#done += n;
    const now = performance.now();
    if (now - this.#last >= 1000) {
      this.#last = now;
      this.#print();
    }
  }

  /** Print the final line. */
  finish(): void {
    this.#print();
  }

  #print(): void {
    const rate = this.rate;
    const of = this.#total > 0 ? `/${this.#total.toLocaleString("en")}` : "";
    const left = this.#total > 0 && rate > 0 ? (this.#total - this.#done) / rate : NaN;
    const eta = Number.isFinite(left) ? `  ETA ${clock(left)}` : "";
    console.error(
      `${this.#label}: ${this.#done.toLocaleString("en")}${of} ${this.#unit}  ${
        rate.toFixed(0)
      } ${this.#unit}/s${eta}`,
    );
  }
}

function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}
