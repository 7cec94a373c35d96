/**
 * Task `report`: gather what a run directory holds — baselines, SAE and LCBLM metrics and training
 * histories, perplexity, concept dictionaries, dose–response, sweep — and write one
 * self-contained `<run dir>/report.html` (inline CSS and SVG, no scripts, no network). A section
 * appears only when its artifacts exist, so the report can be made after any stage.
 * @module
 */
import { readArrowTable, type Row } from "../core/arrow_table.ts";
import { atomicWrite } from "../core/atomic_write.ts";
import { configToToml, loadConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { EmbeddingsReader } from "../core/embeddings_store.ts";
import { runMain } from "../core/user_error.ts";
import {
  type ConceptScores,
  reportHtml,
  type RunArtifacts,
  type TrainingHistory,
} from "./_report_html.ts";

/** embeddings.h5 attributes shown as the run's provenance. */
const PROVENANCE = [
  "model_id",
  "model_hash",
  "tokenizer_hash",
  "corpus",
  "corpus_hash",
  "d",
  "vocab",
  "dtype",
  "config_hash",
  "lcblm_version",
];

/** Training stages whose `<model>/seed-<s>/metrics.json` hold a history. */
const TRAINING_STAGES = ["baselines", "sae", "lcblm"];

/**
 * Write the report.
 *
 * @param config Resolved configuration (its `[run].dir` is the run reported).
 * @param now The time shown in the header (for reproducible tests).
 * @returns The report's path and the sections it holds.
 */
export async function report(
  config: Config,
  now: Date = new Date(),
): Promise<{ path: string; sections: string[] }> {
  const artifacts = await readArtifacts(config);
  const { html, sections } = reportHtml(artifacts, now.toISOString());
  const path = `${config.run.dir}/report.html`;
  await atomicWrite(path, html);
  return { path, sections };
}

/** Read every artifact the report can show; missing ones are null or empty. */
async function readArtifacts(config: Config): Promise<RunArtifacts> {
  const run = config.run.dir;
  const perplexity = await table(`${run}/perplexity/summary.arrow`);
  const conceptSummary = await table(`${run}/concepts/summary.arrow`);
  const sweep = await table(`${run}/sweep/results.arrow`);
  const sweepSvg = await text(`${run}/sweep/pareto.svg`);
  const autoencoders: RunArtifacts["autoencoders"] = [];
  for (const stage of ["sae", "lcblm"]) {
    const rows = await table(`${run}/${stage}/metrics.arrow`);
    if (rows?.length) autoencoders.push({ stage, rows });
  }
  return {
    runDir: run,
    configToml: configToToml(config),
    provenance: await provenance(`${run}/embeddings.h5`),
    baselines: await table(`${run}/baselines/metrics.arrow`),
    autoencoders,
    histories: await histories(run),
    perplexity: perplexity
      ? { summary: perplexity, texts: await table(`${run}/perplexity/texts.arrow`) }
      : null,
    concepts: conceptSummary ? { summary: conceptSummary, scores: await conceptScores(run) } : null,
    dose: await table(`${run}/intervene/dose_response.arrow`),
    sweep: sweep || sweepSvg ? { trials: sweep?.length ?? 0, svg: sweepSvg } : null,
  };
}

async function provenance(path: string): Promise<Record<string, string | number> | null> {
  if (!(await exists(path))) return null;
  const reader = await EmbeddingsReader.open(path);
  try {
    const out: Record<string, string | number> = {};
    for (const key of PROVENANCE) {
      const v = reader.attribute(key);
      if (v !== null && v !== undefined) out[key] = v;
    }
    return out;
  } finally {
    reader.close();
  }
}

async function histories(run: string): Promise<TrainingHistory[]> {
  const out: TrainingHistory[] = [];
  for (const stage of TRAINING_STAGES) {
    for (const model of await folders(`${run}/${stage}`)) {
      const seeds = (await folders(`${run}/${stage}/${model}`))
        .map((s) => /^seed-(\d+)$/.exec(s)?.[1]).filter((s) => s !== undefined).map(Number)
        .sort((a, b) => a - b);
      for (const seed of seeds) {
        const json = await text(`${run}/${stage}/${model}/seed-${seed}/metrics.json`);
        const h = json === null ? null : JSON.parse(json).history;
        if (!h || !Array.isArray(h.losses)) continue;
        out.push({
          stage,
          model,
          seed,
          losses: h.losses.map((v: number | null) => v ?? NaN),
          validations: Array.isArray(h.validations) ? h.validations : [],
        });
      }
    }
  }
  return out;
}

async function conceptScores(run: string): Promise<ConceptScores[]> {
  const out: ConceptScores[] = [];
  for (const model of await folders(`${run}/concepts`)) {
    for (const s of await folders(`${run}/concepts/${model}`)) {
      const seed = /^seed-(\d+)$/.exec(s)?.[1];
      const rows = seed === undefined
        ? null
        : await table(`${run}/concepts/${model}/${s}/scores.arrow`);
      if (!rows) continue;
      const page = `concepts/${model}/${s}/dictionary.html`;
      out.push({
        model,
        seed: Number(seed),
        rows,
        href: (await exists(`${run}/${page}`)) ? page : null,
      });
    }
  }
  return out.sort((a, b) => a.model.localeCompare(b.model) || a.seed - b.seed);
}

async function table(path: string): Promise<Row[] | null> {
  return (await exists(path)) ? await readArrowTable(path) : null;
}

async function text(path: string): Promise<string | null> {
  return await Deno.readTextFile(path).catch((e) => {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  });
}

async function folders(path: string): Promise<string[]> {
  if (!(await exists(path))) return [];
  const entries = await Array.fromAsync(Deno.readDir(path));
  return entries.filter((e) => e.isDirectory).map((e) => e.name).sort();
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, (e) => {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  });
}

if (import.meta.main) {
  await runMain(async (args) => {
    const { config } = await loadConfig(args);
    const { path, sections } = await report(config);
    console.log(`report: wrote ${path} (${sections.length ? sections.join(", ") : "no sections"})`);
  });
}
