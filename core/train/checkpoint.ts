/**
 * Checkpoints: tensors (weights and optimiser moments) as safetensors, and a JSON record of
 * everything else a resumed run needs (step, epoch, RNG state, best metric, resolved config).
 *
 * A checkpoint is a pair `step-<n>.safetensors` + `step-<n>.json`, each written atomically; only
 * then is `latest.json` (the pointer a resume reads) replaced, atomically, and older pairs
 * removed. A kill at any moment leaves the previous checkpoint intact and pointed to.
 * @module
 */
import { atomicWrite } from "../atomic_write.ts";
import { decodeSafetensors, encodeSafetensors, type NamedTensor } from "./safetensors.ts";

/** A loaded checkpoint. */
export interface Checkpoint<S> {
  tensors: Record<string, NamedTensor>;
  state: S;
}

/**
 * Save a checkpoint under `dir` and point `latest.json` at it.
 *
 * @param dir Checkpoint folder (created if missing).
 * @param step Training step, names the files.
 * @param tensors Weights and optimiser moments.
 * @param state JSON-serialisable training state.
 */
export async function saveCheckpoint<S>(
  dir: string,
  step: number,
  tensors: Record<string, NamedTensor>,
  state: S,
): Promise<void> {
  const name = `step-${String(step).padStart(9, "0")}`;
  await atomicWrite(`${dir}/${name}.safetensors`, encodeSafetensors(tensors));
  await atomicWrite(`${dir}/${name}.json`, JSON.stringify(state, null, 1));
  await atomicWrite(`${dir}/latest.json`, JSON.stringify({ name }));
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name.startsWith("step-") && !entry.name.startsWith(`${name}.`)) {
      await Deno.remove(`${dir}/${entry.name}`).catch(() => {});
    }
  }
}

/**
 * Load the checkpoint `latest.json` points to.
 *
 * @param dir Checkpoint folder.
 * @returns The checkpoint, or null when the folder has none.
 */
export async function loadCheckpoint<S>(dir: string): Promise<Checkpoint<S> | null> {
  const pointer = await Deno.readTextFile(`${dir}/latest.json`).catch(() => null);
  if (pointer === null) return null;
  const { name } = JSON.parse(pointer) as { name: string };
  const bytes = await Deno.readFile(`${dir}/${name}.safetensors`);
  const state = JSON.parse(await Deno.readTextFile(`${dir}/${name}.json`)) as S;
  return { tensors: decodeSafetensors(bytes).tensors, state };
}
