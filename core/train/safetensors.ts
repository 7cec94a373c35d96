/**
 * The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian
 * header length, a JSON header {name: {dtype, shape, data_offsets}, __metadata__}, then the
 * raw little-endian tensor bytes. Read by PyTorch, SAELens and Neuronpedia tooling.
 * @module
 */

/** A tensor to save or a tensor loaded. */
export type NamedTensor =
  | { dtype: "F32"; shape: number[]; data: Float32Array }
  | { dtype: "F64"; shape: number[]; data: Float64Array }
  | { dtype: "I32"; shape: number[]; data: Int32Array };

const BYTES = { F32: 4, F64: 8, I32: 4 } as const;

/**
 * Serialise tensors (names sorted, data 8-byte aligned) with string metadata.
 *
 * @param tensors Tensors by name.
 * @param metadata Optional string-to-string metadata.
 * @returns The file bytes.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const bytes = encodeSafetensors({ w: { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) } });
 * deepStrictEqual(decodeSafetensors(bytes).tensors.w.data, new Float32Array([1, 2]));
 * ```
 */
export function encodeSafetensors(
  tensors: Record<string, NamedTensor>,
  metadata: Record<string, string> = {},
): Uint8Array {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) {
      throw new RangeError(
        `Cannot save tensor "${name}": shape [${t.shape}] needs ${count} values, got ${t.data.length}`,
      );
    }
    const size = t.data.length * BYTES[t.dtype];
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((8 + json.length) % 8)) % 8); // pad so data starts 8-byte aligned
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  for (const name of names) {
    const t = tensors[name];
    const [start] = (header[name] as { data_offsets: number[] }).data_offsets;
    out.set(
      new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
      8 + head.length + start,
    );
  }
  return out;
}

/**
 * Parse a safetensors file.
 *
 * @param bytes File contents.
 * @returns Tensors (copies, aligned) and metadata.
 * @throws {Error} On a malformed header or an unsupported dtype.
 */
export function decodeSafetensors(
  bytes: Uint8Array,
): { tensors: Record<string, NamedTensor>; metadata: Record<string, string> } {
  if (bytes.length < 8) throw new Error(`Not a safetensors file: only ${bytes.length} bytes`);
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  if (headerLength > bytes.length - 8) {
    throw new Error(`Not a safetensors file (or truncated): header length ${headerLength} > file`);
  }
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const base = 8 + headerLength;
  const tensors: Record<string, NamedTensor> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets: [start, end] } = entry as {
      dtype: string;
      shape: number[];
      data_offsets: [number, number];
    };
    if (!(dtype in BYTES)) throw new Error(`Unsupported dtype "${dtype}" of tensor "${name}"`);
    if (base + end > bytes.length) {
      throw new Error(`Tensor "${name}" runs past the end of the file`);
    }
    const raw = bytes.slice(base + start, base + end).buffer;
    const data = dtype === "F32"
      ? new Float32Array(raw)
      : dtype === "F64"
      ? new Float64Array(raw)
      : new Int32Array(raw);
    tensors[name] = { dtype, shape, data } as NamedTensor;
  }
  return { tensors, metadata: header.__metadata__ ?? {} };
}
