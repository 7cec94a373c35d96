/**
 * The `tensorflow` backend: `@tensorflow/tfjs-node-gpu` (libtensorflow with CUDA), imported
 * only when selected. It is deliberately not a dependency of this project: its install script
 * downloads libtensorflow from Google's storage, which our machines and CI cannot reach, so this
 * path has never been run here.
 * @module
 */
import { UserError } from "../user_error.ts";

/** The package version matching our @tensorflow/tfjs. */
export const TFJS_NODE_GPU = "npm:@tensorflow/tfjs-node-gpu@4.22.0";

/**
 * Imports tfjs-node-gpu, which registers the "tensorflow" backend.
 *
 * @param specifier What to import (the pinned npm package by default).
 * @throws {UserError} When it cannot be imported, saying how to install it.
 */
export async function registerTensorflowBackend(specifier = TFJS_NODE_GPU): Promise<void> {
  try {
    await import(specifier);
  } catch (e) {
    const why = (e instanceof Error ? e.message : String(e)).split("\n")[0];
    throw new UserError(
      `Cannot load ${specifier} for [train].backend = "tensorflow": ${why}. It is not installed ` +
        `with this project because its install script downloads libtensorflow (CUDA build) at ` +
        `install time. On a machine with network access, CUDA and cuDNN, run "deno add ` +
        `${TFJS_NODE_GPU}" and "deno install --allow-scripts=npm:@tensorflow/tfjs-node-gpu", ` +
        `and grant --allow-ffi --allow-env --allow-read (untested here). Otherwise choose ` +
        `[train].backend = "webgpu", "blas" or "wasm"`,
    );
  }
}
