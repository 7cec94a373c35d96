/**
 * The layout of embeddings.h5: per split, token-major datasets written in a stream.
 *
 * ```
 * /<split>/embeddings  float32 [T, d]  last-layer hidden states (the LM head's input)
 * /<split>/input_ids   int32   [T]     token at this position
 * /<split>/next_ids    int32   [T]     next-token target, -1 = none (truncation cut)
 * /<split>/doc_index   int32   [T]     index into /documents
 * /<split>/position    int32   [T]     position inside the backbone window
 * /lm_head/weight      float32 [vocab, d]  the backbone's original W_U
 * /lm_head/bias        float32 [vocab]     only when the head has a bias
 * ```
 * @module
 */
import type { Split } from "../data/split.ts";
import { createH5, dataset, type H5Dataset, type H5File, openH5, readRows } from "./h5_file.ts";
import { UserError } from "./user_error.ts";

/** The int32 per-token columns stored beside the embeddings. */
export const TOKEN_COLUMNS = [
  "input_ids",
  "next_ids",
  "doc_index",
  "position",
] as const;
/** One int32 per-token column name. */
export type TokenColumn = typeof TOKEN_COLUMNS[number];

/** A block of consecutive token rows. */
export type TokenRows =
  & { embeddings: Float32Array /* [n, d] */ }
  & Record<TokenColumn, Int32Array>;

const CHUNK_ROWS = 1024;

/** Appends token rows to one or more split groups of a new HDF5 file. */
export class EmbeddingsWriter {
  #file: H5File;
  #d: number;
  #rows = new Map<Split, number>();

  private constructor(file: H5File, d: number) {
    this.#file = file;
    this.#d = d;
  }

  /**
   * Create a new file (truncating any old one at that path).
   *
   * @param path Where to write; callers write to a temporary name and rename when done.
   * @param d Embedding width.
   */
  static async create(path: string, d: number): Promise<EmbeddingsWriter> {
    return new EmbeddingsWriter(await createH5(path), d);
  }

  /**
   * Append rows to a split, creating its datasets on first use.
   *
   * @param split Split group name.
   * @param rows Rows to append; every column must have the same row count.
   */
  append(split: Split, rows: TokenRows): void {
    const n = rows.input_ids.length;
    if (rows.embeddings.length !== n * this.#d) {
      throw new RangeError(
        `Expected ${n}×${this.#d} embeddings, got ${rows.embeddings.length} values`,
      );
    }
    if (!this.#rows.has(split)) this.#createSplit(split);
    const start = this.#rows.get(split)!;
    const end = start + n;
    const emb = dataset(this.#file, `${split}/embeddings`);
    emb.resize([end, this.#d]);
    emb.write_slice([[start, end], [0, this.#d]], rows.embeddings);
    for (const column of TOKEN_COLUMNS) {
      if (rows[column].length !== n) {
        throw new RangeError(
          `Expected ${n} values of ${column}, got ${rows[column].length}`,
        );
      }
      const ds = dataset(this.#file, `${split}/${column}`);
      ds.resize([end]);
      ds.write_slice([[start, end]], rows[column]);
    }
    this.#rows.set(split, end);
  }

  /** Write a whole array as a dataset (e.g. the LM head; strings become variable-length). */
  writeArray(
    name: string,
    data: Float32Array | Int32Array | string[],
    shape: number[],
  ): void {
    const slash = name.lastIndexOf("/");
    if (slash > 0 && !this.#file.get(name.slice(0, slash))) {
      this.#file.create_group(name.slice(0, slash));
    }
    this.#file.create_dataset({ name, data, shape });
  }

  /** Set a string or number attribute on the file's root. */
  setAttribute(name: string, value: string | number): void {
    this.#file.create_attribute(name, value);
  }

  /** Flush and close the file. */
  close(): void {
    this.#file.close();
  }

  #createSplit(split: Split): void {
    this.#file.create_group(split);
    this.#file.create_dataset({
      name: `${split}/embeddings`,
      data: new Float32Array(0),
      shape: [0, this.#d],
      maxshape: [null, this.#d],
      chunks: [CHUNK_ROWS, this.#d],
    });
    for (const column of TOKEN_COLUMNS) {
      this.#file.create_dataset({
        name: `${split}/${column}`,
        data: new Int32Array(0),
        shape: [0],
        maxshape: [null],
        chunks: [CHUNK_ROWS * 4],
      });
    }
    this.#rows.set(split, 0);
  }
}

/** Reads token rows of embeddings.h5 (or a shard) in slices. */
export class EmbeddingsReader {
  readonly path: string;
  readonly d: number;
  #file: H5File;

  private constructor(path: string, file: H5File, d: number) {
    this.path = path;
    this.#file = file;
    this.d = d;
  }

  /**
   * Open a file written by {@link EmbeddingsWriter}.
   *
   * @param path File path.
   * @param hint What to do when it is missing.
   */
  static async open(
    path: string,
    hint = 'run "deno task extract" first',
  ): Promise<EmbeddingsReader> {
    const file = await openH5(path, hint);
    const first = file.keys().find((k) => k === "train" || k === "validation");
    if (first === undefined) {
      file.close();
      throw new UserError(
        `Cannot read "${path}": it has no train or validation group; is it an lcblm embeddings file?`,
      );
    }
    const shape = dataset(file, `${first}/embeddings`).shape ?? [];
    return new EmbeddingsReader(path, file, shape[1]);
  }

  /** Splits present in the file. */
  splits(): Split[] {
    return this.#file.keys().filter((k): k is Split => k === "train" || k === "validation");
  }

  /** Number of token rows of a split (0 when absent). */
  rows(split: Split): number {
    if (!this.#file.get(split)) return 0;
    return dataset(this.#file, `${split}/input_ids`).shape?.[0] ?? 0;
  }

  /**
   * Read rows [start, end) of a split.
   *
   * @param split Split name.
   * @param start First row.
   * @param end One past the last row.
   */
  read(split: Split, start: number, end: number): TokenRows {
    const col = (name: string): H5Dataset => dataset(this.#file, `${split}/${name}`);
    const rows = {
      embeddings: readRows<Float32Array>(col("embeddings"), start, end),
    } as TokenRows;
    for (const column of TOKEN_COLUMNS) {
      rows[column] = readRows<Int32Array>(col(column), start, end);
    }
    return rows;
  }

  /** Read a whole dataset, or null when the file has none at that path. */
  array(
    name: string,
  ): { data: Float32Array | Int32Array; shape: number[] } | null {
    if (!this.#file.get(name)) return null;
    const ds = dataset(this.#file, name);
    return {
      data: ds.value as Float32Array | Int32Array,
      shape: ds.shape ?? [],
    };
  }

  /** The backbone's original LM head: W_U [vocab, d] and its bias (null when it has none). */
  lmHead(): { weight: Float32Array; bias: Float32Array | null; vocab: number } {
    const weight = this.array("lm_head/weight");
    if (!weight) throw new UserError(`Cannot read "${this.path}": it has no lm_head/weight`);
    const bias = this.array("lm_head/bias");
    return {
      weight: weight.data as Float32Array,
      bias: (bias?.data ?? null) as Float32Array | null,
      vocab: weight.shape[0],
    };
  }

  /** An attribute of the file's root, or null. */
  attribute(name: string): string | number | null {
    const attr = this.#file.attrs[name];
    return attr === undefined ? null : attr.value as string | number;
  }

  /** Close the file. */
  close(): void {
    this.#file.close();
  }
}
