/**
 * The shared body of the `sae` and `lcblm` stages: per seed, build the model, fit it with
 * {@link fitAutoencoder}, save its artifacts, and report every metric as mean ± 95% CI.
 * @module
 */
import type { Row } from "../core/arrow_table.ts";
import { atomicWrite } from "../core/atomic_write.ts";
import { selectBackend } from "../core/backends/select_backend.ts";
import { AUTOENCODER_METRICS, type Config } from "../core/config_schema.ts";
import type { EmbeddingsReader } from "../core/embeddings_store.ts";
import { encodeSafetensors, type NamedTensor } from "../core/train/safetensors.ts";
import { Standardizer } from "../core/train/standardizer.ts";
import { type Autoencoder, fitAutoencoder } from "./_fit_autoencoder.ts";
import { modelRun, openEmbeddings, seedTable } from "./_stage_io.ts";

/** A model family as the stage sees it. */
export interface AutoencoderFamily<M> {
  stage: string;
  /** Model name in tables and folders, e.g. "topk_sae". */
  name: string;
  /** The config section that determines the model (saved in the settings hash). */
  settings: unknown;
  lr: number;
  batchSize: number;
  epochs: number;
  /** Build the model for a seed from standardised training rows. */
  build(d: number, seed: number, sample: Float32Array, reader: EmbeddingsReader): M;
  adapt(model: M): Autoencoder;
  /** Weights for the final artifact. */
  tensors(model: M): Record<string, NamedTensor>;
  /** Extra files for the artifact folder (e.g. a SAELens export). */
  exports?(model: M, standardizer: Standardizer, dir: string, config: Config): Promise<void>;
  dispose(model: M): void;
}

/**
 * Run a training stage for one model family over all seeds.
 *
 * @param config Resolved configuration.
 * @param family The model family.
 * @param resume Continue interrupted trainings from their checkpoints.
 * @returns Rows (one per seed) and the printed table.
 */
export async function autoencoderStage<M>(
  config: Config,
  family: AutoencoderFamily<M>,
  resume = true,
): Promise<{ rows: Row[]; table: string }> {
  await selectBackend(config.train, console.error);
  const reader = await openEmbeddings(config);
  try {
    const d = reader.d;
    const { weight, bias } = reader.lmHead();
    const embeddingsHash = String(reader.attribute("config_hash"));
    const standardizer = Standardizer.fit(reader);
    const sampleRows = Math.min(reader.rows("train"), 8192);
    const sample = standardizer.apply(reader.read("train", 0, sampleRows).embeddings.slice());
    const rows: Row[] = [];
    for (const seed of config.run.seeds) {
      const settings = { family: family.settings, heads: config.heads, train: config.train };
      const run = await modelRun(config, family.stage, family.name, seed, settings, embeddingsHash);
      if (run.done) {
        rows.push(run.done.row as Row);
        continue;
      }
      const model = family.build(d, seed, sample, reader);
      try {
        const fit = await fitAutoencoder({
          config,
          reader,
          standardizer,
          lmHead: { weight, bias },
          dir: run.dir,
          label: `${family.stage} ${family.name} seed ${seed}`,
          model: family.adapt(model),
          lr: family.lr,
          batchSize: family.batchSize,
          epochs: family.epochs,
          seed,
          resume,
        });
        await atomicWrite(
          `${run.dir}/model.safetensors`,
          encodeSafetensors({ ...family.tensors(model), ...standardizer.toTensors() }),
        );
        await family.exports?.(model, standardizer, run.dir, config);
        const row = { model: family.name, seed, ...fit.metrics };
        rows.push(row);
        await run.finish({
          row,
          firing_histogram: fit.firing,
          best: fit.train.best,
          steps: fit.train.steps,
          history: fit.train.history,
        });
      } finally {
        family.dispose(model);
      }
    }
    const table = await seedTable(
      `${config.run.dir}/${family.stage}/metrics.arrow`,
      rows,
      [...AUTOENCODER_METRICS],
    );
    return { rows, table };
  } finally {
    reader.close();
  }
}
