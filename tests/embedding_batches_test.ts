import { deepStrictEqual, notDeepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { EmbeddingsReader, EmbeddingsWriter } from "../core/embeddings_store.ts";
import { Rng } from "../core/rng.ts";
import { embeddingBatches } from "../core/train/embedding_batches.ts";
import { Standardizer } from "../core/train/standardizer.ts";

const D = 3;
const ROWS = 103;

/** An embeddings file whose row r has features [r, 2r + 1, noise] and target r (or −1). */
async function fixture(): Promise<{ dir: string; reader: EmbeddingsReader; raw: Float32Array }> {
  const dir = await Deno.makeTempDir();
  const rng = new Rng(5);
  const raw = new Float32Array(ROWS * D);
  for (let r = 0; r < ROWS; r++) raw.set([r, 2 * r + 1, rng.normal() * 10 + 50], r * D);
  const w = await EmbeddingsWriter.create(`${dir}/e.h5`, D);
  for (let start = 0; start < ROWS; start += 40) {
    const end = Math.min(ROWS, start + 40);
    const ids = Int32Array.from({ length: end - start }, (_, i) => start + i);
    w.append("train", {
      embeddings: raw.slice(start * D, end * D),
      input_ids: ids,
      next_ids: ids.map((r) => r % 10 === 9 ? -1 : r),
      doc_index: new Int32Array(end - start),
      position: ids,
    });
  }
  w.close();
  return { dir, reader: await EmbeddingsReader.open(`${dir}/e.h5`), raw };
}

Deno.test("batches: every row once per epoch, full batches but the last, deterministic", async () => {
  const { dir, reader, raw } = await fixture();
  const opts = { batchSize: 16, shuffle: true, seed: 7, epoch: 0, chunkRows: 32 };
  const a = [...embeddingBatches(reader, "train", opts)];
  deepStrictEqual(a.map((b) => b.n), [16, 16, 16, 16, 16, 16, 7]);
  const seen = a.flatMap((b) => Array.from({ length: b.n }, (_, i) => b.x[i * D]));
  deepStrictEqual([...seen].sort((x, y) => x - y), Array.from({ length: ROWS }, (_, r) => r));
  // Rows travel whole: features and targets stay with their row.
  for (const b of a) {
    for (let i = 0; i < b.n; i++) {
      const r = b.x[i * D];
      strictEqual(b.x[i * D + 1], raw[r * D + 1]);
      strictEqual(b.targets[i], r % 10 === 9 ? -1 : r);
    }
  }
  deepStrictEqual([...embeddingBatches(reader, "train", opts)], a);
  const other = [...embeddingBatches(reader, "train", { ...opts, epoch: 1 })];
  notDeepStrictEqual(other.map((b) => Array.from(b.x)), a.map((b) => Array.from(b.x)));
  const ordered = [...embeddingBatches(reader, "train", { ...opts, shuffle: false })];
  deepStrictEqual(Array.from(ordered[0].x.subarray(0, 6)), Array.from(raw.subarray(0, 6)));
  reader.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("standardizer: float64 fit equals a direct computation; invert undoes apply", async () => {
  const { dir, reader, raw } = await fixture();
  const s = Standardizer.fit(reader);
  for (let j = 0; j < D; j++) {
    let mean = 0;
    for (let r = 0; r < ROWS; r++) mean += raw[r * D + j];
    mean /= ROWS;
    let v = 0;
    for (let r = 0; r < ROWS; r++) v += (raw[r * D + j] - mean) ** 2;
    ok(Math.abs(s.mean[j] - mean) <= 1e-5 * Math.abs(mean));
    ok(Math.abs(s.std[j] - Math.sqrt(v / ROWS)) <= 1e-5 * Math.sqrt(v / ROWS));
  }
  const x = raw.slice(0, 30);
  s.apply(x);
  ok(Math.abs(x[0] - (0 - s.mean[0]) / s.std[0]) < 1e-6);
  s.invert(x);
  for (let i = 0; i < 30; i++) ok(Math.abs(x[i] - raw[i]) < 1e-4);
  const back = Standardizer.fromTensors(s.toTensors());
  deepStrictEqual(back.mean, s.mean);
  reader.close();
  await Deno.remove(dir, { recursive: true });
});
