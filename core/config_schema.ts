/**
 * The one configuration schema: types, defaults, allowed values and a one-line doc per key.
 * Everything else derives from it: config.toml validation, `--section.key=value` flags, the
 * resolved config saved beside every artifact, and the README's key table.
 * @module
 */
import z from "zod";

const positiveInt = () => z.number().int().min(1);

/** `[run]`: where artifacts go and which seeds every trained model repeats over. */
export const RunSchema = z.object({
  dir: z.string().min(1).default("runs/default").describe(
    "Run directory; every stage writes only under it",
  ),
  seeds: z.array(z.number().int().min(0)).min(1).default([0, 1, 2]).describe(
    "Seeds every trained model repeats over (at least 3 for reported figures)",
  ),
}).strict();

/** `[backbone]`: the frozen causal LM and the judge LM. */
export const BackboneSchema = z.object({
  model: z.string().min(1).default("backbones/tiny-gpt2").describe(
    "Backbone: a local HF-format folder with onnx/model.onnx, or a Hub model id",
  ),
  judge: z.string().min(1).default("backbones/tiny-judge").describe(
    "Judge LM for perplexity of generated text; must differ from the backbone",
  ),
  allow_remote: z.boolean().default(false).describe(
    "Allow fetching a Hub model id (only `deno task fetch` has network access)",
  ),
  cache_dir: z.string().min(1).default("backbones/hub").describe(
    "Where `deno task fetch` stores Hub models",
  ),
  hub_url: z.url({ protocol: /^https?$/ }).default("https://huggingface.co/").describe(
    "Hub (or mirror) that `deno task fetch` downloads from",
  ),
}).strict();

/** `[data]`: the corpus and its train/validation split (by document). */
export const DataSchema = z.object({
  source: z.enum(["moby-dick", "sotu", "txt", "jsonl", "csv"]).default(
    "moby-dick",
  ).describe(
    "Corpus: a shipped npm corpus, a folder of .txt files, or a .jsonl/.csv file",
  ),
  path: z.string().default("").describe(
    "File or folder for txt, jsonl and csv sources",
  ),
  text_column: z.string().min(1).default("text").describe(
    "Text field of jsonl/csv rows",
  ),
  label_column: z.string().default("").describe(
    "Optional label field of jsonl/csv rows (empty: no labels)",
  ),
  val_fraction: z.number().gt(0).lt(1).default(0.1).describe(
    "Fraction of documents held out for validation",
  ),
  split_seed: z.number().int().min(0).default(0).describe(
    "Seed of the document split",
  ),
  max_documents: z.number().int().min(0).default(0).describe(
    "Use only the first N documents (0: all)",
  ),
}).strict();

/** `[extract]`: tokenisation windows and the HDF5 layout of stored embeddings. */
export const ExtractSchema = z.object({
  max_length: positiveInt().max(1_000_000).default(128).describe(
    "Tokens per window fed to the backbone",
  ),
  stride: z.number().int().min(0).default(0).describe(
    "0: truncate each document to one window; N: windows advance N tokens and each token is stored once",
  ),
  add_bos: z.boolean().default(true).describe("Prepend BOS to each document"),
  add_eos: z.boolean().default(true).describe(
    "The last token of a document gets EOS as its next-token target (else no target)",
  ),
  batch_size: positiveInt().max(4096).default(8).describe(
    "Windows per backbone call",
  ),
  max_tokens: z.number().int().min(0).default(0).describe(
    "Stop after storing this many tokens per split, counted over whole windows (0: no limit)",
  ),
  shard_tokens: positiveInt().default(65536).describe(
    "Tokens per resumable shard; a killed run redoes at most one shard",
  ),
  dtype: z.enum(["float32"]).default("float32").describe(
    "Stored embedding type (float16 is not offered: h5wasm 0.10 cannot write it from JS)",
  ),
}).strict();

