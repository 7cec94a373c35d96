import * as tf from "@tensorflow/tfjs";
import { deepStrictEqual, notDeepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { SaeSchema } from "../core/config_schema.ts";
import { Rng } from "../core/rng.ts";
import { Adam } from "../core/train/adam.ts";
import { hungarian } from "../eval/hungarian.ts";
import {
  atomRecovery,
  generateSyntheticDictionary,
  makeAtoms,
  SYNTHETIC_TIERS,
  type SyntheticSpec,
} from "../eval/synthetic_dictionary.ts";
import { Sae } from "../models/sae.ts";

await tf.setBackend("cpu");

/** Minimum total cost over all injective row→column maps (rows ≤ cols), by enumeration. */
function bruteForce(cost: Float64Array, rows: number, cols: number): number {
  let best = Infinity;
  const used = new Uint8Array(cols);
  const go = (i: number, sum: number) => {
    if (i === rows) {
      best = Math.min(best, sum);
      return;
    }
    for (let j = 0; j < cols; j++) {
      if (used[j]) continue;
      used[j] = 1;
      go(i + 1, sum + cost[i * cols + j]);
      used[j] = 0;
    }
  };
  go(0, 0);
  return best;
}

Deno.test("Hungarian assignment matches brute force on small square and rectangular matrices", () => {
  const rng = new Rng(3);
  for (let trial = 0; trial < 300; trial++) {
    const rows = 1 + rng.int(6), cols = 1 + rng.int(6);
    // Integer costs make ties common, which exercises the degenerate cases.
    const cost = new Float64Array(rows * cols).map(() => trial % 2 ? rng.int(5) : rng.normal());
    const assignment = hungarian(cost, rows, cols);
    strictEqual(assignment.length, rows);
    const assigned = Array.from(assignment).filter((c) => c >= 0);
    strictEqual(assigned.length, Math.min(rows, cols), "every row or every column assigned");
    strictEqual(new Set(assigned).size, assigned.length, "distinct columns");
    const total = Array.from(assignment).reduce(
      (s, c, i) => s + (c >= 0 ? cost[i * cols + c] : 0),
      0,
    );
    let best: number;
    if (rows <= cols) {
      best = bruteForce(cost, rows, cols);
    } else {
      const t = new Float64Array(rows * cols);
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) t[j * rows + i] = cost[i * cols + j];
      }
      best = bruteForce(t, cols, rows);
    }
    ok(Math.abs(total - best) < 1e-9, `trial ${trial}: ${total} vs optimum ${best}`);
  }
  throws(() => hungarian([1, 2, 3], 2, 2), /2×2 cost matrix/);
  throws(() => hungarian([1, NaN], 1, 2), /expected finite costs/);
});

const spec = (o: Partial<SyntheticSpec>): SyntheticSpec => ({
  samples: 2000,
  atoms: 12,
  dim: 8,
  active: { exactly: 2 },
  coefficients: "+1",
  noise: 0.05,
  seed: 1,
  ...o,
});

Deno.test("atoms are unit vectors: evenly spaced in 2-D, |cos| < cos(π/K) in high-D", () => {
  for (const [k, d] of [[6, 2], [64, 32], [20, 3]]) {
    const atoms = makeAtoms(k, d, new Rng(k));
    const bound = d === 2 ? Infinity : Math.cos(Math.PI / k);
    for (let a = 0; a < k; a++) {
      const row = atoms.subarray(a * d, (a + 1) * d);
      ok(Math.abs(Math.hypot(...row) - 1) < 1e-6, `atom ${a} has unit norm`);
      for (let b = 0; b < a; b++) {
        const dot = row.reduce((s, v, j) => s + v * atoms[b * d + j], 0);
        ok(Math.abs(dot) < bound, `|cos(${a}, ${b})| = ${Math.abs(dot)}`);
        if (d === 2 && b === a - 1) ok(Math.abs(dot - Math.cos(2 * Math.PI / k)) < 1e-6);
      }
    }
  }
  throws(
    () => makeAtoms(16, 3, new Rng(1), 1),
    /Cannot place atom \d+ of 16 in R\^3 .* after 1 tries/,
  );
});

Deno.test("samples activate exactly n atoms or each atom at rate p, split 80/20, seeded", () => {
  const exact = generateSyntheticDictionary(spec({ coefficients: "±1" }));
  strictEqual(exact.nTrain, 1600);
  strictEqual(exact.nTest, 400);
  strictEqual(exact.train.length, 1600 * 8);
  strictEqual(exact.test.length, 400 * 8);
  for (let s = 0; s < 2000; s++) {
    const code = exact.codes.subarray(s * 12, (s + 1) * 12).filter((c) => c !== 0);
    strictEqual(code.length, 2);
    ok(code.every((c) => c === 1 || c === -1));
  }
  const p = 0.2;
  const bern = generateSyntheticDictionary(
    spec({ active: { probability: p }, coefficients: "uniform" }),
  );
  const nonzero = bern.codes.filter((c) => c !== 0);
  ok(nonzero.every((c) => c >= 0.5 && c < 1.5), "coefficients in [0.5, 1.5)");
  // Redrawing empty samples conditions on ≥ 1 active: E[count] = Kp / (1 − (1 − p)^K).
  const expected = 12 * p / (1 - (1 - p) ** 12);
  const mean = nonzero.length / 2000;
  ok(Math.abs(mean - expected) < 0.1, `mean active ${mean} vs ${expected}`);
  for (let s = 0; s < 2000; s++) ok(bern.codes.subarray(s * 12, (s + 1) * 12).some((c) => c !== 0));
  // Noise-free samples are exactly Σ coef·atom.
  const clean = generateSyntheticDictionary(spec({ noise: 0, samples: 10 }));
  for (let j = 0; j < 8; j++) {
    let v = 0;
    for (let a = 0; a < 12; a++) v += clean.codes[a] * clean.atoms[a * 8 + j];
    ok(Math.abs(clean.train[j] - v) < 1e-6);
  }
  deepStrictEqual(generateSyntheticDictionary(spec({})), generateSyntheticDictionary(spec({})));
  notDeepStrictEqual(
    generateSyntheticDictionary(spec({})).train,
    generateSyntheticDictionary(spec({ seed: 2 })).train,
  );
});

