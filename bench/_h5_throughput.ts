/**
 * HDF5 store throughput: EmbeddingsWriter appends and EmbeddingsReader.read in row blocks.
 * @module
 */
import { EmbeddingsReader, EmbeddingsWriter, type TokenRows } from "../core/embeddings_store.ts";
import { median } from "./_stats.ts";

/** Median write and read rates (MB = 10^6 bytes of embeddings plus token columns). */
export interface H5Result {
  megabytes: number;
  writeMBs: number;
  readMBs: number;
}

/**
 * Write then read a file of `blocks` blocks of `blockRows` rows of width `d`, `repeats` times.
 * The write time spans create to close (flush included); reads hit a warm page cache.
 *
 * @param dir Scratch folder.
 * @param options Row width, block size, block count, repetitions.
 * @returns Medians over the repetitions.
 */
export async function h5Throughput(
  dir: string,
  options: { d: number; blockRows: number; blocks: number; repeats: number },
): Promise<H5Result> {
  const { d, blockRows, blocks, repeats } = options;
  // 1. One block of rows, reused for every append: [blockRows, d] floats + 4 int32 columns.
  const rows: TokenRows = {
    embeddings: Float32Array.from({ length: blockRows * d }, (_, i) => Math.sin(i)),
    input_ids: Int32Array.from({ length: blockRows }, (_, i) => i % 4096),
    next_ids: Int32Array.from({ length: blockRows }, (_, i) => (i + 1) % 4096),
    doc_index: new Int32Array(blockRows),
    position: Int32Array.from({ length: blockRows }, (_, i) => i % 128),
  };
  const bytes = blocks * blockRows * (d + 4) * 4;
  const path = `${dir}/h5_bench.h5`;
  const write: number[] = [];
  const read: number[] = [];
  for (let r = 0; r < repeats; r++) {
    // 2. Write.
    let t = performance.now();
    const writer = await EmbeddingsWriter.create(path, d);
    for (let b = 0; b < blocks; b++) writer.append("train", rows);
    writer.close();
    write.push(performance.now() - t);
    // 3. Read back in the same blocks, checking one value so the read is not dead code.
    t = performance.now();
    const reader = await EmbeddingsReader.open(path);
    const total = reader.rows("train");
    let check = 0;
    for (let start = 0; start < total; start += blockRows) {
      check += reader.read("train", start, Math.min(total, start + blockRows)).embeddings[1];
    }
    reader.close();
    read.push(performance.now() - t);
    if (total !== blocks * blockRows || Math.abs(check - blocks * Math.sin(1)) > 1e-3) {
      throw new Error(`Read back ${total} rows (check ${check}); expected ${blocks * blockRows}`);
    }
    await Deno.remove(path);
  }
  const mb = bytes / 1e6;
  return {
    megabytes: mb,
    writeMBs: mb / (median(write) / 1000),
    readMBs: mb / (median(read) / 1000),
  };
}
