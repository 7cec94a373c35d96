/**
 * Stage `steer` (SPEC section 6, intervenability, interactive): continue a prompt through one head
 * configuration with and without a latent edit and print both continuations side by side.
 *
 * Non-interactive: `deno task steer --prompt "The whale" --configuration sae_latents
 * --latent 12 --scale 4` (`--clamp V`, `--ablate`; several `--latent` each take the edit flag
 * after them; `--seed S` picks the training seed, `--tokens N` the length, `--keep-error`).
 * Without `--latent` it asks for the prompt, latent and edit on stdin until an empty prompt.
 * Sampling follows `[generate]` (set `--generate.temperature=0` for greedy) with `[intervene].seed`.
 * @module
 */
import { parseArgs } from "node:util";
import { type Backbone, loadBackbone } from "../backbone/load_backbone.ts";
import { selectBackend } from "../core/backends/select_backend.ts";
import { loadConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { runMain, UserError } from "../core/user_error.ts";
import { generate } from "../eval/kv_generator.ts";
import { openEmbeddings } from "./_stage_io.ts";
import { type LatentEdit, loadTrainedSet } from "./_trained_models.ts";

/** One steering request. */
export interface SteerRequest {
  prompt: string;
  edits: LatentEdit[];
}

/** Where the stage talks: printed lines, and questions (null: end of input). */
export interface SteerIo {
  print(line: string): void;
  ask(question: string): string | null;
}

/**
 * Parse the command line, load the configuration and run one request (flags) or a session (stdin).
 *
 * @param args Command-line arguments.
 * @param io Output and questions.
 * @returns Every base and steered continuation produced.
 */
export async function steerMain(
  args: string[],
  io: SteerIo,
): Promise<Array<{ base: string; steered: string[] }>> {
  const { own, rest } = parseSteerArgs(args);
  const { config } = await loadConfig(rest);
  const session = await openSteering(config, own.configuration, own.seed, own.tokens, io);
  const results = [];
  try {
    if (own.edits.length > 0) {
      const prompt = own.prompt ?? io.ask("prompt>") ?? "";
      const edits = own.edits.map((e) => ({ ...e, keepError: own.keepError }));
      results.push(await session.run({ prompt, edits }));
    } else {
      for (;;) {
        const prompt = own.prompt ?? io.ask("prompt (empty: quit)>");
        if (!prompt) break;
        const latent = Number(io.ask(`latent [0, ${session.latents})>`));
        const [mode = "scale", value = "4"] = (io.ask("edit (scale 4 | clamp 10 | ablate)>") ?? "")
          .trim().split(/\s+/);
        const edit = makeEdit(latent, mode, Number(value), own.keepError);
        results.push(await session.run({ prompt, edits: [edit] }));
        if (own.prompt) break;
      }
    }
  } finally {
    await session.close();
  }
  return results;
}

/** Load the backbone and a seed's configurations once; run requests against them. */
async function openSteering(
  config: Config,
  name: string,
  seed: number | null,
  tokens: number | null,
  io: SteerIo,
) {
  await selectBackend(config.train, () => {});
  const reader = await openEmbeddings(config);
  const trainingSeed = seed ?? config.run.seeds[0];
  const set = await loadTrainedSet(config, reader, trainingSeed).catch((e) => {
    reader.close();
    throw e;
  });
  let backbone: Backbone | null = null;
  const close = async () => {
    set.dispose();
    reader.close();
    await backbone?.dispose();
  };
  const editable = set.configurations.filter((c) => c.latentModel);
  const head = editable.find((c) => c.name === name);
  if (!head) {
    await close();
    throw new UserError(
      `Cannot steer "${name}" for seed ${trainingSeed}: trained configurations with latents are ${
        editable.map((c) => `"${c.name}"`).join(", ") || "none (run deno task sae / lcblm)"
      }`,
    );
  }
  const model = await loadBackbone(config.backbone.model, {
    cacheDir: config.backbone.cache_dir,
    workDir: `${config.run.dir}/cache`,
  });
  backbone = model;
  const g = config.generate;
  const latents = head.latentModel!.latents;
  const continueWith = async (prompt: number[], edit?: LatentEdit) => {
    const [gen] = await generate(model, head, {
      sampling: {
        temperature: g.temperature,
        topK: g.top_k,
        topP: g.top_p,
        repetitionPenalty: g.repetition_penalty,
      },
      maxNewTokens: tokens ?? config.intervene.max_new_tokens,
      seeds: [config.intervene.seed],
      eosId: model.eosId,
      prompts: [prompt],
      batchSize: 1,
      edit,
    });
    return model.decode(gen.ids);
  };
  return {
    latents,
    close,
    run: async (r: SteerRequest) => {
      for (const e of r.edits) {
        if (!Number.isInteger(e.latent) || e.latent < 0 || e.latent >= latents) {
          throw new UserError(
            `Cannot edit latent ${e.latent}: expected an integer in [0, ${latents})`,
          );
        }
      }
      const bos = model.bosId ?? model.eosId;
      const ids = [...(bos === null ? [] : [bos]), ...model.encode(r.prompt)];
      const base = await continueWith(ids);
      const steered: string[] = [];
      for (const e of r.edits) steered.push(await continueWith(ids, e));
      io.print(`${head.name}, training seed ${trainingSeed}; prompt: ${JSON.stringify(r.prompt)}`);
      r.edits.forEach((e, i) => {
        const what = e.mode === "ablate" ? "ablate" : `${e.mode} ${e.value}`;
        io.print(sideBySide("base", base, `steered: latent ${e.latent} ${what}`, steered[i]));
      });
      return { base, steered };
    },
  };
}

/** Two texts wrapped into 48-character columns, titles on top. */
function sideBySide(
  leftTitle: string,
  left: string,
  rightTitle: string,
  right: string,
): string {
  const width = 48;
  const wrap = (s: string) => {
    const lines: string[] = [];
    for (const para of s.replace(/\r/g, "").split("\n")) {
      for (let i = 0; i < Math.max(para.length, 1); i += width) {
        lines.push(para.slice(i, i + width));
      }
    }
    return lines;
  };
  const [a, b] = [[leftTitle, "-".repeat(width), ...wrap(left)], [
    rightTitle,
    "-".repeat(width),
    ...wrap(right),
  ]];
  const rows = Array.from(
    { length: Math.max(a.length, b.length) },
    (_, i) => `${(a[i] ?? "").padEnd(width)} | ${b[i] ?? ""}`.trimEnd(),
  );
  return rows.join("\n");
}

function makeEdit(latent: number, mode: string, value: number, keepError: boolean): LatentEdit {
  if (mode !== "scale" && mode !== "clamp" && mode !== "ablate") {
    throw new UserError(`Unknown edit "${mode}": expected scale, clamp or ablate`);
  }
  if (mode !== "ablate" && !Number.isFinite(value)) {
    throw new UserError(`Cannot ${mode} by "${value}": expected a number`);
  }
  return { latent, mode, value: mode === "ablate" ? 0 : value, keepError };
}

/** Split steer's own flags from the configuration flags (`--config`, `--section.key=value`). */
function parseSteerArgs(args: string[]) {
  const { tokens } = parseArgs({
    args,
    strict: false,
    tokens: true,
    options: {
      prompt: { type: "string" },
      configuration: { type: "string" },
      seed: { type: "string" },
      tokens: { type: "string" },
      latent: { type: "string", multiple: true },
      scale: { type: "string", multiple: true },
      clamp: { type: "string", multiple: true },
      ablate: { type: "boolean", multiple: true },
      "keep-error": { type: "boolean" },
      config: { type: "string" },
    },
  });
  const own = {
    prompt: null as string | null,
    configuration: "sae_latents",
    seed: null as number | null,
    tokens: null as number | null,
    keepError: false,
    edits: [] as LatentEdit[],
  };
  const rest: string[] = [];
  const int = (name: string, v: string | undefined) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) {
      throw new UserError(`Cannot read --${name} "${v}": expected an integer >= 0`);
    }
    return n;
  };
  for (const t of tokens ?? []) {
    if (t.kind === "positional") throw new UserError(`Unexpected argument "${t.value}"`);
    if (t.kind !== "option") continue;
    const last = own.edits[own.edits.length - 1];
    const needLatent = () => {
      if (!last) throw new UserError(`--${t.name} must follow a --latent K`);
      return last;
    };
    if (t.name === "config" || t.name.includes(".")) rest.push(`--${t.name}=${t.value ?? ""}`);
    else if (t.name === "prompt") own.prompt = t.value ?? "";
    else if (t.name === "configuration") own.configuration = t.value ?? "";
    else if (t.name === "seed") own.seed = int("seed", t.value);
    else if (t.name === "tokens") own.tokens = int("tokens", t.value);
    else if (t.name === "keep-error") own.keepError = true;
    else if (t.name === "latent") {
      own.edits.push(makeEdit(int("latent", t.value), "scale", 4, false));
    } else if (t.name === "scale" || t.name === "clamp") {
      Object.assign(needLatent(), makeEdit(last.latent, t.name, Number(t.value), false));
    } else if (t.name === "ablate") {
      Object.assign(needLatent(), makeEdit(last.latent, "ablate", 0, false));
    } else {
      throw new UserError(
        `Unknown flag "--${t.name}": allowed are --prompt, --configuration, --seed, --tokens, --latent K (--scale X | --clamp X | --ablate), --keep-error, --config FILE, --section.key=value`,
      );
    }
  }
  return { own, rest };
}

if (import.meta.main) {
  await runMain(async (args) => {
    await steerMain(args, {
      print: (line) => console.log(line),
      ask: (question) => prompt(question),
    });
  });
}