Deno.test("recovery scores: perfect for the atoms themselves, sign and permutation aware", () => {
  const atoms = makeAtoms(5, 4, new Rng(2));
  const shuffled = new Float32Array(atoms.length);
  [3, 0, 4, 1, 2].forEach((a, i) =>
    shuffled.set(atoms.subarray(a * 4, a * 4 + 4).map((v) => 2 * v), i * 4)
  );
  const r = atomRecovery(shuffled, atoms, 4);
  strictEqual(r.matchedFraction, 1);
  ok(Math.abs(r.meanMatchedCosine - 1) < 1e-6);
  deepStrictEqual(Array.from(r.partner), [1, 3, 4, 0, 2]);
  const basis = new Float32Array(16).map((_, i) => i % 5 === 0 ? 1 : 0); // orthonormal atoms
  strictEqual(atomRecovery(basis.map((v) => -v), basis, 4).matchedFraction, 0, "sign matters");
  strictEqual(
    atomRecovery(atoms.slice(0, 8), atoms, 4).matchedFraction,
    2 / 5,
    "fewer latents than atoms",
  );
  strictEqual(r.threshold, 0.7);
  strictEqual(
    atomRecovery(makeAtoms(3, 2, new Rng(1)), makeAtoms(3, 2, new Rng(1)), 2).threshold,
    0.9,
  );
});

Deno.test("the SPEC's reference tiers are a frozen table", () => {
  strictEqual(SYNTHETIC_TIERS.length, 7);
  const easy = SYNTHETIC_TIERS[0];
  deepStrictEqual(
    [easy.samples, easy.atoms, easy.dim, easy.active, easy.coefficients, easy.noise],
    [20_000, 64, 32, { exactly: 1 }, "+1", 0.05],
  );
  ok(Object.isFrozen(SYNTHETIC_TIERS) && Object.isFrozen(easy) && Object.isFrozen(easy.active));
  deepStrictEqual(SYNTHETIC_TIERS.slice(1).map((t) => [t.coefficients, t.noise]), [
    ["+1", 0.05],
    ["+1", 0.1],
    ["+1", 0.2],
    ["uniform", 0.05],
    ["uniform", 0.1],
    ["uniform", 0.2],
  ]);
  ok(
    SYNTHETIC_TIERS.slice(1).every((t) =>
      "probability" in t.active && t.active.probability === 0.047
    ),
  );
});

// U(0.5, 1.5) coefficients: with +1 every sample of an atom is one point, so the decoder bias is a
// flat direction of the loss (any b reconstructs a_j with a row ∝ a_j − b) and drifts, tilting
// the learned rows away from the atoms; a spread of coefficients pins b at the origin. Twice as
// many latents as atoms, in R^32: in R^16 two atoms may lie at cos ≈ 0.76, and a k = 1 SAE can
// settle on one latent at their bisector (cos ≈ 0.94 to both), losing one of the two.
Deno.test("a TopK SAE (k = 1) recovers ≥ 0.9 of the atoms of a small high-D tier, every seed", () => {
  const d = 32, atoms = 16, batch = 64, lr = 1e-2;
  for (const seed of [0, 1, 2]) {
    const data = generateSyntheticDictionary(
      spec({ samples: 4000, atoms, dim: d, active: { exactly: 1 }, coefficients: "uniform", seed }),
    );
    const cfg = SaeSchema.parse({ expansion: 1, k: 1, k_aux: 16, dead_tokens: 1280, lr });
    const sae = new Sae(d, cfg, seed, data.train);
    const adam = new Adam(sae.variables(), { lr });
    const x = tf.tensor2d(data.train, [data.nTrain, d]);
    for (let epoch = 0; epoch < 15; epoch++) {
      for (let s = 0; s + batch <= data.nTrain; s += batch) {
        const b = tf.slice(x, [s, 0], [batch, d]);
        sae.trainStep(b, adam);
        b.dispose();
      }
    }
    const r = atomRecovery(sae.featureDirections(), data.atoms, d);
    ok(
      r.matchedFraction >= 0.9,
      `seed ${seed}: matched=${r.matchedFraction} mean cos=${r.meanMatchedCosine}`,
    );
    x.dispose();
    adam.dispose();
    sae.dispose();
  }
});
