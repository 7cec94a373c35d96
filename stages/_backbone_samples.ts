/**
 * Greedy and sampled continuations from an exported model folder, through transformers.js (the
 * way the rest of the project loads backbones), to show what a trained backbone writes.
 * @module
 */
import { AutoModelForCausalLM, AutoTokenizer, env, type Tensor } from "@huggingface/transformers";

/** Continuations by decoding kind, one per prompt (prompt included). */
export interface Samples {
  greedy: string[];
  sampled: string[];
}

/**
 * Continue each prompt greedily and by sampling (temperature 0.8, top-k 40; transformers.js
 * samples with Math.random, so these differ from run to run).
 *
 * @param dir A Hugging Face GPT-2 folder with `onnx/model.onnx`.
 * @param prompts Texts to continue.
 * @param maxNewTokens Tokens to add to each prompt.
 * @returns The decoded texts.
 */
export async function sampleGenerations(
  dir: string,
  prompts: string[],
  maxNewTokens = 40,
): Promise<Samples> {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.useBrowserCache = false;
  const path = await Deno.realPath(dir);
  const tokenizer = await AutoTokenizer.from_pretrained(path);
  const model = await AutoModelForCausalLM.from_pretrained(path, {
    dtype: "fp32",
    device: "cpu",
    local_files_only: true,
  });
  const out: Samples = { greedy: [], sampled: [] };
  try {
    for (const prompt of prompts) {
      for (const kind of ["greedy", "sampled"] as const) {
        const inputs = tokenizer(prompt);
        const ids = await model.generate({
          ...inputs,
          max_new_tokens: maxNewTokens,
          do_sample: kind === "sampled",
          temperature: 0.8,
          top_k: 40,
        }) as Tensor;
        out[kind].push(tokenizer.batch_decode(ids, { skip_special_tokens: true })[0]);
      }
    }
  } finally {
    await model.dispose();
  }
  return out;
}
