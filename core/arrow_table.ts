/**
 * Tables (metrics, sweep results, generated texts) as Apache Arrow IPC files, written atomically.
 * @module
 */
import { tableFromArrays, tableFromIPC, tableToIPC } from "apache-arrow";
import { atomicWrite } from "./atomic_write.ts";

/** A row of a table: string, number, or boolean cells. */
export type Row = Record<string, string | number | boolean>;

/**
 * Write rows as an Arrow IPC file. Columns are the union of the rows' keys, in first-seen order;
 * numbers become float64, strings utf8, booleans bool; a missing cell is null.
 *
 * @param path Target file (`.arrow`).
 * @param rows The rows.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const dir = await Deno.makeTempDir();
 * await writeArrowTable(`${dir}/t.arrow`, [{ model: "sae", seed: 0, fvu: 0.25 }]);
 * deepStrictEqual(await readArrowTable(`${dir}/t.arrow`), [{ model: "sae", seed: 0, fvu: 0.25 }]);
 * ```
 */
export async function writeArrowTable(path: string, rows: Row[]): Promise<void> {
  const columns: string[] = [];
  for (const row of rows) {
    for (const k of Object.keys(row)) if (!columns.includes(k)) columns.push(k);
  }
  const data: Record<string, unknown> = {};
  for (const c of columns) {
    const cells = rows.map((r) => r[c] ?? null);
    const kind = typeof cells.find((v) => v !== null);
    data[c] = kind === "number" ? Float64Array.from(cells as number[], (v) => v ?? NaN) : cells;
  }
  // deno-lint-ignore no-explicit-any
  await atomicWrite(path, tableToIPC(tableFromArrays(data as any), "file"));
}

/** Read an Arrow IPC file written by {@link writeArrowTable} back into rows. */
export async function readArrowTable(path: string): Promise<Row[]> {
  const table = tableFromIPC(await Deno.readFile(path));
  return table.toArray().map((r) => ({ ...r.toJSON() }) as Row);
}
