/**
 * OpenBLAS through Deno FFI: the few CBLAS routines the `blas` backend needs. Needs
 * `--allow-ffi`. Calls are synchronous: a big `sgemm` blocks the JS thread while OpenBLAS's own
 * threads do the work.
 * @module
 */
import { UserError } from "../user_error.ts";

/** CBLAS enum values (row-major only: tfjs tensors are row-major). */
export const ROW_MAJOR = 101;
/** `CblasNoTrans`. */
export const NO_TRANS = 111;
/** `CblasTrans`. */
export const TRANS = 112;

const SYMBOLS = {
  // C = alpha·op(A)·op(B) + beta·C
  cblas_sgemm: {
    parameters: [
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "f32",
      "buffer",
      "i32",
      "buffer",
      "i32",
      "f32",
      "buffer",
      "i32",
    ],
    result: "void",
  },
  // y = alpha·op(A)·x + beta·y
  cblas_sgemv: {
    parameters: [
      "i32",
      "i32",
      "i32",
      "i32",
      "f32",
      "buffer",
      "i32",
      "buffer",
      "i32",
      "f32",
      "buffer",
      "i32",
    ],
    result: "void",
  },
  // B = alpha·op(A), out of place (an OpenBLAS extension)
  cblas_somatcopy: {
    parameters: ["i32", "i32", "i32", "i32", "f32", "buffer", "i32", "buffer", "i32"],
    result: "void",
  },
  openblas_get_num_threads: { parameters: [], result: "i32" },
  openblas_get_config: { parameters: [], result: "pointer" },
} as const;

/** The loaded library. */
export type OpenBlasLibrary = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** A loaded OpenBLAS: its symbols, where it was found and how it was built. */
export interface OpenBlas {
  /** The CBLAS symbols. */
  lib: OpenBlasLibrary;
  /** The path that loaded. */
  path: string;
  /** `openblas_get_config()`, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64". */
  config: string;
  /** Threads OpenBLAS will use. */
  threads: number;
}

/** Where Debian/Ubuntu, Fedora, Arch, Homebrew and source installs put libopenblas. */
export const OPENBLAS_SEARCH_PATHS: readonly string[] = Object.freeze([
  "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
  "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
  "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
  "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
  "/usr/lib64/libopenblasp.so.0",
  "/usr/lib64/libopenblas.so.0",
  "/usr/lib/libopenblas.so.0",
  "/usr/local/lib/libopenblas.so.0",
  "/usr/local/lib/libopenblas.so",
  "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
  "/usr/local/opt/openblas/lib/libopenblas.dylib",
]);

let loaded: OpenBlas | undefined;

/**
 * OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after each call, stealing the core our
 * elementwise helper threads need right after a matmul; 2^4 makes them sleep at once (the SAE
 * step went from ~460 to ~390 ms at batch 1024). Set only when the user has not, and only if
 * the process may write its environment (OpenBLAS reads it when it loads).
 */
function shortenThreadSpin(): void {
  try {
    if (Deno.env.get("OPENBLAS_THREAD_TIMEOUT") === undefined) {
      Deno.env.set("OPENBLAS_THREAD_TIMEOUT", "4");
    }
  } catch {
    // No --allow-env: keep OpenBLAS's default.
  }
}

/**
 * Loads OpenBLAS once per process (later calls return the same library).
 *
 * @param path The library to load; "" searches {@linkcode OPENBLAS_SEARCH_PATHS}.
 * @returns The loaded library.
 * @throws {UserError} When no path loads; the message names every path tried and why.
 */
export function loadOpenBlas(path = ""): OpenBlas {
  if (loaded && (path === "" || path === loaded.path)) return loaded;
  const candidates = path === "" ? OPENBLAS_SEARCH_PATHS : [path];
  const failures: string[] = [];
  shortenThreadSpin();
  for (const candidate of candidates) {
    let dl: Deno.DynamicLibrary<typeof SYMBOLS>;
    try {
      dl = Deno.dlopen(candidate, SYMBOLS);
    } catch (e) {
      failures.push(`  ${candidate}: ${firstLine(e)}`);
      continue;
    }
    const lib = dl.symbols;
    const configPtr = lib.openblas_get_config();
    const config = configPtr ? new Deno.UnsafePointerView(configPtr).getCString() : "";
    loaded = { lib, path: candidate, config, threads: lib.openblas_get_num_threads() };
    return loaded;
  }
  const where = path === "" ? "in the usual paths" : `at [train].blas_library = "${path}"`;
  throw new UserError(
    `Cannot load OpenBLAS ${where}; tried:\n${failures.join("\n")}\n` +
      `Install it (Debian/Ubuntu: "apt-get install libopenblas0-pthread"; Fedora: ` +
      `"dnf install openblas-threads"; macOS: "brew install openblas"), set ` +
      `[train].blas_library to its path, or choose [train].backend = "wasm"`,
  );
}

/** Whether OpenBLAS loads from `path` ("" = search), without throwing. */
export function openBlasAvailable(path = ""): boolean {
  try {
    loadOpenBlas(path);
    return true;
  } catch {
    return false;
  }
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split("\n")[0];
}
