/**
 * A small seeded pseudo-random generator (mulberry32 + Box–Muller) whose whole state is a
 * plain JSON object, so a checkpoint can save it and a resumed run continues the same stream.
 *
 * @module
 */

/** The full state of an {@linkcode Rng}: save it with a checkpoint, pass it to `restore`. */
export interface RngState {
  /** The 32-bit mulberry32 counter. */
  a: number;
  /** The second Box–Muller normal, kept until the next `normal()` call; null when none. */
  spare: number | null;
}

/**
 * A deterministic generator of uniform, normal and integer values from an integer seed.
 *
 * @example Same seed, same stream; a restored state continues where it left off
 * ```ts
 * import { Rng } from "./rng.ts";
 * const a = new Rng(42);
 * const b = new Rng(42);
 * if (a.next() !== b.next()) throw new Error("Not deterministic");
 * const saved = a.state;
 * const x = a.normal();
 * a.restore(saved);
 * if (a.normal() !== x) throw new Error("Restore failed");
 * ```
 */
export class Rng {
  #a: number;
  #spare: number | null = null;

  /**
   * Creates a generator.
   *
   * @param seed An integer seed (any safe integer; it is reduced to 32 bits).
   */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) {
      throw new RangeError(
        `Cannot seed Rng with ${seed}: expected a safe integer`,
      );
    }
    this.#a = Number(BigInt.asUintN(32, BigInt(seed)));
  }

  /**
   * Returns a uniform value in [0, 1) (mulberry32, 32 bits of resolution).
   *
   * @returns The next uniform value.
   */
  next(): number {
    this.#a = (this.#a + 0x6d2b79f5) >>> 0;
    let t = this.#a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /**
   * Returns a standard normal value (Box–Muller; the second value of each pair is kept).
   *
   * @returns The next N(0, 1) value.
   */
  normal(): number {
    if (this.#spare !== null) {
      const z = this.#spare;
      this.#spare = null;
      return z;
    }
    const u1 = 1 - this.next(); // (0, 1]: log(u1) is finite
    const u2 = this.next();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.#spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }

  /**
   * Returns a uniform integer in [0, n).
   *
   * @param n The number of possible values, a positive integer up to 2^32.
   * @returns The next integer.
   */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > 4294967296) {
      throw new RangeError(
        `Cannot draw Rng.int(${n}): expected an integer in [1, 2^32]`,
      );
    }
    return Math.floor(this.next() * n);
  }

  /**
   * Shuffles an array in place (Fisher–Yates).
   *
   * @param array The array to shuffle.
   * @returns The same array, shuffled.
   */
  shuffle<T>(array: T[]): T[] {
    for (let i = array.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [array[i], array[j]] = [array[j], array[i]];
    }
    return array;
  }

  /** A copy of the current state, to save and later `restore`. */
  get state(): RngState {
    return { a: this.#a, spare: this.#spare };
  }

  /**
   * Restores a state saved from `state`, so the stream continues from that point.
   *
   * @param state A state from {@linkcode Rng.state}.
   */
  restore(state: RngState): void {
    if (!Number.isInteger(state?.a) || state.a < 0 || state.a > 0xffffffff) {
      throw new RangeError(
        `Cannot restore Rng state ${
          JSON.stringify(state)
        }: expected "a" to be a 32-bit unsigned integer`,
      );
    }
    if (state.spare !== null && !Number.isFinite(state.spare)) {
      throw new RangeError(
        `Cannot restore Rng state ${
          JSON.stringify(state)
        }: expected "spare" to be a finite number or null`,
      );
    }
    this.#a = state.a;
    this.#spare = state.spare;
  }
}

/**
 * A 32-bit seed from several integers (FNV-1a over them, then a murmur3 finaliser), e.g. one
 * stream per (training seed, configuration, sample).
 *
 * @param parts Integers (taken mod 2³²).
 * @returns An unsigned 32-bit seed.
 */
export function mixSeed(...parts: number[]): number {
  let h = 0x811c9dc5;
  for (const p of parts) h = Math.imul(h ^ (p >>> 0), 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
