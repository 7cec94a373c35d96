/**
 * h5wasm behind two safe doors: opening checks the file first (h5wasm gives a useless
 * "name not defined" on bad files), and reads are bounds-checked (h5wasm's `slice` is not).
 * @module
 */
import h5wasm from "h5wasm/node";
import { UserError } from "./user_error.ts";

/** The h5wasm `File` class. */
export type H5File = InstanceType<typeof h5wasm.File>;
/** The h5wasm `Dataset` class. */
export type H5Dataset = InstanceType<typeof h5wasm.Dataset>;

const SIGNATURE = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a];

/**
 * Open an HDF5 file for reading after checking it is a whole HDF5 file.
 *
 * @param path File path.
 * @param hint What to do when it is missing, appended to the error (e.g. which task makes it).
 * @returns The open file; close it when done.
 * @throws {UserError} When the file is missing, not HDF5, or shorter than its superblock says.
 */
export async function openH5(path: string, hint = ""): Promise<H5File> {
  await h5wasm.ready;
  let head: Uint8Array;
  let size: number;
  try {
    size = (await Deno.stat(path)).size;
    using file = await Deno.open(path, { read: true });
    head = new Uint8Array(64);
    await file.read(head);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new UserError(
        `Cannot open "${path}": it does not exist${hint ? `; ${hint}` : ""}`,
      );
    }
    throw new UserError(`Cannot open "${path}": ${(e as Error).message}`);
  }
  if (size < 48 || SIGNATURE.some((b, i) => head[i] !== b)) {
    throw new UserError(
      `Cannot open "${path}": it is not an HDF5 file (no HDF5 signature)`,
    );
  }
  const eof = superblockEof(head);
  if (eof !== null && eof > size) {
    throw new UserError(
      `Cannot open "${path}": it is truncated (its header says ${eof} bytes, the file has ${size}); delete it and run the stage that makes it again`,
    );
  }
  const file = new h5wasm.File(path, "r");
  if (file.file_id < 0n) {
    throw new UserError(
      `Cannot open "${path}": HDF5 could not read it (corrupt file)`,
    );
  }
  return file;
}

/** Create (truncate) an HDF5 file for writing. */
export async function createH5(path: string): Promise<H5File> {
  await h5wasm.ready;
  const file = new h5wasm.File(path, "w");
  if (file.file_id < 0n) {
    throw new UserError(`Cannot create HDF5 file "${path}"`);
  }
  return file;
}

/**
 * Get a dataset, or fail naming the file and what is missing.
 *
 * @param file An open file.
 * @param name Dataset path inside the file.
 */
export function dataset(file: H5File, name: string): H5Dataset {
  const entity = file.get(name);
  if (!(entity instanceof h5wasm.Dataset)) {
    throw new UserError(
      `Cannot read "${file.filename}": it has no dataset "${name}"`,
    );
  }
  return entity;
}

/**
 * Read rows [start, end) of a dataset's first axis, with the bounds check h5wasm lacks.
 *
 * @param ds The dataset.
 * @param start First row.
 * @param end One past the last row.
 * @returns The rows, flattened row-major, as the dataset's typed array.
 */
export function readRows<T = Float32Array | Int32Array>(
  ds: H5Dataset,
  start: number,
  end: number,
): T {
  const rows = ds.shape?.[0] ?? 0;
  if (
    !Number.isInteger(start) || !Number.isInteger(end) || start < 0 ||
    end < start || end > rows
  ) {
    throw new RangeError(
      `Cannot read rows [${start}, ${end}) of "${ds.path}": it has ${rows} rows`,
    );
  }
  return ds.slice([[start, end]]) as T;
}

function superblockEof(head: Uint8Array): number | null {
  const view = new DataView(head.buffer);
  const version = head[8];
  // Superblock v2/v3: signature(8) version(1) sizes(2) flags(1) base(8) ext(8) eof(8).
  // v0/v1 put the end-of-file address after the free-space address; offsets are 8 bytes here.
  const at = version >= 2 ? 28 : version === 0 ? 40 : version === 1 ? 44 : -1;
  if (at < 0 || head[version >= 2 ? 9 : 13] !== 8) return null;
  return Number(view.getBigUint64(at, true));
}