/** `[train]`: the TensorFlow.js engine every model trains through. */
export const TrainSchema = z.object({
  backend: z.enum(["auto", "blas", "wasm", "webgpu", "tensorflow"]).default("auto").describe(
    "auto: a real GPU → webgpu, else OpenBLAS found → blas, else wasm",
  ),
  blas_library: z.string().default("").describe(
    "Path of libopenblas for the blas backend (empty: search the usual system paths)",
  ),
  allow_software_gpu: z.boolean().default(false).describe(
    "Let webgpu run on a software (fallback) adapter such as Mesa's lavapipe",
  ),
  warmup_fraction: z.number().min(0).lt(1).default(0.05).describe(
    "Fraction of steps of linear learning-rate warm-up",
  ),
  min_lr_fraction: z.number().min(0).max(1).default(0.1).describe(
    "Cosine decay ends at this fraction of the peak learning rate",
  ),
  validations_per_epoch: positiveInt().default(4).describe(
    "Validations (and best-checkpoint checks) per epoch",
  ),
  checkpoint_every: z.number().int().min(0).default(200).describe(
    "Steps between resumable checkpoints (0: only at the end)",
  ),
  patience: z.number().int().min(0).default(0).describe(
    "Stop after this many validations without improvement (0: never)",
  ),
  max_val_tokens: z.number().int().min(0).default(0).describe(
    "Validate on at most this many validation tokens (0: all)",
  ),
}).strict();

/** `[heads]`: next-token heads (SPEC sections 2 and 5). */
export const HeadsSchema = z.object({
  dropout: z.number().min(0).lt(1).default(0.2).describe("Dropout on a new head's inputs"),
  finetune_lr: z.number().gt(0).default(5e-5).describe(
    "AdamW learning rate when fine-tuning the original head from W_U",
  ),
  new_lr: z.number().gt(0).default(5e-4).describe(
    "AdamW learning rate of heads trained from scratch",
  ),
  weight_decay: z.number().min(0).default(0.01).describe("AdamW decoupled weight decay"),
  batch_size: positiveInt().default(1024).describe("Tokens per step"),
  epochs: z.number().gt(0).default(2).describe("Passes over the training tokens"),
  recon_new_head: z.boolean().default(false).describe(
    "Also train a new head on each SAE/LCBLM reconstruction (SPEC: optional)",
  ),
}).strict();

/** `[sae]`: sparse autoencoders (SPEC section 3). */
export const SaeSchema = z.object({
  kind: z.enum(["topk", "relu-l1"]).default("topk").describe(
    "topk: TopK + AuxK (Gao et al.); relu-l1: ReLU with an L1 penalty and unit-norm decoder rows",
  ),
  expansion: positiveInt().max(256).default(4).describe("Latents = expansion × d"),
  k: positiveInt().default(32).describe("topk: active latents per token"),
  k_aux: positiveInt().default(256).describe("topk: dead latents AuxK decodes per token"),
  aux_alpha: z.number().min(0).default(1 / 32).describe("topk: weight of the AuxK loss"),
  dead_tokens: positiveInt().default(50_000).describe(
    "A latent is dead after not firing for this many training tokens (reference: 10M)",
  ),
  l1: z.number().min(0).default(1e-3).describe(
    "relu-l1: weight λ of the mean absolute latent activation",
  ),
  bias_init: z.enum(["geometric_median", "mean"]).default("geometric_median").describe(
    "Pre-encoder bias initialisation from a training sample",
  ),
  lr: z.number().gt(0).default(1e-4).describe("Peak learning rate (Adam)"),
  batch_size: positiveInt().default(1024).describe("Tokens per step"),
  epochs: z.number().gt(0).default(4).describe("Passes over the training tokens"),
}).strict();

