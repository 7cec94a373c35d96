/**
 * Synthetic dictionary benchmarks (SPEC section 7): data built from known unit atoms, and how well
 * a model's learned directions recover them (Hungarian matching by cosine).
 * @module
 */
import { Rng } from "../core/rng.ts";
import { hungarian } from "./hungarian.ts";

/** Coefficients of active atoms: always +1, a random sign, or U(0.5, 1.5). */
export type Coefficients = "+1" | "±1" | "uniform";

/** How many atoms a sample activates. */
export type Activation = { exactly: number } | { probability: number };

/** What to generate. */
export interface SyntheticSpec {
  /** Samples in total (train + test). */
  samples: number;
  /** K: number of atoms. */
  atoms: number;
  /** D: dimension. */
  dim: number;
  /** Exactly n atoms per sample, or each atom independently with probability p. */
  active: Activation;
  coefficients: Coefficients;
  /** σ of the isotropic Gaussian noise. */
  noise: number;
  seed: number;
}

/** A generated dataset. */
export interface SyntheticDictionary {
  /** [K, D] unit atoms, row-major. */
  atoms: Float32Array;
  /** [nTrain, D] the first 80% of the samples. */
  train: Float32Array;
  /** [nTest, D] the rest. */
  test: Float32Array;
  /** [samples, K] each sample's coefficient per atom (0 = inactive), train rows first. */
  codes: Float32Array;
  nTrain: number;
  nTest: number;
}

/**
 * K unit atoms in R^D. D = 2: evenly spaced angles after a random rotation. D > 2: each atom is a
 * random direction redrawn until |cos| < cos(π/K) with every atom before it.
 *
 * @param atoms K.
 * @param dim D ≥ 2.
 * @param rng Random source.
 * @param maxTries Candidate directions tried per atom before giving up (D > 2). The bound
 *   loosens as K grows, so in practice it binds only for small K in low D.
 * @returns [K, D] row-major.
 * @throws {RangeError} When an atom cannot be placed in `maxTries` draws.
 */
export function makeAtoms(atoms: number, dim: number, rng: Rng, maxTries = 100_000): Float32Array {
  if (!Number.isInteger(dim) || dim < 2 || !Number.isInteger(atoms) || atoms < 1) {
    throw new RangeError(`Cannot make ${atoms} atoms in R^${dim}: expected K ≥ 1 and D ≥ 2`);
  }
  const out = new Float32Array(atoms * dim);
  if (dim === 2) {
    const rotation = rng.next() * 2 * Math.PI;
    for (let i = 0; i < atoms; i++) {
      const angle = rotation + (2 * Math.PI * i) / atoms;
      out[2 * i] = Math.cos(angle);
      out[2 * i + 1] = Math.sin(angle);
    }
    return out;
  }
  const bound = Math.cos(Math.PI / atoms);
  const candidate = new Float64Array(dim);
  for (let i = 0; i < atoms; i++) {
    let tries = 0;
    for (;;) {
      if (++tries > maxTries) {
        throw new RangeError(
          `Cannot place atom ${i + 1} of ${atoms} in R^${dim} with |cos| < cos(π/${atoms}) = ` +
            `${bound.toFixed(4)} to the others after ${maxTries} tries: use fewer atoms or more ` +
            `dimensions`,
        );
      }
      let norm = 0;
      for (let j = 0; j < dim; j++) norm += (candidate[j] = rng.normal()) ** 2;
      norm = Math.sqrt(norm);
      for (let j = 0; j < dim; j++) candidate[j] /= norm;
      let ok = true;
      for (let a = 0; a < i && ok; a++) {
        let dot = 0;
        for (let j = 0; j < dim; j++) dot += candidate[j] * out[a * dim + j];
        ok = Math.abs(dot) < bound;
      }
      if (ok) break;
    }
    out.set(candidate, i * dim);
  }
  return out;
}

/**
 * Generates atoms and samples x = Σ coef·atom + N(0, σ²), split 80/20, all from `spec.seed`.
 *
 * @param spec What to generate.
 * @returns Atoms, both splits and the true codes.
 * @example
 * ```ts
 * import { strictEqual } from "node:assert";
 * const s = generateSyntheticDictionary({
 *   samples: 10, atoms: 4, dim: 2, active: { exactly: 1 }, coefficients: "+1", noise: 0, seed: 1,
 * });
 * strictEqual(s.nTrain, 8);
 * strictEqual(s.codes.filter((c) => c !== 0).length, 10);
 * ```
 */
