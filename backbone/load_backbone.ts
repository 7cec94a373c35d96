/**
 * Load any ONNX causal LM in Hugging Face layout as a frozen backbone that returns the
 * last-layer hidden states the LM head multiplies, plus that head's weights.
 * @module
 */
import {
  AutoModelForCausalLM,
  AutoTokenizer,
  env,
  type PreTrainedModel,
  type PreTrainedTokenizer,
  Tensor,
} from "@huggingface/transformers";
import { atomicWrite } from "../core/atomic_write.ts";
import { sha256 } from "../core/hash.ts";
import { UserError } from "../core/user_error.ts";
import { findLmHead, withHiddenStateOutput } from "./lm_head.ts";
import { offlineRecipeName } from "./offline_backbones.ts";

/** A loaded backbone. */
export interface Backbone {
  /** The model id or folder named in the config. */
  id: string;
  /** The local folder the model was loaded from. */
  dir: string;
  d: number;
  vocab: number;
  bosId: number | null;
  eosId: number | null;
  /** The original LM head: logits = h · weightᵀ (+ bias). */
  lmHead: { weight: Float32Array /* [vocab, d] */; bias: Float32Array | null };
  /** SHA-256 of the ONNX graph file and of tokenizer.json. */
  modelHash: string;
  tokenizerHash: string;
  tokenizer: PreTrainedTokenizer;
  model: PreTrainedModel;
  /** Token ids of a text, without special tokens. */
  encode(text: string): number[];
  /** Text of token ids, special tokens skipped; no ids (EOS first) is the empty text. */
  decode(ids: number[]): string;
  /**
   * Final-norm hidden states of a right-padded batch. Only `last_hidden_state` is fetched, so
   * onnxruntime skips the LM head and the KV-cache outputs; while the call is pending, `model`
   * must not be used for anything else.
   * @returns [batch, maxLen, d] row-major; padded positions hold unspecified values.
   */
  hiddenStates(batch: number[][]): Promise<Float32Array>;
  dispose(): Promise<void>;
}

/** Where and how to load. */
export interface LoadOptions {
  /** Folder with Hub models fetched by `deno task fetch`. */
  cacheDir: string;
  /** Writable folder for a graph that needed a `last_hidden_state` output added. */
  workDir: string;
}

/** A Hugging Face Hub model id, "org/name". */
export const HUB_ID = /^[\w.-]+\/[\w.-]+$/;
const REQUIRED = ["config.json", "tokenizer.json", "onnx/model.onnx"];

/**
 * Resolve a model spec to a local folder: the folder itself, or a Hub id in the fetch cache.
 *
 * @param spec A folder path or a Hub model id ("org/name").
 * @param cacheDir The fetch cache.
 * @returns An absolute folder path holding every required file.
 */
export async function resolveModelDir(
  spec: string,
  cacheDir: string,
): Promise<string> {
  const candidates = [spec];
  if (HUB_ID.test(spec)) candidates.push(`${cacheDir}/${spec}`);
  for (const dir of candidates) {
    const stat = await Deno.stat(dir).catch(() => null);
    if (!stat?.isDirectory) continue;
    const missing = [];
    for (const f of REQUIRED) {
      if (!(await Deno.stat(`${dir}/${f}`).catch(() => null))) missing.push(f);
    }
    if (missing.length > 0) {
      throw new UserError(
        `Cannot load model "${spec}" from "${dir}": it lacks ${
          missing.join(", ")
        }; expected an ONNX export in Hugging Face layout (${REQUIRED.join(", ")})`,
      );
    }
    return await Deno.realPath(dir);
  }
  const hint = offlineRecipeName(spec) === null && HUB_ID.test(spec)
    ? `it is not a local folder and not in the cache "${cacheDir}"; set [backbone].allow_remote = true and run "deno task fetch"`
    : `the folder does not exist; run "deno task backbones" to build the offline models`;
  throw new UserError(`Cannot load model "${spec}": ${hint}`);
}

/**
 * Load a backbone for hidden-state extraction.
 *
 * @param spec A folder path or a Hub model id.
 * @param options Cache and work folders.
 * @returns The backbone; call `dispose` when done.
 */
