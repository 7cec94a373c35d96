/**
 * The training loop every model shares: schedule, NaN/Inf guard, periodic validation with
 * early stopping and a best-validation copy, atomic checkpoints and exact resume, progress.
 *
 * Exact resume: batches depend only on (seed, epoch, index) and the model's own randomness
 * only on (seed, step), so a run resumed from a checkpoint after kill -9 takes the same steps
 * as one that never stopped and ends with the same weights.
 * @module
 */
import { Progress } from "../progress.ts";
import { UserError } from "../user_error.ts";
import { loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import { learningRate, type LrSchedule } from "./lr_schedule.ts";
import type { NamedTensor } from "./safetensors.ts";

/** What the loop needs from a model under training. */
export interface Trainable<B> {
  /**
   * One optimisation step.
   * @returns The training loss (checked for NaN/Inf).
   */
  step(batch: B, lr: number, step: number): number;
  /** Validation metric (lower is better unless `maximize`). */
  validate(): number | Promise<number>;
  /** Weights and optimiser state, to checkpoint. */
  saveTensors(): Record<string, NamedTensor> | Promise<Record<string, NamedTensor>>;
  /** Restore what {@link saveTensors} returned. */
  loadTensors(tensors: Record<string, NamedTensor>): void;
}

/** Loop settings. */
export interface TrainLoopOptions {
  /** Folder for `checkpoints/` and `best/`. */
  dir: string;
  label: string;
  schedule: LrSchedule;
  /** Batches of one epoch, in order, for a given epoch number. */
  epochBatches: (epoch: number) => Iterable<{ n: number }>;
  /** Validate (and maybe save best) every N steps, and at the end. */
  validateEvery: number;
  /** Checkpoint every N steps (0: only at the end). */
  checkpointEvery: number;
  /** Stop after this many validations without improvement (0: never). */
  patience: number;
  maximize?: boolean;
  /** Continue from `dir/checkpoints` when present. */
  resume: boolean;
  /** Extra JSON saved with every checkpoint (e.g. the resolved config). */
  meta?: Record<string, unknown>;
  /** Called after each step (e.g. periodic resampling); must depend only on the step. */
  afterStep?: (step: number) => void | Promise<void>;
}

/** What happened. */
export interface TrainResult {
  steps: number;
  best: { value: number; step: number } | null;
  stoppedEarly: boolean;
  /** Loss per step and validation per validation step. */
  history: { losses: number[]; validations: Array<{ step: number; value: number }> };
}

interface LoopState {
  step: number;
  epoch: number;
  batch: number;
  best: { value: number; step: number } | null;
  sinceBest: number;
  history: TrainResult["history"];
  meta?: Record<string, unknown>;
}

/** Thrown when the loss becomes NaN or infinite; the last good checkpoint is kept. */
export class DivergedError extends UserError {
  override name = "DivergedError";
}

/**
 * Train until `schedule.totalSteps`, early stopping, or divergence.
 *
 * @param model The model under training.
 * @param options Loop settings.
 * @returns Steps taken, best validation, history.
 */
export async function trainLoop<B extends { n: number }>(
  model: Trainable<B>,
  options: TrainLoopOptions,
): Promise<TrainResult> {
  const ckptDir = `${options.dir}/checkpoints`;
  const better = (a: number, b: number) => options.maximize ? a > b : a < b;
  let s: LoopState = {
    step: 0,
    epoch: 0,
    batch: 0,
    best: null,
    sinceBest: 0,
    history: { losses: [], validations: [] },
    meta: options.meta,
  };
  if (options.resume) {
    const ckpt = await loadCheckpoint<LoopState>(ckptDir);
    if (ckpt) {
      model.loadTensors(ckpt.tensors);
      s = ckpt.state;
      console.error(`${options.label}: resumed at step ${s.step}`);
    }
  }
  const total = options.schedule.totalSteps;
  const progress = new Progress(options.label, total, "steps");
  progress.advance(s.step);
  const save = async () => saveCheckpoint(ckptDir, s.step, await model.saveTensors(), s);
  let stoppedEarly = false;
  outer: while (s.step < total) {
    let index = 0;
    for (const batch of options.epochBatches(s.epoch) as Iterable<B>) {
      if (index++ < s.batch) continue; // already taken before a resume
      // 1. one step, guarded against NaN/Inf
      const loss = model.step(batch, learningRate(options.schedule, s.step), s.step);
      if (!Number.isFinite(loss)) {
        throw new DivergedError(
          `${options.label}: the loss became ${loss} at step ${s.step}; kept the last good checkpoint in "${ckptDir}". Lower the learning rate or check the inputs for NaN`,
        );
      }
      s.history.losses.push(loss);
      s.step++;
      s.batch++;
      progress.advance(1);
      await options.afterStep?.(s.step);
      // 2. validation, best copy and early stopping
      if (s.step % options.validateEvery === 0 || s.step === total) {
        const value = await model.validate();
        s.history.validations.push({ step: s.step, value });
        if (s.best === null || better(value, s.best.value)) {
          s.best = { value, step: s.step };
          s.sinceBest = 0;
          await saveCheckpoint(`${options.dir}/best`, s.step, await model.saveTensors(), s);
        } else if (options.patience > 0 && ++s.sinceBest >= options.patience) {
          stoppedEarly = true;
        }
      }
      // 3. checkpoint
      if (stoppedEarly || s.step === total) break outer;
      if (options.checkpointEvery > 0 && s.step % options.checkpointEvery === 0) await save();
    }
    if (index === 0) throw new UserError(`${options.label}: there are no training batches`);
    s.epoch++;
    s.batch = 0;
  }
  await save();
  progress.finish();
  return { steps: s.step, best: s.best, stoppedEarly, history: s.history };
}