/** `[lcblm]`: the Learnable Concept-Based model (SPEC section 4). */
export const LcblmSchema = z.object({
  concepts: positiveInt().default(64).describe("K: number of concepts"),
  embedding_dim: positiveInt().default(32).describe("E: width of each concept embedding"),
  encoder: z.enum(["linear", "shallow", "mlp"]).default("shallow").describe(
    "μ(x): Linear d→KE; Linear + GELU; or Linear d→256, ReLU, Linear 256→KE",
  ),
  similarity: z.enum(["cosine", "inner", "distance"]).default("cosine").describe(
    "sim(μ_k, h_k): cosine; inner product; b − ‖μ_k − h_k‖ with learnable b",
  ),
  topology: z.enum(["stacked", "summed"]).default("stacked").describe(
    "Decoder input: the K·E gated embeddings flattened, or their sum over k",
  ),
  tau: z.number().gt(0).default(0.5).describe("Relaxed Bernoulli temperature"),
  z_noise: z.number().min(0).default(0.1).describe("σ₀ of the noise added to μ in training"),
  prior: z.number().gt(0).lt(1).default(0.05).describe("π: target firing rate of SparsityKL"),
  gamma: z.number().min(0).default(1).describe("Weight of CondKL"),
  beta: z.number().min(0).default(4).describe("Weight of SparsityKL"),
  entropy: z.number().min(0).default(1).describe("Weight of the gate entropy"),
  ortho: z.number().min(0).default(0).describe(
    "Weight of the decoder-block orthogonality (stacked)",
  ),
  resample_every: z.number().int().min(0).default(0).describe(
    "Resample dead concepts every N epochs until 80% of training (0: never)",
  ),
  lr: z.number().gt(0).default(1e-3).describe("Peak learning rate (Adam)"),
  batch_size: positiveInt().default(2048).describe("Tokens per step"),
  epochs: z.number().gt(0).default(4).describe("Passes over the training tokens"),
}).strict();

const bounds = (doc: string) => z.tuple([z.number(), z.number()]).optional().describe(doc);

/** One search-space entry of `[sweep.space]`: exactly one distribution. */
export const DistributionSchema = z.object({
  uniform: bounds("[a, b]: any number from a to b, uniformly"),
  log_uniform: bounds("[a, b] with 0 < a: uniform in log space (learning rates, weights)"),
  int: bounds("[a, b]: an integer from a to b, both included, uniformly"),
  log_int: bounds("[a, b] with 1 ≤ a: an integer from a to b, both included, uniform in log space"),
  choice: z.array(z.union([z.number(), z.string(), z.boolean()])).min(1).optional().describe(
    "[v1, v2, …]: one of the values, each equally likely",
  ),
}).loose().superRefine((d, ctx) => {
  // Loose + this check rather than strict(): the key table of an unknown-key error only knows
  // config sections, not distributions.
  const kinds = ["uniform", "log_uniform", "int", "log_int", "choice"];
  const unknown = Object.keys(d).filter((k) => !kinds.includes(k));
  if (unknown.length > 0) {
    ctx.addIssue({
      code: "custom",
      path: [],
      input: d,
      message: `unknown distribution ${unknown.map((k) => `"${k}"`).join(", ")}; expected ${
        kinds.join(", ")
      }`,
    });
    return;
  }
  const set = Object.entries(d).filter(([, v]) => v !== undefined);
  if (set.length !== 1) {
    ctx.addIssue({
      code: "custom",
      path: [],
      input: d,
      message:
        "expected exactly one of { uniform = [a, b] }, { log_uniform = [a, b] }, { int = [a, b] }, { log_int = [a, b] }, { choice = [...] }",
    });
    return;
  }
  const [kind, value] = set[0];
  if (kind === "choice") return;
  const [a, b] = value as [number, number];
  const problem = a > b
    ? "expected lower ≤ upper"
    : kind.endsWith("int") && !(Number.isInteger(a) && Number.isInteger(b))
    ? "expected integer bounds"
    : kind === "log_uniform" && a <= 0
    ? "expected bounds > 0 (a log range)"
    : kind === "log_int" && a < 1
    ? "expected bounds ≥ 1 (a log range)"
    : null;
  if (problem) ctx.addIssue({ code: "custom", path: [kind], input: value, message: problem });
});

