/**
 * Adapt a TensorFlow.js model + {@link Adam} to the training loop: checkpoints hold every
 * variable, both Adam moments and the step count, plus any extra model state (e.g. SAE
 * dead-latent counters), so a resumed run continues bit for bit on the same backend.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Adam } from "./adam.ts";
import type { NamedTensor } from "./safetensors.ts";
import type { Trainable } from "./train_loop.ts";

/** What a model provides to be trained. */
export interface TfModelParts<B> {
  variables: tf.Variable[];
  adam: Adam;
  /** One step at the current `adam.options.lr`; randomness from `seed` only. */
  step(batch: B, seed: number): number;
  validate(): number | Promise<number>;
  /** Non-variable state to checkpoint (optional). */
  extraState?: {
    save(): Record<string, NamedTensor>;
    load(tensors: Record<string, NamedTensor>): void;
  };
}

/**
 * Build the loop adapter.
 *
 * @param parts Variables, optimiser, step and validation.
 * @param seed The run's seed; step randomness is derived from (seed, step).
 * @returns A {@link Trainable}.
 */
export function tfTrainable<B>(parts: TfModelParts<B>, seed: number): Trainable<B> {
  return {
    step(batch, lr, step) {
      parts.adam.options.lr = lr;
      return parts.step(batch, stepSeed(seed, step));
    },
    validate: () => parts.validate(),
    async saveTensors() {
      const out: Record<string, NamedTensor> = {};
      for (const v of parts.variables) {
        out[`param.${v.name}`] = {
          dtype: "F32",
          shape: v.shape,
          data: new Float32Array(await v.data()),
        };
      }
      const state = await parts.adam.getState();
      for (const [name, m] of Object.entries(state.m)) {
        out[`adam.m.${name}`] = { dtype: "F32", shape: [m.length], data: m };
        out[`adam.v.${name}`] = { dtype: "F32", shape: [m.length], data: state.v[name] };
      }
      out["adam.step"] = { dtype: "F64", shape: [1], data: new Float64Array([state.step]) };
      for (const [k, t] of Object.entries(parts.extraState?.save() ?? {})) out[`extra.${k}`] = t;
      return out;
    },
    loadTensors(tensors) {
      tf.tidy(() => {
        for (const v of parts.variables) {
          const t = tensors[`param.${v.name}`];
          if (!t) throw new Error(`Checkpoint lacks variable "${v.name}"`);
          v.assign(tf.tensor(t.data as Float32Array, v.shape));
        }
      });
      const m: Record<string, Float32Array> = {};
      const v: Record<string, Float32Array> = {};
      for (const variable of parts.variables) {
        m[variable.name] = tensors[`adam.m.${variable.name}`].data as Float32Array;
        v[variable.name] = tensors[`adam.v.${variable.name}`].data as Float32Array;
      }
      parts.adam.setState({ step: tensors["adam.step"].data[0], m, v });
      const extra = Object.fromEntries(
        Object.entries(tensors).filter(([k]) => k.startsWith("extra.")).map((
          [k, t],
        ) => [k.slice(6), t]),
      );
      parts.extraState?.load(extra);
    },
  };
}

/** A 31-bit seed for one step of one run. */
export function stepSeed(seed: number, step: number): number {
  let h = Math.imul(seed + 0x632be59b, 0x9e3779b1) ^ Math.imul(step + 1, 0x85ebca77);
  h ^= h >>> 15;
  return (h >>> 0) & 0x7fffffff;
}
