/**
 * Stage `perplexity` (SPEC section 6): for every training seed and every trained head
 * configuration, generate `[generate].samples` texts from a BOS-only prompt with the backbone's
 * KV cache, plus random text (uniform tokens, the lengths of the original head's texts), and score
 * each with the judge LM. Writes `<run dir>/perplexity/texts.arrow` (every text and score) and
 * `summary.arrow`, and prints mean, median and bootstrap 95% CI per configuration.
 *
 * Resumable: each configuration × seed is saved under `perplexity/parts/` once scored and skipped
 * on a rerun with the same settings, judge and trained models.
 * @module
 */
import { type Backbone, loadBackbone, resolveModelDir } from "../backbone/load_backbone.ts";
import { type Row, writeArrowTable } from "../core/arrow_table.ts";
import { atomicWrite } from "../core/atomic_write.ts";
import { selectBackend } from "../core/backends/select_backend.ts";
import { configToToml, loadConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { sha256 } from "../core/hash.ts";
import { Progress } from "../core/progress.ts";
import { mixSeed, Rng } from "../core/rng.ts";
import { runMain, UserError } from "../core/user_error.ts";
import { judgeTexts } from "../eval/judge.ts";
import { generate } from "../eval/kv_generator.ts";
import { summarizePerplexity, type TextScore } from "../eval/perplexity_summary.ts";
import { loadTrainedSet } from "./_trained_models.ts";
import { openEmbeddings } from "./_stage_io.ts";

/** The configuration name of the random-text control. */
export const RANDOM_TEXT = "random_text";

/** What the stage produced. */
export interface PerplexitySummary {
  /** Summary rows (seed −1: all seeds pooled), as in `summary.arrow`. */
  rows: Row[];
  table: string;
  /** Every text and its score, as in `texts.arrow`. */
  texts: TextScore[];
  /** Generated tokens and the seconds spent generating them in this run (0 when all skipped). */
  generated: { tokens: number; seconds: number };
}

/**
 * Run the stage.
 *
 * @param config Resolved configuration.
 * @returns The summary, the texts and the generation speed.
 */
export async function perplexity(config: Config): Promise<PerplexitySummary> {
  const g = config.generate;
  const out = `${config.run.dir}/perplexity`;
  await selectBackend(config.train, console.error);
  const reader = await openEmbeddings(config);
  const models: { backbone?: Backbone; judge?: Backbone } = {};
  const generated = { tokens: 0, seconds: 0 };
  const texts: TextScore[] = [];
  try {
    // 1. What decides a part's result besides the seed: sampling settings, backbone, judge.
    const common = {
      sampling: {
        ...g,
        batch_size: undefined,
        judge_batch_tokens: undefined,
        bootstrap: undefined,
      },
      embeddings: reader.attribute("config_hash"),
      judge: await judgeIdentity(config),
    };
    const load = async (spec: string) =>
      await loadBackbone(spec, {
        cacheDir: config.backbone.cache_dir,
        workDir: `${config.run.dir}/cache`,
      });
    const open = async () => {
      if (!models.backbone) {
        models.backbone = await load(config.backbone.model);
        if (models.backbone.modelHash !== reader.attribute("model_hash")) {
          throw new UserError(
            `The backbone "${config.backbone.model}" changed since "${config.run.dir}/embeddings.h5" was extracted; run "deno task extract --force" and retrain`,
          );
        }
        models.judge = await load(config.backbone.judge);
      }
      return { backbone: models.backbone, judge: models.judge! };
    };

    for (const seed of config.run.seeds) {
      const set = await loadTrainedSet(config, reader, seed);
      try {
        const trained = await trainedModelsHash(config.run.dir, seed);
        const names = [...set.configurations.map((c) => c.name), RANDOM_TEXT];
        const parts: Record<string, TextScore[]> = {};
        for (const name of names) {
          const path = `${out}/parts/seed-${seed}/${name}.json`;
          const hash = await sha256(JSON.stringify({ ...common, trained, seed, name }));
          const previous = await Deno.readTextFile(path).then(JSON.parse).catch(() => null);
          if (previous?.settings_hash === hash) {
            parts[name] = (previous.texts as TextScore[]).map(revive);
            continue;
          }
          // 2. Generate (or draw random tokens), then score with the judge.
          const { backbone, judge } = await open();
          const started = performance.now();
          const ids = name === RANDOM_TEXT
            ? randomTexts(backbone, parts.original, mixSeed(g.seed, seed, 0x7a4d))
            : await sampleTexts(backbone, set.configurations.find((c) => c.name === name)!, {
              config,
              seed,
              label: `perplexity ${name} seed ${seed}`,
            });
          if (name !== RANDOM_TEXT) {
            generated.tokens += ids.reduce(
              (a, s) => a + s.ids.length + (s.stoppedAtEos ? 1 : 0),
              0,
            );
            generated.seconds += (performance.now() - started) / 1000;
          }
          const decoded = ids.map((s) => backbone.decode(s.ids));
          const scores = await judgeTexts(judge, decoded, g.judge_batch_tokens);
          parts[name] = ids.map((s, i) => ({
            configuration: name,
            seed,
            sample: i,
            text: decoded[i],
            token_count: s.ids.length,
            stopped_at_eos: s.stoppedAtEos,
            judge_tokens: scores[i].tokens,
            nll: scores[i].nll,
            perplexity: scores[i].perplexity,
          }));
          await atomicWrite(
            path,
            JSON.stringify(
              { settings_hash: hash, texts: parts[name] },
              (_, v) => typeof v === "number" && !Number.isFinite(v) ? null : v,
            ),
          );
        }
        for (const name of names) texts.push(...parts[name]);
      } finally {
        set.dispose();
      }
    }

    // 3. Tables: every text, and the summary.
    const { rows, table } = summarizePerplexity(texts, { resamples: g.bootstrap, seed: g.seed });
    await writeArrowTable(`${out}/texts.arrow`, texts);
    await writeArrowTable(`${out}/summary.arrow`, rows);
    await atomicWrite(`${out}/config.toml`, configToToml(config));
    return { rows, table, texts, generated };
  } finally {
    await models.backbone?.dispose();
    await models.judge?.dispose();
    reader.close();
  }
}

/** Generate one configuration's samples; sample i of training seed s always uses the same seed. */
async function sampleTexts(
  backbone: Backbone,
  head: Parameters<typeof generate>[1],
  o: { config: Config; seed: number; label: string },
) {
  const g = o.config.generate;
  const progress = new Progress(o.label, g.samples * g.max_new_tokens, "tok");
  // Common random numbers: every configuration draws from the same per-sample streams.
  const seeds = Array.from({ length: g.samples }, (_, i) => mixSeed(g.seed, o.seed, i));
  const result = await generate(backbone, head, {
    sampling: {
      temperature: g.temperature,
      topK: g.top_k,
      topP: g.top_p,
      repetitionPenalty: g.repetition_penalty,
    },
    maxNewTokens: g.max_new_tokens,
    seeds,
    eosId: backbone.eosId,
    batchSize: g.batch_size,
    onTokens: (n) => progress.advance(n),
  });
  progress.finish();
  return result;
}

/** Uniform non-special tokens with the lengths of the original head's texts. */
function randomTexts(backbone: Backbone, original: TextScore[] | undefined, seed: number) {
  if (!original) throw new Error("The original configuration must be scored before random text");
  const special = new Set([backbone.bosId, backbone.eosId]);
  const allowed = Array.from({ length: backbone.vocab }, (_, i) => i).filter((i) =>
    !special.has(i)
  );
  const rng = new Rng(seed);
  return original.map((t) => ({
    ids: Array.from({ length: t.token_count }, () => allowed[rng.int(allowed.length)]),
    stoppedAtEos: false,
  }));
}

/** The judge's identity without hashing its whole graph: spec, config, tokenizer, graph size. */
async function judgeIdentity(config: Config): Promise<string> {
  const dir = await resolveModelDir(config.backbone.judge, config.backbone.cache_dir);
  const graph = await Deno.stat(`${dir}/onnx/model.onnx`);
  return await sha256(JSON.stringify([
    config.backbone.judge,
    await Deno.readTextFile(`${dir}/config.json`),
    await sha256(await Deno.readFile(`${dir}/tokenizer.json`)),
    graph.size,
    graph.mtime?.getTime(),
  ]));
}

/** Hash of every trained model's metrics.json for a seed: a retrained model reruns the seed. */
async function trainedModelsHash(run: string, seed: number): Promise<string> {
  const found: string[] = [];
  for (const stage of ["baselines", "sae", "lcblm"]) {
    const models = await Array.fromAsync(Deno.readDir(`${run}/${stage}`)).catch(() => []);
    for (const m of models.filter((e) => e.isDirectory).map((e) => e.name).sort()) {
      const text = await Deno.readTextFile(`${run}/${stage}/${m}/seed-${seed}/metrics.json`)
        .catch(() => null);
      if (text !== null) found.push(`${stage}/${m}\n${text}`);
    }
  }
  return await sha256(found.join("\n"));
}

/** JSON has no NaN: a saved null score is an empty text's NaN. */
function revive(t: TextScore): TextScore {
  return { ...t, nll: t.nll ?? NaN, perplexity: t.perplexity ?? NaN };
}

if (import.meta.main) {
  await runMain(async (args) => {
    const { config } = await loadConfig(args);
    const { table, generated } = await perplexity(config);
    console.log(table);
    if (generated.tokens > 0) {
      const ms = (1000 * generated.seconds) / generated.tokens;
      console.log(`generation: ${generated.tokens} tokens, ${ms.toFixed(2)} ms/token`);
    }
  });
}
