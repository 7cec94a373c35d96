/**
 * Step-by-step generation over the backbone with its KV cache, through transformers.js: each step
 * feeds only the new tokens with `past_key_values` (a `DynamicCache` of the previous `present.*`
 * outputs) and reads the last hidden state h, which a head configuration turns into logits.
 * Several samples run as one batch; prompts of different lengths are left-padded (masked, with
 * positions counted from each row's first real token) and finished rows leave the batch.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { DynamicCache, Tensor } from "@huggingface/transformers";
import type { Backbone } from "../backbone/load_backbone.ts";
import { Rng } from "../core/rng.ts";
import type { HeadConfiguration } from "../stages/_trained_models.ts";
import type { LatentEdit } from "../stages/_latent_models.ts";
import { checkSamplingOptions, chooseToken, type SamplingOptions } from "./sampling.ts";

/** A batch of sequences in flight: their attention masks and the backbone's KV cache. */
export class KvSession {
  #backbone: Backbone;
  #mask: number[][] = [];
  #cache: DynamicCache | null = null;

  private constructor(backbone: Backbone) {
    this.#backbone = backbone;
  }

  /**
   * Run the prompts (left-padded to one length) and keep their KV cache.
   *
   * @param backbone The backbone.
   * @param prompts One non-empty token list per row.
   * @returns The session and the last hidden state of every row, [B, d] row-major.
   */
  static async prefill(
    backbone: Backbone,
    prompts: number[][],
  ): Promise<{ session: KvSession; hidden: Float32Array }> {
    if (prompts.length === 0 || prompts.some((p) => p.length === 0)) {
      throw new RangeError("Cannot prefill: expected at least one row and no empty prompt");
    }
    const s = new KvSession(backbone);
    const len = Math.max(...prompts.map((p) => p.length));
    const ids = prompts.map((p) => [...Array(len - p.length).fill(p[0]), ...p]);
    s.#mask = prompts.map((p) => [...Array(len - p.length).fill(0), ...p.map(() => 1)]);
    return { session: s, hidden: await s.#forward(ids) };
  }

  /** Rows in the batch. */
  get rows(): number {
    return this.#mask.length;
  }

  /** Tokens (padding included) each row's cache holds. */
  get length(): number {
    return this.#mask[0]?.length ?? 0;
  }

  /**
   * Feed one new token per row.
   *
   * @param tokens [B] the tokens chosen last step.
   * @returns The new last hidden states, [B, d].
   */
  async step(tokens: number[]): Promise<Float32Array> {
    if (tokens.length !== this.rows) {
      throw new RangeError(`Cannot step ${tokens.length} tokens: the batch has ${this.rows} rows`);
    }
    for (const m of this.#mask) m.push(1);
    return await this.#forward(tokens.map((t) => [t]));
  }

  /**
   * Keep only some rows (e.g. drop those that reached EOS).
   *
   * @param rows Indices of the rows to keep, in their new order.
   */
  keep(rows: number[]): void {
    this.#mask = rows.map((r) => this.#mask[r]);
    if (!this.#cache) return;
    const entries: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(this.#cache) as Array<[string, Tensor]>) {
      const block = t.dims.slice(1).reduce((a, b) => a * b, 1); // [B, heads, len, hd]: rows contiguous
      const data = t.data as Float32Array;
      const out = new Float32Array(rows.length * block);
      rows.forEach((r, i) => out.set(data.subarray(r * block, (r + 1) * block), i * block));
      entries[name] = new Tensor("float32", out, [rows.length, ...t.dims.slice(1)]);
      t.dispose();
    }
    this.#cache = new DynamicCache(entries);
  }

  /** Free the cache. */
  dispose(): void {
    for (const t of Object.values(this.#cache ?? {}) as Tensor[]) t.dispose();
    this.#cache = null;
  }

  async #forward(ids: number[][]): Promise<Float32Array> {
    const [b, n] = [ids.length, ids[0].length];
    const i64 = (rows: number[][], width: number) =>
      new Tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [b, width]);
    // transformers.js derives position_ids = cumsum(mask) − 1 and keeps the last n of them.
    const out = await this.#backbone.model.forward({
      input_ids: i64(ids, n),
      attention_mask: i64(this.#mask, this.length),
      ...(this.#cache ? { past_key_values: this.#cache } : {}),
    }) as Record<string, Tensor>;
    const d = this.#backbone.d;
    const hidden = out.last_hidden_state;
    if (!hidden || hidden.dims.join() !== [b, n, d].join()) {
      throw new Error(`Expected last_hidden_state [${b}, ${n}, ${d}], got ${hidden?.dims}`);
    }
    const all = hidden.data as Float32Array;
    const last = new Float32Array(b * d);
    for (let r = 0; r < b; r++) last.set(all.subarray((r * n + n - 1) * d, (r * n + n) * d), r * d);
    const entries: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(out)) {
      if (name.startsWith("present")) entries[name.replace("present", "past_key_values")] = t;
      else t.dispose();
    }
    for (const t of Object.values(this.#cache ?? {}) as Tensor[]) t.dispose();
    this.#cache = new DynamicCache(entries);
    return last;
  }
}

/** What to generate. */
export interface GenerateOptions {
  sampling: SamplingOptions;
  /** New tokens per sample at most (fewer when the context would exceed n_positions). */
  maxNewTokens: number;
  /** One seed per sample: sample i draws from `new Rng(seeds[i])`, whatever the batching. */
  seeds: number[];
  /** Stop a sample when it draws this token (not part of its ids); null: never. */
  eosId: number | null;
  /** Prompts, one per sample or one shared; default a BOS-only prompt. */
  prompts?: number[][];
  /** Samples per backbone batch. */
  batchSize: number;
  /** A latent edit applied at every step (intervenability). */
  edit?: LatentEdit;
  /** Called after each step with the number of tokens just generated. */
  onTokens?: (n: number) => void;
}

/** One generated sample. */
export interface Generation {
  /** The new tokens (without the prompt and without the final EOS). */
  ids: number[];
  stoppedAtEos: boolean;
}

/**
 * Generate samples with the backbone's KV cache, choosing each token from
 * `head.logits(h, edit)` with {@link chooseToken}.
 *
 * @param backbone The backbone.
 * @param head The head configuration turning hidden states into logits.
 * @param o What to generate.
 * @returns One generation per seed, in order.
 */
export async function generate(
  backbone: Backbone,
  head: Pick<HeadConfiguration, "logits">,
  o: GenerateOptions,
): Promise<Generation[]> {
  checkSamplingOptions(o.sampling);
  const n = o.seeds.length;
  const prompts = o.prompts ?? [[bosOf(backbone)]];
  if (prompts.length !== 1 && prompts.length !== n) {
    throw new RangeError(`Cannot generate ${n} samples from ${prompts.length} prompts`);
  }
  const results: Generation[] = [];
  for (let start = 0; start < n; start += o.batchSize) {
    const rows = o.seeds.slice(start, start + o.batchSize).map((seed, i) => ({
      rng: new Rng(seed),
      prompt: prompts.length === 1 ? prompts[0] : prompts[start + i],
      ids: [] as number[],
      stoppedAtEos: false,
    }));
    const room = contextLength(backbone) - Math.max(...rows.map((r) => r.prompt.length)) + 1;
    const maxNew = Math.min(o.maxNewTokens, room);
    let { session, hidden } = await KvSession.prefill(backbone, rows.map((r) => r.prompt));
    let live = rows;
    try {
      for (let t = 0; t < maxNew && live.length > 0; t++) {
        // 1. Logits of the live rows through the head configuration.
        const logits = await headLogits(head, hidden, backbone.d, o.edit);
        const vocab = logits.length / live.length;
        // 2. One choice per row; rows that drew EOS finish.
        const next = live.map((r, i) => {
          const row = logits.subarray(i * vocab, (i + 1) * vocab);
          return chooseToken(row, [...r.prompt, ...r.ids], o.sampling, r.rng);
        });
        const keep: number[] = [];
        next.forEach((tok, i) => {
          if (tok === o.eosId) live[i].stoppedAtEos = true;
          else (live[i].ids.push(tok), keep.push(i));
        });
        o.onTokens?.(live.length);
        if (t === maxNew - 1 || keep.length === 0) break;
        // 3. Feed the survivors' tokens.
        if (keep.length < live.length) session.keep(keep);
        live = keep.map((i) => live[i]);
        hidden = await session.step(keep.map((i) => next[i]));
      }
    } finally {
      session.dispose();
    }
    for (const r of rows) results.push({ ids: r.ids, stoppedAtEos: r.stoppedAtEos });
  }
  return results;
}

/** Logits [B, vocab] of hidden states [B, d] through a head configuration. */
async function headLogits(
  head: Pick<HeadConfiguration, "logits">,
  hidden: Float32Array,
  d: number,
  edit?: LatentEdit,
): Promise<Float32Array> {
  const logits = tf.tidy(() => head.logits(tf.tensor2d(hidden, [hidden.length / d, d]), edit));
  const data = await logits.data() as Float32Array;
  logits.dispose();
  return data;
}

/**
 * The longest sequence a model's position table covers, from its config (n_positions,
 * max_position_embeddings or n_ctx); Infinity when none is given.
 *
 * @param model A loaded backbone (or judge).
 * @returns The context length.
 */
export function contextLength(model: Pick<Backbone, "model">): number {
  const c = model.model.config as unknown as Record<string, unknown>;
  const n = [c.n_positions, c.max_position_embeddings, c.n_ctx].find(Number.isInteger);
  return typeof n === "number" ? n : Infinity;
}

function bosOf(backbone: Backbone): number {
  const bos = backbone.bosId ?? backbone.eosId;
  if (bos === null) {
    throw new RangeError(`Backbone "${backbone.id}" has no BOS or EOS token to start from`);
  }
  return bos;
}
