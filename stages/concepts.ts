/**
 * Stage `concepts` (SPEC section 6): name every labelled latent of the SAE and the LCBLM with an
 * LLM (any OpenAI-compatible chat endpoint) from its top-activating contexts and its head's top
 * output tokens, and score each name by detection against a shuffled-label baseline. Without an
 * endpoint it uses the offline-top-tokens labeller and says how to configure one.
 *
 * Writes, per model and seed (the first of [run].seeds, or all with `all_seeds`):
 * `<run>/concepts/<model>/seed-<s>/dictionary.json`, `dictionary.html`, `scores.arrow`,
 * `config.toml`; and `<run>/concepts/summary.arrow`. Every LLM call is cached under
 * `<run>/concepts/cache/`, so a re-run replays offline and an interrupted run resumes. Answers
 * and failures caused by the answers are cached; failures to reach the endpoint are not (the next
 * run asks again), and `--retry-failed` asks again for cached failures too.
 *
 * Permissions: `deno task concepts` allows the network to localhost only (Ollama, vLLM,
 * llama.cpp servers). For another host run
 * `deno run --allow-read=. --allow-write=runs --allow-env --allow-ffi
 * --allow-sys=cpus,hostname,networkInterfaces --allow-net=<host> stages/concepts.ts`; the stage
 * checks the permission first and prints that line when it is missing. Env access cannot be
 * narrowed to the key's variable: h5wasm reads the whole environment when it starts.
 * @module
 */
