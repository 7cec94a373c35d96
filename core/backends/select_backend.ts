/**
 * Chooses, registers and activates the TensorFlow.js backend named by `[train].backend`.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Config } from "../config_schema.ts";
import { UserError } from "../user_error.ts";
import { registerBlasBackend } from "./blas_backend.ts";
import { registerWasmBackend } from "./wasm_backend.ts";
import { probeGpu, registerWebGpuBackend } from "./webgpu_backend.ts";
import { registerTensorflowBackend } from "./tensorflow_backend.ts";

/** The active backend and why it was chosen. */
export interface BackendChoice {
  /** The tfjs backend name now active. */
  name: string;
  /** Why: the config value, the library or adapter found, and what was passed over. */
  reason: string;
}

type TrainConfig = Config["train"];

async function webgpu(train: TrainConfig): Promise<BackendChoice> {
  const gpu = await probeGpu();
  if (!gpu.found) {
    throw new UserError(
      `Cannot use [train].backend = "webgpu": navigator.gpu offers no adapter; install a ` +
        `Vulkan driver (Debian/Ubuntu: "apt-get install mesa-vulkan-drivers" for a software one) ` +
        `or choose "blas" or "wasm"`,
    );
  }
  if (gpu.fallback && !train.allow_software_gpu) {
    throw new UserError(
      `Cannot use [train].backend = "webgpu": the only adapter is a software one ` +
        `("${gpu.description}"); set [train].allow_software_gpu = true to use it anyway, or ` +
        `choose "blas" or "wasm"`,
    );
  }
  await registerWebGpuBackend();
  const kind = gpu.fallback ? "software adapter, allowed by [train].allow_software_gpu" : "GPU";
  return { name: "webgpu", reason: `${kind} "${gpu.description}"` };
}

function blas(train: TrainConfig): BackendChoice {
  const lib = registerBlasBackend(train.blas_library);
  return { name: "blas", reason: `${lib.config} at ${lib.path}, ${lib.threads} threads` };
}

function wasm(): BackendChoice {
  registerWasmBackend();
  return { name: "wasm", reason: "portable WebAssembly, single-threaded in Deno" };
}

/** blas when OpenBLAS loads, else wasm; `why` says why no GPU was used. */
function cpuFallback(train: TrainConfig, why: string): BackendChoice {
  try {
    const choice = blas(train);
    return { name: "blas", reason: `auto: ${why}; OpenBLAS found: ${choice.reason}` };
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    return { name: "wasm", reason: `auto: ${why}; OpenBLAS not found; ${wasm().reason}` };
  }
}

async function auto(train: TrainConfig): Promise<BackendChoice> {
  const gpu = await probeGpu();
  if (gpu.found && !gpu.fallback) {
    await registerWebGpuBackend();
    return { name: "webgpu", reason: `auto: GPU "${gpu.description}"` };
  }
  return cpuFallback(
    train,
    gpu.found ? `only a software adapter ("${gpu.description}")` : "no GPU adapter",
  );
}

/** `tf.setBackend(name)`, checked both ways; throws a UserError saying what happened. */
async function activate(choice: BackendChoice): Promise<void> {
  let ok = false;
  let why = "";
  try {
    ok = await tf.setBackend(choice.name);
  } catch (e) {
    why = `: ${e instanceof Error ? e.message : String(e)}`;
  }
  if (!ok || tf.getBackend() !== choice.name) {
    throw new UserError(
      `Cannot start the "${choice.name}" backend (${choice.reason})${why}; tf.setBackend ` +
        `returned ${ok} and the active backend is "${tf.getBackend()}"`,
    );
  }
}

/**
 * Registers and activates the backend `[train].backend` names, printing the choice and why.
 * "auto": a real GPU adapter → webgpu (if it starts); else OpenBLAS found → blas; else wasm.
 * Activation is verified: `tf.setBackend` can resolve false while `tf.getBackend()` still names
 * the backend.
 *
 * @param train The resolved `[train]` section.
 * @param log Where the one-line choice is printed.
 * @returns The active backend's name and the reason.
 * @throws {UserError} When the named backend is unavailable or fails to start.
 */
export async function selectBackend(
  train: TrainConfig,
  log: (line: string) => void = console.log,
): Promise<BackendChoice> {
  let choice: BackendChoice;
  switch (train.backend) {
    case "auto":
      choice = await auto(train);
      break;
    case "blas":
      choice = blas(train);
      break;
    case "wasm":
      choice = wasm();
      break;
    case "webgpu":
      choice = await webgpu(train);
      break;
    case "tensorflow":
      await registerTensorflowBackend();
      choice = { name: "tensorflow", reason: "tfjs-node-gpu (libtensorflow)" };
      break;
  }
  try {
    await activate(choice);
  } catch (e) {
    // auto never stops at a GPU that would not start: it falls back to the CPU backends.
    if (train.backend !== "auto" || choice.name !== "webgpu" || !(e instanceof UserError)) throw e;
    choice = cpuFallback(train, `webgpu failed to start (${e.message})`);
    await activate(choice);
  }
  log(`backend: ${choice.name} (${choice.reason})`);
  return choice;
}