/** `{ "sae.lr" = … }` (a quoted dotted key) → `{ sae = { lr = … } }`, as unquoted TOML gives. */
function nestDottedKeys(space: unknown): unknown {
  if (typeof space !== "object" || space === null || Array.isArray(space)) return space;
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(space)) {
    const dot = name.indexOf(".");
    if (dot < 0) {
      out[name] = typeof out[name] === "object" ? { ...out[name], ...value } : value;
    } else {
      const section = (out[name.slice(0, dot)] ??= {}) as Record<string, unknown>;
      section[name.slice(dot + 1)] = value;
    }
  }
  return out;
}

/** The metrics the `sae` and `lcblm` stages report per model and seed (their table's columns). */
export const AUTOENCODER_METRICS = [
  "fvu",
  "mse",
  "l0",
  "dead_fraction",
  "ce_recon",
  "ce_recovered",
  "latent_head_ce",
  "latent_head_ppl",
  "latent_head_top1",
] as const;

/** The metrics the `baselines` stage reports per head and seed. */
export const HEAD_METRICS = ["val_ce", "val_ppl", "val_top1"] as const;

/** Metrics a sweep can optimise: the training stages' row metrics, and FVU under an L0 budget. */
export const SWEEP_OBJECTIVES = {
  autoencoder: [...AUTOENCODER_METRICS, "fvu_at_l0"],
  baselines: HEAD_METRICS,
} as const;

/** `[sweep]`: random-search hyperparameter sweeps (`deno task sweep`). */
export const SweepSchema = z.object({
  stage: z.enum(["sae", "lcblm", "baselines"]).default("sae").describe(
    "Training stage each trial runs",
  ),
  n_trials: positiveInt().max(100_000).default(20).describe("Trials to sample and run"),
  seeds_per_trial: z.number().int().min(0).default(0).describe(
    "Each trial trains on the first N of [run].seeds (0: all of them)",
  ),
  objective: z.enum([...SWEEP_OBJECTIVES.autoencoder, ...SWEEP_OBJECTIVES.baselines]).default("fvu")
    .describe(
      "Metric ranked by its mean over seeds; fvu_at_l0: FVU among trials with mean L0 ≤ l0_budget",
    ),
  direction: z.enum(["minimize", "maximize"]).default("minimize").describe(
    "Whether a lower or a higher objective is better",
  ),
  l0_budget: z.number().min(0).default(0).describe(
    "fvu_at_l0: trials whose mean L0 exceeds this rank after all others",
  ),
  model: z.string().default("").describe(
    'Model whose rows the objective reads (empty: the stage\'s model; baselines: "finetuned_head" or "new_head")',
  ),
  seed: z.number().int().min(0).default(0).describe(
    "Seed of trial sampling (same seed, same trials)",
  ),
  time_budget_s: z.number().min(0).default(0).describe(
    "Start no new trial after this many seconds (0: no limit); a rerun continues",
  ),
  space: z.preprocess(
    nestDottedKeys,
    z.record(z.string(), z.record(z.string(), DistributionSchema)).default({}),
  ).describe(
    "Search space: `sae.lr = { log_uniform = [1e-5, 1e-3] }` under [sweep.space]; also uniform, int, log_int, choice",
  ),
}).strict().superRefine((s, ctx) => {
  const issue = (key: string, input: unknown, message: string) =>
    ctx.addIssue({ code: "custom", path: [key], input, message });
  const family = s.stage === "baselines" ? "baselines" : "autoencoder";
  if (!(SWEEP_OBJECTIVES[family] as readonly string[]).includes(s.objective)) {
    issue(
      "objective",
      s.objective,
      `stage "${s.stage}" reports ${SWEEP_OBJECTIVES[family].join(", ")}`,
    );
  }
  if (s.objective === "fvu_at_l0" && (s.l0_budget <= 0 || s.direction !== "minimize")) {
    issue("l0_budget", s.l0_budget, 'fvu_at_l0 needs l0_budget > 0 and direction = "minimize"');
  }
  if (s.stage === "baselines" && !["finetuned_head", "new_head"].includes(s.model)) {
    issue("model", s.model, 'stage "baselines" needs model = "finetuned_head" or "new_head"');
  }
});