export function generateSyntheticDictionary(spec: SyntheticSpec): SyntheticDictionary {
  const { samples, atoms: k, dim: d, active, coefficients, noise } = spec;
  if (
    "exactly" in active &&
    !(Number.isInteger(active.exactly) && active.exactly >= 1 && active.exactly <= k)
  ) {
    throw new RangeError(
      `Cannot activate exactly ${active.exactly} of ${k} atoms: expected 1..${k}`,
    );
  }
  if ("probability" in active && !(active.probability > 0 && active.probability <= 1)) {
    throw new RangeError(
      `Cannot activate atoms with probability ${active.probability}: expected (0, 1]`,
    );
  }
  const rng = new Rng(spec.seed);
  const atoms = makeAtoms(k, d, rng);
  const codes = new Float32Array(samples * k);
  const x = new Float32Array(samples * d);
  const order = Array.from({ length: k }, (_, i) => i);
  const coefficient = (): number =>
    coefficients === "+1"
      ? 1
      : coefficients === "±1"
      ? (rng.next() < 0.5 ? -1 : 1)
      : 0.5 + rng.next();
  for (let s = 0; s < samples; s++) {
    const code = codes.subarray(s * k, (s + 1) * k);
    if ("exactly" in active) {
      // Partial Fisher–Yates: the first n of a shuffle are n distinct atoms.
      for (let i = 0; i < active.exactly; i++) {
        const j = i + rng.int(k - i);
        [order[i], order[j]] = [order[j], order[i]];
        code[order[i]] = coefficient();
      }
    } else {
      let any = false;
      while (!any) { // an empty draw is redrawn
        for (let a = 0; a < k; a++) {
          if (rng.next() < active.probability) {
            code[a] = coefficient();
            any = true;
          }
        }
      }
    }
    for (let j = 0; j < d; j++) {
      let v = noise * rng.normal();
      for (let a = 0; a < k; a++) if (code[a] !== 0) v += code[a] * atoms[a * d + j];
      x[s * d + j] = v;
    }
  }
  const nTrain = Math.round(0.8 * samples);
  return {
    atoms,
    train: x.slice(0, nTrain * d),
    test: x.slice(nTrain * d),
    codes,
    nTrain,
    nTest: samples - nTrain,
  };
}

/** How well learned directions recover the atoms. */
export interface Recovery {
  /** Fraction of atoms whose Hungarian partner has cos ≥ threshold. */
  matchedFraction: number;
  /** Mean cosine over the Hungarian pairs (min(K, latents) of them). */
  meanMatchedCosine: number;
  /** The threshold used: 0.9 for D = 2, 0.7 above. */
  threshold: number;
  /** Per atom: its partner's index (−1 if none) and their cosine (NaN if none). */
  partner: Int32Array;
  cosine: Float64Array;
}

/**
 * Unit-normalises learned directions, Hungarian-matches them to the true atoms by (signed)
 * cosine, and scores the match.
 *
 * @param learned [n, D] directions (e.g. SAE decoder rows), any norm.
 * @param atoms [K, D] true unit atoms.
 * @param dim D.
 * @returns Matched fraction, mean matched cosine and the pairs.
 */
export function atomRecovery(learned: Float32Array, atoms: Float32Array, dim: number): Recovery {
  const n = learned.length / dim, k = atoms.length / dim;
  if (!Number.isInteger(n) || !Number.isInteger(k) || n === 0 || k === 0) {
    throw new RangeError(`Expected non-empty [n, ${dim}] learned directions and [K, ${dim}] atoms`);
  }
  const cos = new Float64Array(k * n); // [K, n]
  for (let i = 0; i < n; i++) {
    let norm = 0;
    for (let j = 0; j < dim; j++) norm += learned[i * dim + j] ** 2;
    norm = Math.sqrt(norm) || 1;
    for (let a = 0; a < k; a++) {
      let dot = 0;
      for (let j = 0; j < dim; j++) dot += learned[i * dim + j] * atoms[a * dim + j];
      cos[a * n + i] = dot / norm;
    }
  }
  const partner = hungarian(cos.map((c) => -c), k, n);
  const threshold = dim === 2 ? 0.9 : 0.7;
  const cosine = new Float64Array(k).fill(NaN);
  let matched = 0, sum = 0, pairs = 0;
  partner.forEach((i, a) => {
    if (i < 0) return;
    cosine[a] = cos[a * n + i];
    sum += cosine[a];
    pairs++;
    if (cosine[a] >= threshold) matched++;
  });
  return {
    matchedFraction: matched / k,
    meanMatchedCosine: sum / pairs,
    threshold,
    partner,
    cosine,
  };
}

/** A reference tier of SPEC section 7 and the reference TopK result range (single seed). */
export interface SyntheticTier extends Omit<SyntheticSpec, "seed"> {
  name: string;
  referenceTopkMatched: readonly [number, number];
}

const highD = { samples: 20_000, atoms: 64, dim: 32 } as const;

/**
 * The SPEC's reference tiers. Medium/hard: each atom with p = 0.047 (≈ 3 atoms per sample);
 * medium has +1 coefficients, hard U(0.5, 1.5); each at σ ∈ {0.05, 0.1, 0.2}. The SPEC gives
 * samples, K and D only for the easy tier; medium/hard reuse them.
 */
export const SYNTHETIC_TIERS: readonly SyntheticTier[] = Object.freeze([
  Object.freeze(
    {
      name: "high-d-easy",
      ...highD,
      active: Object.freeze({ exactly: 1 }),
      coefficients: "+1",
      noise: 0.05,
      referenceTopkMatched: [0.92, 0.98],
    } as const,
  ),
  ...(["+1", "uniform"] as const).flatMap((coefficients) =>
    [0.05, 0.1, 0.2].map((noise) =>
      Object.freeze(
        {
          name: `high-d-${coefficients === "+1" ? "medium" : "hard"}-s${noise}`,
          ...highD,
          active: Object.freeze({ probability: 0.047 }),
          coefficients,
          noise,
          referenceTopkMatched: [0.91, 0.98],
        } as const,
      )
    )
  ),
]);
