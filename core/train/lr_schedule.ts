/**
 * Learning-rate schedule: linear warm-up, then cosine decay to a floor.
 * @module
 */

/** Schedule settings. */
export interface LrSchedule {
  /** Peak learning rate. */
  lr: number;
  /** Steps of linear warm-up from lr/warmup to lr. */
  warmupSteps: number;
  /** Total training steps; decay ends here. */
  totalSteps: number;
  /** Final learning rate as a fraction of lr. */
  minLrFraction: number;
}

/**
 * Learning rate at a step (0-based).
 *
 * 1. warm-up: lr·(step+1)/warmup while step < warmup;
 * 2. progress p = (step − warmup)/(total − warmup), clamped to [0, 1];
 * 3. cosine: floor + (lr − floor)·(1 + cos(πp))/2 with floor = lr·minLrFraction.
 *
 * @example
 * ```ts
 * import { strictEqual } from "node:assert";
 * const s = { lr: 1, warmupSteps: 10, totalSteps: 110, minLrFraction: 0 };
 * strictEqual(learningRate(s, 4), 0.5);
 * strictEqual(learningRate(s, 10), 1);
 * strictEqual(learningRate(s, 60), 0.5);
 * ```
 */
export function learningRate(schedule: LrSchedule, step: number): number {
  const { lr, warmupSteps, totalSteps, minLrFraction } = schedule;
  if (step < warmupSteps) return lr * (step + 1) / warmupSteps;
  const span = Math.max(1, totalSteps - warmupSteps);
  const p = Math.min(1, Math.max(0, (step - warmupSteps) / span));
  const floor = lr * minLrFraction;
  return floor + (lr - floor) * (1 + Math.cos(Math.PI * p)) / 2;
}
