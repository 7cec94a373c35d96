/**
 * Intervenability (SPEC section 6): edit one latent (ablate, scale or clamp) in a head
 * configuration while generating and measure what changes — the KL of the next-token distribution
 * along the unedited trajectory (teacher-forced: the backbone's hidden states do not depend on the
 * head, so both distributions are read at the same positions), the rise in probability and in
 * generated frequency of the latent's output tokens, and the judge-perplexity cost. Each latent
 * is paired with a seeded random other latent at the same dose: the control.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Backbone } from "../backbone/load_backbone.ts";
import type { Row } from "../core/arrow_table.ts";
import type { Rng } from "../core/rng.ts";
import type { HeadConfiguration } from "../stages/_trained_models.ts";
import type { LatentEdit } from "../stages/_latent_models.ts";
import { generate, type GenerateOptions, type Generation } from "./kv_generator.ts";

/** A head configuration that accepts latent edits. */
export type EditableHead = Pick<HeadConfiguration, "logits">;

/** One dose: ablate (dose 0), scale by `dose`, or clamp to `dose` × the latent's typical max. */
export interface Dose {
  mode: "ablate" | "scale" | "clamp";
  dose: number;
}

/** The unedited generations and the hidden state behind every next-token choice. */
export interface Trajectory {
  generations: Generation[];
  /** [P, d]: one row per choice (each generated token, and the EOS draw when it stopped). */
  hidden: Float32Array;
  d: number;
  /** Logits of the unedited head at every row of `hidden`, [P, vocab]. */
  logits: Float32Array;
  vocab: number;
}

/** What one edit changed, teacher-forced on a trajectory and generated afresh. */
export interface EditEffect {
  /** Mean over positions of KL(p_edited ‖ p_base), nats. */
  kl: number;
  /** Mean probability mass on the tokens, unedited and edited. */
  probBase: number;
  probEdited: number;
  /** Share of generated tokens that are among the tokens, unedited and edited. */
  freqBase: number;
  freqEdited: number;
  /** The edited generations (same sampling seeds as the trajectory). */
  generations: Generation[];
}

/**
 * Log-softmax of one row in float64.
 *
 * @param row Logits.
 * @returns log p.
 */
export function logSoftmax(row: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(row, (v) => v - lse);
}

/**
 * KL(softmax(p) ‖ softmax(q)) in nats; exactly 0 when the rows are equal.
 *
 * @param p Logits of the first distribution (the edited one).
 * @param q Logits of the reference (the unedited one).
 * @returns The divergence.
 * @example Two tokens: p = (1/2, 1/2), q = (1/4, 3/4)
 * ```ts
 * import { ok } from "node:assert";
 * const kl = klDivergence([0, 0], [0, Math.log(3)]);
 * ok(Math.abs(kl - (0.5 * Math.log(2) + 0.5 * Math.log(2 / 3))) < 1e-12);
 * ```
 */
export function klDivergence(p: ArrayLike<number>, q: ArrayLike<number>): number {
  if (p.length !== q.length) {
    throw new RangeError(`Cannot compare distributions over ${p.length} and ${q.length} tokens`);
  }
  const [lp, lq] = [logSoftmax(p), logSoftmax(q)];
  let kl = 0;
  for (let i = 0; i < lp.length; i++) {
    if (lp[i] !== lq[i]) kl += Math.exp(lp[i]) * (lp[i] - lq[i]);
  }
  return kl;
}

/**
 * Probability mass softmax(logits) puts on some tokens.
 *
 * @param logits One row of logits.
 * @param tokens Token ids.
 * @returns The mass in [0, 1].
 */
export function tokenMass(logits: ArrayLike<number>, tokens: number[]): number {
  const lp = logSoftmax(logits);
  return tokens.reduce((a, t) => a + Math.exp(lp[t]), 0);
}

/**
 * The n largest entries' indices, largest first (ties by index).
 *
 * @param values One value per token.
 * @param n How many.
 * @returns Token ids.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * deepStrictEqual(topTokens([0.1, 3, -1, 3, 2], 3), [1, 3, 4]);
 * ```
 */
export function topTokens(values: ArrayLike<number>, n: number): number[] {
  const ids = Array.from({ length: values.length }, (_, i) => i);
  ids.sort((a, b) => values[b] - values[a] || a - b);
  return ids.slice(0, n);
}

/**
 * A random latent other than `latent`, preferring live ones (seeded).
 *
 * @param latent The edited latent.
 * @param live One flag per latent: does it ever fire.
 * @param rng The draw.
 * @returns The control latent.
 * @throws {RangeError} When there is no other latent.
 */
export function controlLatent(latent: number, live: boolean[], rng: Rng): number {
  const others = live.map((_, j) => j).filter((j) => j !== latent);
  if (others.length === 0) throw new RangeError("Cannot pick a control: the model has one latent");
  const alive = others.filter((j) => live[j]);
  const pool = alive.length > 0 ? alive : others;
  return pool[rng.int(pool.length)];
}

