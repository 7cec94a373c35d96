/**
 * Stage `intervene` (SPEC section 6, intervenability): for every training seed and every
 * `[intervene].configurations` entry that was trained, pick latents (the most frequently firing on
 * validation tokens, or `latent_list`), then ablate, scale and clamp each one — and a seeded random
 * other latent at the same dose, the control — while generating. Writes
 * `<run dir>/intervene/dose_response.arrow` (one row per configuration × seed × latent × role ×
 * dose), `dose_summary.arrow` (mean and bootstrap CI over latents × seeds) and
 * `dose_response.svg`, and prints the summary.
 * @module
 */
import { type Backbone, loadBackbone } from "../backbone/load_backbone.ts";
import { type Row, writeArrowTable } from "../core/arrow_table.ts";
import { atomicWrite } from "../core/atomic_write.ts";
import { selectBackend } from "../core/backends/select_backend.ts";
import { configToToml, loadConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import type { EmbeddingsReader } from "../core/embeddings_store.ts";
import { mixSeed, Rng } from "../core/rng.ts";
import { runMain, UserError } from "../core/user_error.ts";
import type { ConceptDictionary } from "../eval/concept_dictionary.ts";
import {
  type DosePoint,
  doseResponseSvg,
  summarizeDoseResponse,
} from "../eval/dose_response_svg.ts";
import {
  baseTrajectory,
  controlLatent,
  doseEdit,
  doseResponseRow,
  doseSchedule,
  latentTokens,
  measureEdit,
} from "../eval/intervention.ts";
import { judgeTexts } from "../eval/judge.ts";
import type { GenerateOptions, Generation } from "../eval/kv_generator.ts";
import { loadLatentModel } from "./_latent_models.ts";
import { openEmbeddings } from "./_stage_io.ts";
import { loadTrainedSet } from "./_trained_models.ts";

/** What the stage produced. */
export interface InterveneSummary {
  /** Every measurement, as in `dose_response.arrow`. */
  rows: Row[];
  /** Mean ± CI per configuration, role, mode and dose, as in `dose_summary.arrow`. */
  points: DosePoint[];
  /** The printed summary. */
  table: string;
}

/** Per-latent statistics on validation tokens. */
interface LatentStats {
  frequency: number[];
  max: number[];
}

/**
 * Run the stage.
 *
 * @param config Resolved configuration.
 * @param log Progress lines.
 * @returns The rows, the summary points and the printed table.
 */
export async function intervene(
  config: Config,
  log: (line: string) => void = console.error,
): Promise<InterveneSummary> {
  const c = config.intervene;
  const g = config.generate;
  const out = `${config.run.dir}/intervene`;
  await selectBackend(config.train, log);
  const reader = await openEmbeddings(config);
  const models: Backbone[] = [];
  const rows: Row[] = [];
  try {
    const load = (spec: string) =>
      loadBackbone(spec, {
        cacheDir: config.backbone.cache_dir,
        workDir: `${config.run.dir}/cache`,
      });
    const backbone = await load(config.backbone.model);
    models.push(backbone);
    if (backbone.modelHash !== reader.attribute("model_hash")) {
      throw new UserError(
        `The backbone "${config.backbone.model}" changed since "${config.run.dir}/embeddings.h5" was extracted; run "deno task extract --force" and retrain`,
      );
    }
    const judge = await load(config.backbone.judge);
    models.push(judge);
    const perplexity = async (gens: Generation[]) => {
      const texts = gens.map((s) => backbone.decode(s.ids));
      const ppl = (await judgeTexts(judge, texts, g.judge_batch_tokens))
        .map((s) => s.perplexity).filter(Number.isFinite);
      return ppl.length ? ppl.reduce((a, b) => a + b, 0) / ppl.length : NaN;
    };
    const doses = doseSchedule(c);
    for (const seed of config.run.seeds) {
      // Latent statistics first: the LCBLM allows one live model, and the set below loads one.
      const statsByKind = new Map<string, LatentStats | null>();
      for (const name of c.configurations) {
        const kind = name.startsWith("sae") ? "sae" : "lcblm";
        if (!statsByKind.has(kind)) {
          statsByKind.set(kind, await latentStats(config, reader, kind, seed));
        }
      }
      const set = await loadTrainedSet(config, reader, seed);
      try {
        for (const name of c.configurations) {
          const head = set.configurations.find((x) => x.name === name);
          if (!head?.latentModel) continue;
          const kind = head.latentModel.kind;
          // 1. Latents: the most frequently firing ones (or the listed ones), their typical max.
          const stats = statsByKind.get(kind);
          if (!stats) continue;
          const latents = chooseLatents(stats, c.latent_list, c.latents, name);
          const labels = await conceptLabels(config.run.dir, kind, seed);
          // 2. The unedited trajectory and its perplexity.
          const o: GenerateOptions = {
            sampling: {
              temperature: g.temperature,
              topK: g.top_k,
              topP: g.top_p,
              repetitionPenalty: g.repetition_penalty,
            },
            maxNewTokens: c.max_new_tokens,
            seeds: Array.from({ length: c.samples }, (_, i) => mixSeed(c.seed, seed, i)),
            eosId: backbone.eosId,
            batchSize: g.batch_size,
          };
          const trajectory = await baseTrajectory(backbone, head, o);
          const pplBase = await perplexity(trajectory.generations);
          const live = stats.frequency.map((f) => f > 0);
          // 3. Every latent and its control, at every dose.
          for (const latent of latents) {
            log(`intervene: ${name} seed ${seed} latent ${latent}`);
            const control = controlLatent(latent, live, new Rng(mixSeed(c.seed, seed, latent, 7)));
            const tokens = latentTokens(head, trajectory, latent, stats.max[latent], c.top_tokens);
            for (const dose of doses) {
              for (const [role, edited] of [["target", latent], ["control", control]] as const) {
                const edit = doseEdit(edited, dose, stats.max[edited], c.keep_error);
                const effect = await measureEdit(backbone, head, trajectory, edit, tokens, o);
                rows.push(doseResponseRow(
                  {
                    configuration: name,
                    seed,
                    latent,
                    concept: labels.get(latent) ?? "",
                    role,
                    editedLatent: edited,
                    dose,
                    value: edit.value,
                    keepError: c.keep_error,
                  },
                  effect,
                  { base: pplBase, edited: await perplexity(effect.generations) },
                ));
              }
            }
          }
        }
      } finally {
        set.dispose();
      }
    }
  } finally {
    for (const m of models) await m.dispose();
    reader.close();
  }
  if (rows.length === 0) {
    throw new UserError(
      `No trained configuration among [intervene].configurations = ${
        JSON.stringify(c.configurations)
      } under "${config.run.dir}"; run "deno task sae" and "deno task lcblm" first`,
    );
  }
  // 4. Tables, plot, resolved config.
  const points = summarizeDoseResponse(rows, { resamples: g.bootstrap, seed: c.seed });
  await writeArrowTable(`${out}/dose_response.arrow`, rows);
  await writeArrowTable(`${out}/dose_summary.arrow`, points as unknown as Row[]);
  await atomicWrite(`${out}/dose_response.svg`, doseResponseSvg(points));
  await atomicWrite(`${out}/config.toml`, configToToml(config));
  return { rows, points, table: summaryTable(points) };
}

/** Firing frequency and max activation of every latent on the first validation tokens (null: not trained). */
async function latentStats(
  config: Config,
  reader: EmbeddingsReader,
  kind: "sae" | "lcblm",
  seed: number,
): Promise<LatentStats | null> {
  const model = await loadLatentModel(config, reader.d, kind, seed);
  if (!model) return null;
  try {
    const split = reader.rows("validation") > 0 ? "validation" : "train";
    const n = Math.min(reader.rows(split), config.intervene.activation_tokens);
    const acts = model.activations(reader.read(split, 0, n).embeddings, n); // [n, m]
    const m = model.latents;
    const frequency = new Array(m).fill(0);
    const max = new Array(m).fill(0);
    for (let i = 0; i < acts.length; i++) {
      const j = i % m;
      if (acts[i] > model.threshold) frequency[j] += 1 / n;
      if (acts[i] > max[j]) max[j] = acts[i];
    }
    return { frequency, max };
  } finally {
    model.dispose();
  }
}

/** The listed latents, or the n most frequently firing ones (ties by index). */
function chooseLatents(stats: LatentStats, list: number[], n: number, name: string): number[] {
  const m = stats.frequency.length;
  const bad = list.find((k) => k >= m);
  if (bad !== undefined) {
    throw new UserError(
      `Cannot edit latent ${bad} of "${name}": [intervene].latent_list must hold integers in [0, ${m})`,
    );
  }
  if (list.length > 0) return list;
  const ids = stats.frequency.map((_, j) => j);
  ids.sort((a, b) => stats.frequency[b] - stats.frequency[a] || a - b);
  return ids.slice(0, Math.min(n, m));
}

/** Concept labels of a model's latents, when the concepts stage has labelled them. */
async function conceptLabels(
  run: string,
  kind: "sae" | "lcblm",
  seed: number,
): Promise<Map<number, string>> {
  const path = `${run}/concepts/${kind}/seed-${seed}/dictionary.json`;
  const dict = await Deno.readTextFile(path).then(JSON.parse).catch(() => null) as
    | ConceptDictionary
    | null;
  const labels = new Map<number, string>();
  for (const e of dict?.entries ?? []) if (e.concept) labels.set(e.latent, e.concept);
  return labels;
}

/** The printed summary: one line per configuration, mode and dose. */
function summaryTable(points: DosePoint[]): string {
  const f = (v: number, d = 4) => Number.isFinite(v) ? v.toFixed(d) : "nan";
  const lines = [
    "configuration\tmode\tdose\tn\tkl\tkl_control\tprob_rise [95% CI]\tprob_rise_control\tfreq_rise\tppl_ratio",
  ];
  for (const p of points.filter((x) => x.role === "target")) {
    const ctl = points.find((x) =>
      x.role === "control" && x.configuration === p.configuration && x.mode === p.mode &&
      x.dose === p.dose
    );
    lines.push([
      p.configuration,
      p.mode,
      p.dose,
      p.n,
      f(p.kl),
      f(ctl?.kl ?? NaN),
      `${f(p.prob_rise)} [${f(p.prob_rise_low)}, ${f(p.prob_rise_high)}]`,
      f(ctl?.prob_rise ?? NaN),
      f(p.freq_rise),
      f(p.ppl_ratio, 3),
    ].join("\t"));
  }
  return lines.join("\n");
}

if (import.meta.main) {
  await runMain(async (args) => {
    const { config } = await loadConfig(args);
    const { table } = await intervene(config);
    console.log(table);
    console.log(`dose–response: ${config.run.dir}/intervene/dose_response.svg`);
  });
}
