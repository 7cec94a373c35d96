/**
 * Stage `extract`: tokenize the corpus, run the frozen backbone, and store per-token last-layer
 * embeddings, token ids and next-token targets in `<run dir>/embeddings.h5` (SPEC section 2).
 *
 * Resumable: windows are written in shards under `embeddings.parts/`, each shard renamed into
 * place when complete; a killed run redoes at most one shard. The shards are then merged into
 * `embeddings.h5.tmp`, which is renamed over `embeddings.h5`, so a finished file is never half
 * rewritten.
 * @module
 */
import { loadBackbone } from "../backbone/load_backbone.ts";
import { atomicWrite } from "../core/atomic_write.ts";
import { configToToml, loadConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { EmbeddingsReader, EmbeddingsWriter, type TokenRows } from "../core/embeddings_store.ts";
import { sha256 } from "../core/hash.ts";
import { Progress } from "../core/progress.ts";
import { runMain, UserError } from "../core/user_error.ts";
import { LCBLM_VERSION } from "../core/version.ts";
import { loadCorpus } from "../data/corpus.ts";
import { planExtraction, type Shard } from "../data/extraction_plan.ts";
import { splitDocuments, SPLITS } from "../data/split.ts";

/** What an extraction produced. */
export interface ExtractSummary {
  path: string;
  /** Token rows per split. */
  tokens: Record<string, number>;
  d: number;
  /** True when an up-to-date file already existed and nothing was done. */
  upToDate: boolean;
  tokensPerSecond: number;
}

/**
 * Run the extraction.
 *
 * @param config Resolved configuration.
 * @param options `force` replaces an embeddings.h5 made with a different configuration.
 * @returns Where the file is and what it holds.
 */
export async function extract(
  config: Config,
  options: { force?: boolean } = {},
): Promise<ExtractSummary> {
  // 1. Inputs: corpus, split, backbone.
  const dir = config.run.dir;
  const out = `${dir}/embeddings.h5`;
  const parts = `${dir}/embeddings.parts`;
  const corpus = await loadCorpus(config.data);
  if (corpus.skippedEmpty > 0) {
    console.error(
      `extract: skipped ${corpus.skippedEmpty} empty document(s) of ${corpus.origin}`,
    );
  }
  const docs = corpus.documents;
  const splits = splitDocuments(
    docs.length,
    config.data.val_fraction,
    config.data.split_seed,
  );
  await Deno.mkdir(dir, { recursive: true });
  const backbone = await loadBackbone(config.backbone.model, {
    cacheDir: config.backbone.cache_dir,
    workDir: `${dir}/cache`,
  });
  try {
    // 2. Provenance: everything that determines the file's contents.
    const provenance = {
      model_id: config.backbone.model,
      model_hash: backbone.modelHash,
      tokenizer_hash: backbone.tokenizerHash,
      corpus_hash: await sha256(
        // Labels too: they are stored in /documents/label, so a relabelled corpus is out of date.
        docs.map((d) => `${d.id}\u0000${JSON.stringify(d.label)}\u0000${d.text}`).join("\u0001"),
      ),
      data: config.data,
      extract: config.extract,
    };
    const configHash = await sha256(JSON.stringify(provenance));
    if (await upToDate(out, configHash, options.force ?? false)) {
      const reader = await EmbeddingsReader.open(out);
      const tokens = Object.fromEntries(SPLITS.map((s) => [s, reader.rows(s)]));
      reader.close();
      console.error(`extract: "${out}" is up to date`);
      return {
        path: out,
        tokens,
        d: backbone.d,
        upToDate: true,
        tokensPerSecond: 0,
      };
    }

    // 3. Plan windows and shards.
    const ex = config.extract;
    const tokens = docs.map((d) => backbone.encode(d.text));
    const shards = planExtraction(tokens, splits, {
      maxLength: checkedMaxLength(ex.max_length, backbone.dir),
      stride: ex.stride,
      bosId: ex.add_bos ? backbone.bosId : null,
      eosId: ex.add_eos ? backbone.eosId : null,
      maxTokens: ex.max_tokens,
      shardTokens: ex.shard_tokens,
    });
    await prepareParts(parts, configHash);

    // 4. Run the backbone shard by shard (skipping finished shards).
    const total = shards.reduce((n, s) => n + s.tokens, 0);
    const progress = new Progress("extract", total, "tok");
    for (const shard of shards) {
      const path = `${parts}/${shard.split}-${String(shard.index).padStart(5, "0")}.h5`;
      if (await Deno.stat(path).catch(() => null)) {
        progress.advance(shard.tokens);
        continue;
      }
      const writer = await EmbeddingsWriter.create(`${path}.tmp`, backbone.d);
      for (let i = 0; i < shard.windows.length; i += ex.batch_size) {
        const batch = shard.windows.slice(i, i + ex.batch_size);
        const hidden = await backbone.hiddenStates(batch.map((w) => w.ids));
        writer.append(shard.split, batchRows(batch, hidden, backbone.d));
        progress.advance(batch.reduce((n, w) => n + w.targets.length, 0));
      }
      writer.close();
      await Deno.rename(`${path}.tmp`, path);
    }
    progress.finish();

    // 5. Merge shards into the final file, atomically.
    await merge(out, shards, parts, backbone.d, (w) => {
      w.writeArray("lm_head/weight", backbone.lmHead.weight, [
        backbone.vocab,
        backbone.d,
      ]);
      if (backbone.lmHead.bias) {
        w.writeArray("lm_head/bias", backbone.lmHead.bias, [backbone.vocab]);
      }
      const splitOf = new Int32Array(docs.length).fill(-1);
      SPLITS.forEach((s, k) => splits[s].forEach((doc) => (splitOf[doc] = k)));
      w.writeArray("documents/split", splitOf, [docs.length]);
      const labels = [
        ...new Set(docs.map((d) => d.label).filter((l) => l !== null)),
      ].sort();
      const labelIds = Int32Array.from(
        docs,
        (d) => d.label === null ? -1 : labels.indexOf(d.label),
      );
      w.writeArray("documents/label", labelIds, [docs.length]);
      w.writeArray("documents/id", docs.map((d) => d.id), [docs.length]);
      const attrs: Record<string, string | number> = {
        model_id: config.backbone.model,
        model_hash: backbone.modelHash,
        tokenizer_hash: backbone.tokenizerHash,
        corpus: corpus.origin,
        corpus_hash: provenance.corpus_hash,
        d: backbone.d,
        vocab: backbone.vocab,
        dtype: ex.dtype,
        bos_id: backbone.bosId ?? -1,
        eos_id: backbone.eosId ?? -1,
        splits: JSON.stringify(SPLITS),
        labels: JSON.stringify(labels),
        config_hash: configHash,
        config: configToToml(config),
        lcblm_version: LCBLM_VERSION,
      };
      for (const [k, v] of Object.entries(attrs)) w.setAttribute(k, v);
    });
    await atomicWrite(`${dir}/extract.config.toml`, configToToml(config));
    await Deno.remove(parts, { recursive: true });
    const counted = Object.fromEntries(
      SPLITS.map((
        s,
      ) => [
        s,
        shards.filter((x) => x.split === s).reduce((n, x) => n + x.tokens, 0),
      ]),
    );
    return {
      path: out,
      tokens: counted,
      d: backbone.d,
      upToDate: false,
      tokensPerSecond: progress.rate,
    };
  } finally {
    await backbone.dispose();
  }
}

/** Rows of the stored positions of a batch of windows (exported for the extraction benchmark). */
export function batchRows(
  batch: Shard["windows"],
  hidden: Float32Array,
  d: number,
): TokenRows {
  const len = Math.max(...batch.map((w) => w.ids.length));
  const n = batch.reduce((k, w) => k + w.targets.length, 0);
  const rows: TokenRows = {
    embeddings: new Float32Array(n * d),
    input_ids: new Int32Array(n),
    next_ids: new Int32Array(n),
    doc_index: new Int32Array(n),
    position: new Int32Array(n),
  };
  let r = 0;
  batch.forEach((w, b) => {
    for (let p = w.from; p < w.ids.length; p++, r++) {
      const at = (b * len + p) * d;
      rows.embeddings.set(hidden.subarray(at, at + d), r * d);
      rows.input_ids[r] = w.ids[p];
      rows.next_ids[r] = w.targets[p - w.from];
      rows.doc_index[r] = w.doc;
      rows.position[r] = p;
    }
  });
  return rows;
}

/** True when `out` exists with the same config hash; refuses to replace a different one. */
async function upToDate(
  out: string,
  configHash: string,
  force: boolean,
): Promise<boolean> {
  if (!(await Deno.stat(out).catch(() => null))) return false;
  const reader = await EmbeddingsReader.open(out);
  const hash = reader.attribute("config_hash");
  reader.close();
  if (hash === configHash) return true;
  if (force) return false;
  throw new UserError(
    `"${out}" was extracted with a different backbone, corpus or [data]/[extract] settings; rerun with --force to replace it, or set [run].dir to a new folder`,
  );
}

/** Keep finished shards of the same configuration; clear anything else. */
async function prepareParts(parts: string, configHash: string): Promise<void> {
  const planFile = `${parts}/config_hash`;
  const previous = await Deno.readTextFile(planFile).catch(() => null);
  if (previous !== null && previous !== configHash) {
    console.error(
      `extract: discarding shards of a different configuration in "${parts}"`,
    );
    await Deno.remove(parts, { recursive: true });
  }
  await Deno.mkdir(parts, { recursive: true });
  for await (const entry of Deno.readDir(parts)) {
    if (entry.name.endsWith(".tmp")) {
      await Deno.remove(`${parts}/${entry.name}`);
    }
  }
  if (previous !== configHash) await atomicWrite(planFile, configHash);
}

/** Concatenate the shards into `out` through a temporary file. */
async function merge(
  out: string,
  shards: Shard[],
  parts: string,
  d: number,
  finish: (w: EmbeddingsWriter) => void,
): Promise<void> {
  const tmp = `${out}.tmp`;
  const writer = await EmbeddingsWriter.create(tmp, d);
  const block = 16384;
  for (const shard of shards) {
    const reader = await EmbeddingsReader.open(
      `${parts}/${shard.split}-${String(shard.index).padStart(5, "0")}.h5`,
    );
    const rows = reader.rows(shard.split);
    for (let start = 0; start < rows; start += block) {
      writer.append(
        shard.split,
        reader.read(shard.split, start, Math.min(rows, start + block)),
      );
    }
    reader.close();
  }
  finish(writer);
  writer.close();
  await Deno.rename(tmp, out);
}

/** `[extract].max_length`, checked against the model's position limit in config.json. */
function checkedMaxLength(maxLength: number, dir: string): number {
  const config = JSON.parse(Deno.readTextFileSync(`${dir}/config.json`));
  const limit = config.n_positions ?? config.max_position_embeddings;
  if (Number.isInteger(limit) && maxLength > limit) {
    throw new UserError(
      `Cannot use [extract].max_length = ${maxLength}: the backbone "${dir}" has only ${limit} positions; expected at most ${limit}`,
    );
  }
  return maxLength;
}

if (import.meta.main) {
  await runMain(async (args) => {
    const { config, flags } = await loadConfig(args, ["force"]);
    const s = await extract(config, { force: flags.force === true });
    const counts = Object.entries(s.tokens).map(([k, v]) => `${k} ${v}`).join(
      ", ",
    );
    console.log(`extract: ${s.path}: d=${s.d}, tokens ${counts}`);
  });
}