/**
 * The doses of a dose–response sweep, ablation first.
 *
 * @param o Whether to ablate, the scale factors and the clamp multiples.
 * @returns The doses.
 */
export function doseSchedule(o: { ablate: boolean; scales: number[]; clamps: number[] }): Dose[] {
  return [
    ...(o.ablate ? [{ mode: "ablate" as const, dose: 0 }] : []),
    ...o.scales.map((dose) => ({ mode: "scale" as const, dose })),
    ...o.clamps.map((dose) => ({ mode: "clamp" as const, dose })),
  ];
}

/**
 * The edit a dose makes on a latent.
 *
 * @param latent The latent.
 * @param dose The dose.
 * @param typicalMax The latent's typical max activation (clamp doses are multiples of it).
 * @param keepError Keep the reconstruction error (recon configurations).
 * @returns The edit.
 */
export function doseEdit(
  latent: number,
  dose: Dose,
  typicalMax: number,
  keepError: boolean,
): LatentEdit {
  const value = dose.mode === "clamp" ? dose.dose * typicalMax : dose.dose;
  return { latent, mode: dose.mode, value, keepError };
}

/**
 * Logits of many hidden states through a head, in chunks.
 *
 * @param head The head configuration.
 * @param hidden [P, d] hidden states.
 * @param d Hidden width.
 * @param edit An optional latent edit.
 * @returns [P, vocab] logits.
 */
export function headLogitRows(
  head: EditableHead,
  hidden: Float32Array,
  d: number,
  edit?: LatentEdit,
): Float32Array {
  const rows = hidden.length / d;
  const chunks: Float32Array[] = [];
  for (let s = 0; s < rows; s += 256) {
    const e = Math.min(rows, s + 256);
    chunks.push(
      tf.tidy(() => {
        const h = tf.tensor2d(hidden.subarray(s * d, e * d), [e - s, d]);
        return head.logits(h, edit).dataSync() as Float32Array;
      }).slice(),
    );
  }
  const out = new Float32Array(chunks.reduce((a, c) => a + c.length, 0));
  let at = 0;
  for (const c of chunks) (out.set(c, at), at += c.length);
  return out;
}

/**
 * Generate unedited texts and keep the hidden state behind every choice (recorded from the
 * head's inputs: rows leave the batch in order as they finish, so a row took
 * `ids.length + (stoppedAtEos ? 1 : 0)` choices).
 *
 * @param backbone The backbone.
 * @param head The head configuration.
 * @param o Generation options (no edit).
 * @returns The trajectory.
 */
export async function baseTrajectory(
  backbone: Backbone,
  head: EditableHead,
  o: GenerateOptions,
): Promise<Trajectory> {
  const d = backbone.d;
  const calls: Float32Array[] = [];
  const recorder: EditableHead = {
    logits: (h, edit) => (calls.push((h.dataSync() as Float32Array).slice()), head.logits(h, edit)),
  };
  const generations = await generate(backbone, recorder, { ...o, edit: undefined });
  // Regroup the recorded [live, d] blocks by sample, position by position.
  const perSample: Float32Array[][] = generations.map(() => []);
  let call = 0;
  for (let start = 0; start < generations.length; start += o.batchSize) {
    const rows = generations.slice(start, start + o.batchSize).map((g, i) => ({
      sample: start + i,
      steps: g.ids.length + (g.stoppedAtEos ? 1 : 0),
    }));
    for (let t = 0; rows.some((r) => r.steps > t); t++) {
      const live = rows.filter((r) => r.steps > t);
      const block = calls[call++];
      if (!block || block.length !== live.length * d) {
        throw new Error(`Cannot align the recorded hidden states at step ${t}: ${block?.length}`);
      }
      live.forEach((r, i) => perSample[r.sample].push(block.subarray(i * d, (i + 1) * d)));
    }
  }
  const flat = perSample.flat();
  const hidden = new Float32Array(flat.length * d);
  flat.forEach((h, i) => hidden.set(h, i * d));
  const logits = headLogitRows(head, hidden, d);
  return { generations, hidden, d, logits, vocab: flat.length ? logits.length / flat.length : 0 };
}

/**
 * A latent's output tokens through a configuration: the n tokens whose logits rise most when it is
 * clamped to `unit` instead of 0, averaged over (at most 256) hidden states of a trajectory.
 *
 * @param head The head configuration.
 * @param trajectory Where to read hidden states.
 * @param latent The latent.
 * @param unit The clamp value (its typical max activation).
 * @param n How many tokens.
 * @returns Token ids, largest rise first.
 */