/** `[generate]`: open-ended generation and judged perplexity (SPEC section 6). */
export const GenerateSchema = z.object({
  temperature: z.number().min(0).default(0.7).describe("Sampling temperature (0: greedy)"),
  top_k: z.number().int().min(0).default(100).describe(
    "Keep the k most likely tokens (0: off)",
  ),
  top_p: z.number().gt(0).max(1).default(0.9).describe(
    "Nucleus: keep the smallest most-likely set reaching this probability (1: off)",
  ),
  repetition_penalty: z.number().gt(0).default(1.5).describe(
    "Divide positive logits of already-used tokens by it, multiply negative ones (1: off)",
  ),
  max_new_tokens: positiveInt().default(100).describe("New tokens per sample at most; EOS stops"),
  samples: positiveInt().default(100).describe("Texts per configuration and seed"),
  seed: z.number().int().min(0).default(0).describe("Seed of the sampling and the bootstrap"),
  batch_size: positiveInt().default(50).describe("Samples generated in parallel"),
  judge_batch_tokens: positiveInt().default(4096).describe(
    "Padded tokens per judge forward pass (its logits take tokens × vocab × 4 bytes)",
  ),
  bootstrap: positiveInt().default(2000).describe("Bootstrap resamples of the perplexity CI"),
}).strict();

/** `[concepts]`: LLM concept labelling of latents and its detection scoring (SPEC section 6). */
export const ConceptsSchema = z.object({
  base_url: z.union([z.literal(""), z.url({ protocol: /^https?$/ })]).default("").describe(
    'OpenAI-compatible endpoint, e.g. "http://localhost:11434/v1" ("": the offline top-token labeller)',
  ),
  model: z.string().min(1).default("gpt-4o-mini").describe("Chat model the endpoint serves"),
  api_key_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$|^$/).default("OPENAI_API_KEY").describe(
    "Name of the environment variable holding the API key (empty: send no key)",
  ),
  max_latents: z.number().int().min(0).default(32).describe(
    "Label at most N live latents per model (0: all), chosen by firing frequency",
  ),
  selection: z.enum(["spread", "frequent"]).default("spread").describe(
    "spread: N latents evenly over the firing-frequency ranking; frequent: the N most frequent",
  ),
  contexts: positiveInt().max(100).default(10).describe(
    "Contexts shown per latent: half the top activations, half across activation quantiles",
  ),
  window: z.number().int().min(0).default(12).describe("Tokens of context before the peak token"),
  window_after: z.number().int().min(0).default(4).describe("Tokens of context after the peak"),
  held_out_active: z.number().int().min(0).default(5).describe(
    "Held-out activating contexts per latent for detection scoring",
  ),
  held_out_inactive: z.number().int().min(0).default(5).describe(
    "Held-out non-activating contexts per latent for detection scoring",
  ),
  top_tokens: positiveInt().default(10).describe("Latent-head output tokens shown per latent"),
  max_tokens: z.number().int().min(0).default(0).describe(
    "Evaluate latents on at most this many validation tokens (0: all)",
  ),
  max_tries: positiveInt().max(50).default(5).describe(
    "Requests per LLM call (retries and re-asks included) before the latent is recorded as failed",
  ),
  timeout_s: z.number().gt(0).default(60).describe("Seconds before one request is abandoned"),
  concurrency: positiveInt().max(64).default(4).describe("LLM requests in flight at once"),
  all_seeds: z.boolean().default(false).describe(
    "Label the models of every [run].seeds (false: only the first seed)",
  ),
  seed: z.number().int().min(0).default(0).describe(
    "Seed of context sampling, shuffling and retry jitter",
  ),
}).strict();

