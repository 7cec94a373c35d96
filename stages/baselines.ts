/**
 * Stage `baselines` (SPEC section 2): score the backbone's original head, fine-tune it from
 * W_U, and train a new dropout + linear head from scratch — every trained head once per seed,
 * keeping its best-validation checkpoint. Writes `<run dir>/baselines/metrics.arrow` and prints
 * validation CE, perplexity and top-1 as mean ± 95% CI over seeds.
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../core/backends/select_backend.ts";
import type { Row } from "../core/arrow_table.ts";
import { loadConfig } from "../core/config.ts";
import { type Config, HEAD_METRICS } from "../core/config_schema.ts";
import { runMain } from "../core/user_error.ts";
import { LinearHead } from "../models/linear_head.ts";
import { fitHead, scoreHead } from "./_fit_head.ts";
import { modelRun, openEmbeddings, seedTable } from "./_stage_io.ts";

/**
 * Run the stage.
 *
 * @param config Resolved configuration.
 * @param options `resume` continues interrupted trainings from their checkpoints.
 * @returns One row per head and seed, and the printed table.
 */
export async function baselines(
  config: Config,
  options: { resume?: boolean } = {},
): Promise<{ rows: Row[]; table: string }> {
  await selectBackend(config.train, console.error);
  const reader = await openEmbeddings(config);
  try {
    const d = reader.d;
    const { weight, bias } = reader.lmHead();
    const vocab = weight.length / d;
    const embeddingsHash = String(reader.attribute("config_hash"));
    const raw = (x: Float32Array, n: number) => tf.tensor2d(x, [n, d]);

    // 1. The original head needs no training: one deterministic score.
    const original = new LinearHead("head", d, vocab, 0, { kind: "weights", weight, bias });
    const o = scoreHead(original, reader, raw, config);
    original.dispose();
    const rows: Row[] = [{
      model: "original_head",
      seed: -1,
      val_ce: o.ce,
      val_ppl: o.perplexity,
      val_top1: o.top1,
    }];

    // 2. Trained heads, once per seed.
    const kinds = {
      finetuned_head: { lr: config.heads.finetune_lr, dropout: 0, fromWu: true },
      new_head: { lr: config.heads.new_lr, dropout: config.heads.dropout, fromWu: false },
    };
    for (const seed of config.run.seeds) {
      for (const [model, kind] of Object.entries(kinds)) {
        const settings = { kind, heads: config.heads, train: config.train };
        const run = await modelRun(config, "baselines", model, seed, settings, embeddingsHash);
        if (run.done) {
          rows.push(run.done.row as Row);
          continue;
        }
        const head = new LinearHead(
          "head",
          d,
          vocab,
          kind.dropout,
          kind.fromWu ? { kind: "weights", weight, bias } : { kind: "random", seed },
        );
        const fit = await fitHead({
          config,
          reader,
          dir: run.dir,
          label: `baselines ${model} seed ${seed}`,
          head,
          lr: kind.lr,
          seed,
          features: raw,
          resume: options.resume ?? true,
        });
        head.dispose();
        const v = fit.validation;
        const row = { model, seed, val_ce: v.ce, val_ppl: v.perplexity, val_top1: v.top1 };
        rows.push(row);
        await run.finish({
          row,
          best: fit.train.best,
          steps: fit.train.steps,
          history: fit.train.history,
        });
      }
    }
    const table = await seedTable(`${config.run.dir}/baselines/metrics.arrow`, rows, [
      ...HEAD_METRICS,
    ]);
    return { rows, table };
  } finally {
    reader.close();
  }
}

if (import.meta.main) {
  await runMain(async (args) => {
    const { config } = await loadConfig(args);
    const { table } = await baselines(config);
    console.log(table);
  });
}