import { AutoTokenizer, env } from "@huggingface/transformers";
import { resolveModelDir } from "../backbone/load_backbone.ts";
import { selectBackend } from "../core/backends/select_backend.ts";
import { type Row, writeArrowTable } from "../core/arrow_table.ts";
import { atomicWrite } from "../core/atomic_write.ts";
import { configToToml, loadConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { runMain, UserError } from "../core/user_error.ts";
import {
  collectContexts,
  renderContext,
  selectLatents,
  type TokenContext,
  topColumnTokens,
} from "../eval/concept_contexts.ts";
import { type ConceptDictionary, dictionaryHtml } from "../eval/concept_dictionary.ts";
import { labelAndScore, type Labeller, llmLabeller } from "../eval/concept_labels.ts";
import { LlmClient, type LlmClientOptions, type LlmStats } from "../eval/llm_client.ts";
import { OFFLINE_LABELLER, offlineLabeller } from "../eval/offline_labeller.ts";
import { type LatentModel, loadLatentModel } from "./_latent_models.ts";
import { openEmbeddings } from "./_stage_io.ts";

/** Test hooks and flags. */
export interface ConceptsOptions {
  /** Ask again for calls whose cached answer was a failure. */
  retryFailed?: boolean;
  /** Progress and notices; default stderr. */
  log?: (line: string) => void;
  /** The client's clock and fetch (tests). */
  client?: Pick<LlmClientOptions, "sleep" | "now" | "fetch" | "backoffMs">;
}

/** What the stage did. */
export interface ConceptsSummary {
  /** One row per model and seed. */
  rows: Row[];
  table: string;
  labeller: string;
  /** How to configure an endpoint, when none is (else null). */
  message: string | null;
  /** LLM request counters (null offline). */
  stats: LlmStats | null;
}

/**
 * Run the stage.
 *
 * @param config Resolved configuration.
 * @param options Flags and test hooks.
 * @returns The per-model summary rows and the printed table.
 */
export async function concepts(
  config: Config,
  options: ConceptsOptions = {},
): Promise<ConceptsSummary> {
  const c = config.concepts;
  const log = options.log ?? ((line: string) => console.error(line));
  const { labeller, client, message } = await makeLabeller(config, options);
  if (message) log(message);
  await selectBackend(config.train, log);
  const reader = await openEmbeddings(config);
  const rows: Row[] = [];
  try {
    const total = reader.rows("validation");
    if (total === 0) {
      throw new UserError(
        `"${reader.path}" has no validation tokens; set [data].val_fraction > 0 and run "deno task extract --force"`,
      );
    }
    const source = { rows: total, read: (s: number, e: number) => reader.read("validation", s, e) };
    const decode = await loadDecoder(config);
    const seeds = c.all_seeds ? config.run.seeds : config.run.seeds.slice(0, 1);
    for (const kind of ["sae", "lcblm"] as const) {
      for (const seed of seeds) {
        const model = await loadLatentModel(config, reader.d, kind, seed);
        if (!model) continue;
        try {
          log(`concepts: ${kind} seed ${seed}: collecting contexts of ${model.latents} latents`);
          const collected = collectContexts(
            source,
            model.activations,
            model.latents,
            model.threshold,
            {
              examples: c.contexts,
              window: c.window,
              windowAfter: c.window_after,
              heldOutActive: c.held_out_active,
              heldOutInactive: c.held_out_inactive,
              maxTokens: c.max_tokens,
              seed: c.seed,
            },
          );
          const dict = await buildDictionary(config, model, collected, labeller, decode, log);
          rows.push(await writeDictionary(config, dict));
        } finally {
          model.dispose();
        }
      }
    }
  } finally {
    reader.close();
  }
  if (rows.length === 0) {
    throw new UserError(
      `No trained SAE or LCBLM under "${config.run.dir}"; run "deno task sae" and "deno task lcblm" first`,
    );
  }
  await writeArrowTable(`${config.run.dir}/concepts/summary.arrow`, rows);
  const columns = ["model", "seed", "labeller", "live", "labelled", "failed", "f1", "f1_shuffled"];
  const cell = (v: Row[string]) =>
    typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : String(v);
  const table = [columns.join("\t"), ...rows.map((r) => columns.map((k) => cell(r[k])).join("\t"))]
    .join("\n");
  return { rows, table, labeller: labeller.name, message, stats: client?.stats ?? null };
}

async function buildDictionary(
  config: Config,
  model: LatentModel,
  collected: ReturnType<typeof collectContexts>,
  labeller: Labeller,
  decode: (ids: number[]) => string,
  log: (line: string) => void,
): Promise<ConceptDictionary> {
  const c = config.concepts;
  const chosen = selectLatents(collected.live, c.max_latents, c.selection);
  log(
    `concepts: ${model.kind} seed ${model.seed}: ${collected.live.length} live latents, labelling ${chosen.length} with ${labeller.name}`,
  );
  const text = (ctx: TokenContext) => renderContext(ctx, decode);
  const token = (id: number) => decode([id]).replace(/\r?\n/g, "↵");
  const topTokens = (j: number) =>
    model.headLogits
      ? topColumnTokens(model.headLogits, model.latents, j, c.top_tokens).map(token)
      : [];
  const tasks = chosen.map((l) => ({
    input: {
      examples: l.examples.map((e) => ({ text: text(e), activation: e.activation })),
      maxActivation: l.maxActivation,
      topTokens: topTokens(l.latent),
      frequentTokens: l.frequentTokens.map((t) => token(t.id)),
    },
    heldOutActive: l.heldOutActive.map(text),
    heldOutInactive: l.heldOutInactive.map(text),
  }));
  const results = await labelAndScore(tasks, labeller, c.seed);
  const entries = chosen.map((l, i) => {
    const r = results[i];
    return {
      latent: l.latent,
      status: r.status,
      labeller: labeller.name,
      concept: r.label?.concept ?? null,
      alternatives: r.label?.alternatives ?? [],
      reason: r.reason,
      fires: l.fires,
      frequency: l.frequency,
      max_activation: l.maxActivation,
      mean_activation: l.meanActivation,
      detection: r.detection,
      baseline: r.baseline,
      baseline_label_from: r.baselineFrom === null ? null : chosen[r.baselineFrom].latent,
      detection_reason: r.detectionReason,
      top_tokens: tasks[i].input.topTokens,
      frequent_tokens: l.frequentTokens.map((t) => ({ token: token(t.id), count: t.count })),
      examples: l.examples.map((e) => ({
        text: text(e),
        activation: e.activation,
        source: e.source,
      })),
      held_out: [
        ...l.heldOutActive.map((e) => ({ text: text(e), activation: e.activation, fires: true })),
        ...l.heldOutInactive.map((e) => ({
          text: text(e),
          activation: e.activation,
          fires: false,
        })),
      ],
    };
  });
  const mean = (xs: Array<number | undefined>) => {
    const v = xs.filter((x): x is number => x !== undefined);
    return v.length > 0 ? v.reduce((a, b) => a + b, 0) / v.length : null;
  };
  const labelled = entries.filter((e) => e.status === "labelled").length;
  return {
    model: model.kind,
    seed: model.seed,
    labeller: labeller.name,
    offline: labeller.name === OFFLINE_LABELLER,
    activation: model.activation,
    evaluated_tokens: collected.evaluated,
    latents: model.latents,
    live_latents: collected.live.length,
    labelled,
    failed: entries.length - labelled,
    mean_f1: mean(entries.map((e) => e.detection?.f1)),
    mean_baseline_f1: mean(entries.map((e) => e.baseline?.f1)),
    mean_accuracy: mean(entries.map((e) => e.detection?.accuracy)),
    mean_baseline_accuracy: mean(entries.map((e) => e.baseline?.accuracy)),
    entries,
  };
}

/** Write the JSON, HTML, per-latent Arrow table and resolved config; returns the summary row. */
async function writeDictionary(config: Config, dict: ConceptDictionary): Promise<Row> {
  const dir = `${config.run.dir}/concepts/${dict.model}/seed-${dict.seed}`;
  await atomicWrite(`${dir}/dictionary.json`, JSON.stringify(dict, null, 1));
  await atomicWrite(`${dir}/dictionary.html`, dictionaryHtml(dict));
  await atomicWrite(`${dir}/config.toml`, configToToml(config));
  const nan = (x: number | undefined) => x ?? NaN;
  await writeArrowTable(
    `${dir}/scores.arrow`,
    dict.entries.map((e) => ({
      latent: e.latent,
      status: e.status,
      labeller: e.labeller,
      concept: e.concept ?? "",
      reason: e.reason ?? "",
      frequency: e.frequency,
      accuracy: nan(e.detection?.accuracy),
      precision: nan(e.detection?.precision),
      recall: nan(e.detection?.recall),
      f1: nan(e.detection?.f1),
      baseline_accuracy: nan(e.baseline?.accuracy),
      baseline_f1: nan(e.baseline?.f1),
      baseline_label_from: e.baseline_label_from ?? -1,
    })),
  );
  return {
    model: dict.model,
    seed: dict.seed,
    labeller: dict.labeller,
    live: dict.live_latents,
    labelled: dict.labelled,
    failed: dict.failed,
    f1: dict.mean_f1 ?? NaN,
    f1_shuffled: dict.mean_baseline_f1 ?? NaN,
    accuracy: dict.mean_accuracy ?? NaN,
    accuracy_shuffled: dict.mean_baseline_accuracy ?? NaN,
  };
}

/** The endpoint's labeller (after checking permissions and the key), or the offline one. */
async function makeLabeller(
  config: Config,
  options: ConceptsOptions,
): Promise<{ labeller: Labeller; client: LlmClient | null; message: string | null }> {
  const c = config.concepts;
  if (c.base_url === "") {
    return { labeller: offlineLabeller(), client: null, message: OFFLINE_MESSAGE };
  }
  const host = new URL(c.base_url).host;
  const hint = `run: deno run ${permissions(host)} stages/concepts.ts`;
  if ((await Deno.permissions.query({ name: "net", host })).state !== "granted") {
    throw new UserError(
      `Cannot reach [concepts].base_url host "${host}": network access to it is not allowed (deno task concepts allows only localhost); ${hint}`,
    );
  }
  let apiKey: string | null = null;
  if (c.api_key_env !== "") {
    const variable = c.api_key_env;
    if ((await Deno.permissions.query({ name: "env", variable })).state !== "granted") {
      throw new UserError(
        `Cannot read the API key from $${variable} ([concepts].api_key_env): access to it is not allowed; ${hint}`,
      );
    }
    apiKey = Deno.env.get(variable) ?? "";
    if (apiKey === "") {
      throw new UserError(
        `[concepts].api_key_env names "${variable}", but $${variable} is not set; export ${variable}=<your key>, or set api_key_env = "" for an endpoint without a key`,
      );
    }
  }
  const client = new LlmClient({
    baseUrl: c.base_url,
    model: c.model,
    apiKey,
    timeoutMs: c.timeout_s * 1000,
    maxTries: c.max_tries,
    concurrency: c.concurrency,
    cacheDir: `${config.run.dir}/concepts/cache`,
    retryFailed: options.retryFailed ?? false,
    seed: c.seed,
    ...options.client,
  });
  return { labeller: llmLabeller(client, c.model), client, message: null };
}

/** The task's permissions with the network opened to `host` (env is whole: h5wasm reads all). */
function permissions(host: string): string {
  return `--allow-read=. --allow-write=runs --allow-env --allow-ffi ` +
    `--allow-sys=cpus,hostname,networkInterfaces --allow-net=${host}`;
}

const OFFLINE_MESSAGE =
  `concepts: no LLM endpoint is configured ([concepts].base_url = ""), so latents get ` +
  `${OFFLINE_LABELLER} labels: the tokens they fire on and promote, not LLM concept names.
To label with an LLM, name any OpenAI-compatible chat endpoint in config.toml:
  [concepts]
  base_url = "http://localhost:11434/v1"   # Ollama, vLLM, llama.cpp server, or https://api.openai.com/v1
  model = "llama3.1"                       # a model the endpoint serves
  api_key_env = "OPENAI_API_KEY"           # NAME of the variable holding the key ("" for none)
then export the key and run "deno task concepts" (network: localhost only), or for another host:
  deno run ${permissions("<host>")} stages/concepts.ts`;

/** Token ids → text with the backbone's tokenizer (special tokens kept visible). */
async function loadDecoder(config: Config): Promise<(ids: number[]) => string> {
  const dir = await resolveModelDir(config.backbone.model, config.backbone.cache_dir);
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.useBrowserCache = false;
  const tokenizer = await AutoTokenizer.from_pretrained(dir);
  return (ids) => ids.length === 0 ? "" : tokenizer.decode(ids, { skip_special_tokens: false });
}

if (import.meta.main) {
  await runMain(async (args) => {
    const { config, flags } = await loadConfig(args, ["retry-failed"]);
    const summary = await concepts(config, { retryFailed: flags["retry-failed"] === true });
    console.log(summary.table);
  });
}