export function latentTokens(
  head: EditableHead,
  trajectory: Trajectory,
  latent: number,
  unit: number,
  n: number,
): number[] {
  const { d } = trajectory;
  const rows = Math.min(256, trajectory.hidden.length / d);
  const h = trajectory.hidden.subarray(0, rows * d);
  const edit = (value: number): LatentEdit => ({ latent, mode: "clamp", value, keepError: false });
  const on = headLogitRows(head, h, d, edit(unit > 0 ? unit : 1));
  const off = headLogitRows(head, h, d, edit(0));
  const vocab = on.length / Math.max(rows, 1);
  const rise = new Float64Array(vocab);
  for (let i = 0; i < on.length; i++) rise[i % vocab] += on[i] - off[i];
  return topTokens(rise, n);
}

/**
 * Measure one edit against the trajectory: teacher-forced KL and token mass, then generation with
 * the edit (same seeds) for the tokens' frequency.
 *
 * @param backbone The backbone.
 * @param head The head configuration.
 * @param trajectory The unedited trajectory.
 * @param edit The edit.
 * @param tokens The tokens whose probability and frequency are tracked.
 * @param o The options the trajectory was generated with.
 * @returns The effect.
 */
export async function measureEdit(
  backbone: Backbone,
  head: EditableHead,
  trajectory: Trajectory,
  edit: LatentEdit,
  tokens: number[],
  o: GenerateOptions,
): Promise<EditEffect> {
  const teacher = teacherForcedEffect(head, trajectory, edit, tokens);
  const generations = await generate(backbone, head, { ...o, edit });
  return {
    ...teacher,
    freqBase: tokenFrequency(trajectory.generations, tokens),
    freqEdited: tokenFrequency(generations, tokens),
    generations,
  };
}

/**
 * The teacher-forced part of {@link measureEdit}: no generation, so it runs on hand-made hidden
 * states too.
 *
 * @param head The head configuration.
 * @param trajectory Hidden states and their unedited logits.
 * @param edit The edit.
 * @param tokens Tracked tokens.
 * @returns Mean KL(p_edited ‖ p_base) and mean mass on the tokens, unedited and edited.
 */
export function teacherForcedEffect(
  head: EditableHead,
  trajectory: Pick<Trajectory, "hidden" | "d" | "logits" | "vocab">,
  edit: LatentEdit,
  tokens: number[],
): { kl: number; probBase: number; probEdited: number } {
  const { hidden, d, logits, vocab } = trajectory;
  const edited = headLogitRows(head, hidden, d, edit);
  const rows = hidden.length / d;
  let [kl, probBase, probEdited] = [0, 0, 0];
  for (let r = 0; r < rows; r++) {
    const [p, q] = [
      edited.subarray(r * vocab, (r + 1) * vocab),
      logits.subarray(r * vocab, (r + 1) * vocab),
    ];
    kl += klDivergence(p, q);
    probBase += tokenMass(q, tokens);
    probEdited += tokenMass(p, tokens);
  }
  const n = Math.max(rows, 1);
  return { kl: kl / n, probBase: probBase / n, probEdited: probEdited / n };
}

/**
 * Share of generated tokens that are among some tokens.
 *
 * @param generations Texts.
 * @param tokens Token ids.
 * @returns The share (0 when nothing was generated).
 */
export function tokenFrequency(generations: Generation[], tokens: number[]): number {
  const set = new Set(tokens);
  let [hit, total] = [0, 0];
  for (const g of generations) for (const t of g.ids) (total++, hit += set.has(t) ? 1 : 0);
  return total > 0 ? hit / total : 0;
}

/**
 * One dose–response row.
 *
 * @param key Who and what was edited.
 * @param effect The measured effect.
 * @param ppl Mean judge perplexity of the unedited and edited texts.
 * @returns The row (`*_rise` = edited − unedited).
 */
export function doseResponseRow(
  key: {
    configuration: string;
    seed: number;
    latent: number;
    concept: string;
    role: "target" | "control";
    editedLatent: number;
    dose: Dose;
    value: number;
    keepError: boolean;
  },
  effect: Omit<EditEffect, "generations">,
  ppl: { base: number; edited: number },
): Row {
  return {
    configuration: key.configuration,
    seed: key.seed,
    latent: key.latent,
    concept: key.concept,
    role: key.role,
    edited_latent: key.editedLatent,
    mode: key.dose.mode,
    dose: key.dose.dose,
    value: key.value,
    keep_error: key.keepError,
    kl: effect.kl,
    prob_base: effect.probBase,
    prob_edited: effect.probEdited,
    prob_rise: effect.probEdited - effect.probBase,
    freq_base: effect.freqBase,
    freq_edited: effect.freqEdited,
    freq_rise: effect.freqEdited - effect.freqBase,
    ppl_base: ppl.base,
    ppl_edited: ppl.edited,
    ppl_ratio: ppl.edited / ppl.base,
  };
}