/** `[intervene]`: ablate, scale or clamp latents while generating (SPEC section 6). */
export const InterveneSchema = z.object({
  configurations: z.array(
    z.enum([
      "sae_latents",
      "sae_recon_original",
      "sae_recon_new",
      "lcblm_latents",
      "lcblm_recon_original",
      "lcblm_recon_new",
    ]),
  ).min(1).default(["sae_latents", "lcblm_latents"]).describe(
    "Head configurations edited (those trained); recon ones decode the edited latents",
  ),
  latents: z.number().int().min(0).default(4).describe(
    "Edit the N most frequently firing latents per model (ignored when latent_list is set)",
  ),
  latent_list: z.array(z.number().int().min(0)).default([]).describe(
    "Edit exactly these latents instead of the most frequent ones",
  ),
  ablate: z.boolean().default(true).describe("Include the ablation (latent set to 0, dose 0)"),
  scales: z.array(z.number().min(0)).default([0.5, 2, 4, 8]).describe(
    "Scale doses: the latent is multiplied by each",
  ),
  clamps: z.array(z.number().min(0)).default([1, 2, 4, 8]).describe(
    "Clamp doses: the latent is set to each multiple of its typical max activation",
  ),
  keep_error: z.boolean().default(false).describe(
    "Recon configurations keep the reconstruction error: h' = x̂(edited) + (h − x̂)",
  ),
  samples: positiveInt().default(8).describe("Texts per configuration, seed and dose"),
  max_new_tokens: positiveInt().default(30).describe("New tokens per text at most"),
  top_tokens: positiveInt().default(10).describe(
    "A latent's output tokens: the N whose logits its edit raises most",
  ),
  activation_tokens: positiveInt().default(4000).describe(
    "Validation tokens used to rank latents by firing frequency and find their max activation",
  ),
  seed: z.number().int().min(0).default(0).describe(
    "Seed of the sampling, the random-control latents and the bootstrap",
  ),
}).strict();

/** The whole configuration. Layers: these defaults < config.toml < `--section.key=value` flags. */
export const ConfigSchema = z.object({
  run: RunSchema.prefault({}),
  backbone: BackboneSchema.prefault({}),
  data: DataSchema.prefault({}),
  extract: ExtractSchema.prefault({}),
  train: TrainSchema.prefault({}),
  heads: HeadsSchema.prefault({}),
  sae: SaeSchema.prefault({}),
  lcblm: LcblmSchema.prefault({}),
  concepts: ConceptsSchema.prefault({}),
  generate: GenerateSchema.prefault({}),
  intervene: InterveneSchema.prefault({}),
  sweep: SweepSchema.prefault({}),
}).strict().superRefine((c, ctx) => {
  if (c.backbone.judge === c.backbone.model) {
    ctx.addIssue({
      code: "custom",
      path: ["backbone", "judge"],
      input: c.backbone.judge,
      message: "the judge must be a different model from [backbone].model",
    });
  }
  if (["txt", "jsonl", "csv"].includes(c.data.source) && c.data.path === "") {
    ctx.addIssue({
      code: "custom",
      path: ["data", "path"],
      input: c.data.path,
      message: `a file or folder path is required when [data].source is "${c.data.source}"`,
    });
  }
  const room = c.extract.max_length;
  if (c.extract.stride > room) {
    ctx.addIssue({
      code: "custom",
      path: ["extract", "stride"],
      input: c.extract.stride,
      message: `expected at most [extract].max_length (${room}) so windows leave no gaps`,
    });
  }
  if (c.lcblm.ortho > 0 && c.lcblm.topology !== "stacked") {
    ctx.addIssue({
      code: "custom",
      path: ["lcblm", "ortho"],
      input: c.lcblm.ortho,
      message: 'the orthogonality term needs [lcblm].topology = "stacked"; set ortho = 0',
    });
  }
  if (new Set(c.run.seeds).size !== c.run.seeds.length) {
    ctx.addIssue({
      code: "custom",
      path: ["run", "seeds"],
      input: c.run.seeds,
      message: "expected distinct seeds",
    });
  }
});

/** A fully resolved configuration. */
export type Config = z.infer<typeof ConfigSchema>;