export async function loadBackbone(
  spec: string,
  options: LoadOptions,
): Promise<Backbone> {
  const source = await resolveModelDir(spec, options.cacheDir);
  const graph = await Deno.readFile(`${source}/onnx/model.onnx`);
  let head;
  try {
    head = findLmHead(graph);
  } catch (e) {
    throw new UserError(`Cannot load model "${spec}": ${(e as Error).message}`);
  }
  const patched = withHiddenStateOutput(graph);
  const dir = patched.added ? await writePatched(source, patched.model, options.workDir) : source;
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.useBrowserCache = false;
  const tokenizer = await AutoTokenizer.from_pretrained(dir);
  const model = await AutoModelForCausalLM.from_pretrained(dir, {
    dtype: "fp32",
    device: "cpu",
    local_files_only: true,
  });
  // The session swapped in while hidden states are computed (see hiddenOnly).
  const sessions = (model as unknown as { sessions: Record<string, FetchingSession> }).sessions;
  const fullSession = sessions.model, hiddenSession = hiddenOnly(fullSession);
  const config = JSON.parse(await Deno.readTextFile(`${source}/config.json`));
  const special = (key: "bos_token_id" | "eos_token_id"): number | null => {
    const id = config[key] ?? tokenizer[key];
    return Number.isInteger(id) ? id : null;
  };
  const d = head.d;
  return {
    id: spec,
    dir: source,
    d,
    vocab: head.vocab,
    bosId: special("bos_token_id"),
    eosId: special("eos_token_id"),
    lmHead: { weight: head.weight, bias: head.bias ?? null },
    modelHash: await sha256(graph),
    tokenizerHash: await sha256(
      await Deno.readFile(`${source}/tokenizer.json`),
    ),
    tokenizer,
    model,
    encode: (text) => tokenizer.encode(text, { add_special_tokens: false }),
    // The tokenizer refuses to decode [], which a generation that draws EOS first produces.
    decode: (ids) => ids.length === 0 ? "" : tokenizer.decode(ids, { skip_special_tokens: true }),
    async hiddenStates(batch) {
      const b = batch.length;
      const len = Math.max(...batch.map((s) => s.length));
      const ids = new BigInt64Array(b * len);
      const mask = new BigInt64Array(b * len);
      batch.forEach((seq, i) =>
        seq.forEach((t, j) => {
          ids[i * len + j] = BigInt(t);
          mask[i * len + j] = 1n;
        })
      );
      sessions.model = hiddenSession;
      let out: Record<string, unknown>;
      try {
        out = await model({
          input_ids: new Tensor("int64", ids, [b, len]),
          attention_mask: new Tensor("int64", mask, [b, len]),
        });
      } finally {
        sessions.model = fullSession;
      }
      const hidden = out.last_hidden_state as Tensor | undefined;
      if (!hidden) {
        throw new Error(`Model "${spec}" returned no last_hidden_state`);
      }
      const data = hidden.data as Float32Array;
      if (data.length !== b * len * d) {
        throw new Error(
          `Expected last_hidden_state [${b}, ${len}, ${d}], got dims ${hidden.dims}`,
        );
      }
      for (const t of Object.values(out)) (t as Tensor).dispose?.();
      return data;
    },
    dispose: async () => {
      await model.dispose();
    },
  };
}

/** The part of an onnxruntime InferenceSession that transformers.js calls. */
interface FetchingSession {
  run(feeds: unknown, fetches?: string[]): Promise<unknown>;
}

/**
 * The session with `run` limited to the `last_hidden_state` output (transformers.js runs every
 * output; onnxruntime computes only what the fetched outputs need — 10–40% less work here).
 */
function hiddenOnly(session: FetchingSession): FetchingSession {
  return new Proxy(session, {
    get: (target, key) =>
      key === "run"
        ? (feeds: unknown) => target.run(feeds, ["last_hidden_state"])
        : Reflect.get(target, key),
  });
}

/** Copy a model folder with a patched graph into the work folder (once per graph hash). */
async function writePatched(
  source: string,
  graph: Uint8Array,
  workDir: string,
): Promise<string> {
  const dir = `${workDir}/backbone-${(await sha256(graph)).slice(0, 16)}`;
  if (!(await Deno.stat(`${dir}/onnx/model.onnx`).catch(() => null))) {
    for await (const entry of Deno.readDir(source)) {
      if (entry.isFile && entry.name.endsWith(".json")) {
        await atomicWrite(
          `${dir}/${entry.name}`,
          await Deno.readFile(`${source}/${entry.name}`),
        );
      }
    }
    await atomicWrite(`${dir}/onnx/model.onnx`, graph);
  }
  return await Deno.realPath(dir);
}
