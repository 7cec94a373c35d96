/**
 * Plumbing shared by the training stages: opening embeddings.h5 with provenance checks, the
 * per-model-and-seed artifact folders (skipped when finished with the same settings), and the
 * metrics table printed and saved as Arrow.
 * @module
 */
import { type Row, writeArrowTable } from "../core/arrow_table.ts";
import { atomicWrite } from "../core/atomic_write.ts";
import { configToToml } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { EmbeddingsReader } from "../core/embeddings_store.ts";
import { sha256 } from "../core/hash.ts";
import { UserError } from "../core/user_error.ts";
import { formatSummary, seedSummary } from "../eval/seed_stats.ts";

/**
 * Open `<run dir>/embeddings.h5` and check it belongs to this configuration's backbone and holds
 * only finite numbers.
 *
 * @param config Resolved configuration.
 * @returns The open reader.
 */
export async function openEmbeddings(config: Config): Promise<EmbeddingsReader> {
  const path = `${config.run.dir}/embeddings.h5`;
  const reader = await EmbeddingsReader.open(path, `run "deno task extract" first`);
  const model = reader.attribute("model_id");
  if (model !== config.backbone.model) {
    reader.close();
    throw new UserError(
      `"${path}" holds embeddings of backbone "${model}", but [backbone].model is "${config.backbone.model}"; run "deno task extract --force" or set [run].dir to another folder`,
    );
  }
  for (const split of reader.splits()) {
    const rows = reader.rows(split);
    for (let start = 0; start < rows; start += 65536) {
      const e = reader.read(split, start, Math.min(rows, start + 65536)).embeddings;
      const bad = e.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) {
        reader.close();
        throw new UserError(
          `"${path}" has a non-finite embedding (${e[bad]}) in ${split} row ${
            start + Math.floor(bad / reader.d)
          }; the backbone produced NaN/Inf — check the model, then re-extract`,
        );
      }
    }
  }
  return reader;
}

/** One trained model × seed: where its artifacts go and whether it is already done. */
export interface ModelRun {
  dir: string;
  /** The metrics of a finished run with the same settings, else null. */
  done: Record<string, unknown> | null;
  /** Save final metrics (marks the run finished) and the resolved config beside them. */
  finish(metrics: Record<string, unknown>): Promise<void>;
}

/**
 * The artifact folder of one model and seed.
 *
 * @param config Resolved configuration (saved beside the artifacts).
 * @param stage Stage name, e.g. "baselines".
 * @param model Model name, e.g. "new_head".
 * @param seed The seed.
 * @param settings Everything that determines the result besides the seed and the embeddings.
 * @param embeddingsHash The embeddings file's config hash.
 */
export async function modelRun(
  config: Config,
  stage: string,
  model: string,
  seed: number,
  settings: unknown,
  embeddingsHash: string,
): Promise<ModelRun> {
  const dir = `${config.run.dir}/${stage}/${model}/seed-${seed}`;
  const hash = await sha256(JSON.stringify({ settings, embeddingsHash, seed }));
  const previous = await Deno.readTextFile(`${dir}/metrics.json`).then(JSON.parse).catch(() =>
    null
  );
  if (previous !== null && previous.settings_hash !== hash) {
    // Different settings: start over instead of resuming someone else's checkpoints.
    await Deno.remove(dir, { recursive: true });
  }
  return {
    dir,
    done: previous?.settings_hash === hash ? previous : null,
    async finish(metrics) {
      await atomicWrite(`${dir}/config.toml`, configToToml(config));
      await atomicWrite(
        `${dir}/metrics.json`,
        JSON.stringify({ ...metrics, settings_hash: hash }, null, 1),
      );
    },
  };
}

/**
 * Print a table of metrics as mean ± 95% CI over seeds per model, and save every row as Arrow.
 *
 * @param path Arrow file to write.
 * @param rows One row per model × seed, with `model` and `seed` keys.
 * @param metrics Metric keys to summarise.
 * @returns The printed text.
 */
export async function seedTable(path: string, rows: Row[], metrics: string[]): Promise<string> {
  await writeArrowTable(path, rows);
  const models = [...new Set(rows.map((r) => String(r.model)))];
  const lines = [["model", "seeds", ...metrics].join("\t")];
  for (const model of models) {
    const mine = rows.filter((r) => r.model === model);
    const cells = metrics.map((m) => {
      const values = mine.map((r) => r[m]).filter((v): v is number => typeof v === "number");
      return values.length === 0 ? "-" : formatSummary(seedSummary(values));
    });
    lines.push([model, String(mine.length), ...cells].join("\t"));
  }
  return lines.join("\n");
}
