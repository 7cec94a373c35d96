/**
 * Stage `sae` (SPEC section 3): train the configured SAE once per seed on standardised
 * embeddings, then a latents→vocab head (and optionally a head on reconstructions), and score
 * reconstruction through the original head. Latents are never stored: they are recomputed from
 * embeddings.h5. Each model also gets a SAELens export under `saelens/`.
 * @module
 */
import { atomicWrite } from "../core/atomic_write.ts";
import { loadConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { encodeSafetensors } from "../core/train/safetensors.ts";
import { runMain } from "../core/user_error.ts";
import { Sae } from "../models/sae.ts";
import { saeLensExport } from "../models/saelens_export.ts";
import { type AutoencoderFamily, autoencoderStage } from "./_autoencoder_stage.ts";

/** The SAE family for the shared stage body. */
export function saeFamily(config: Config): AutoencoderFamily<Sae> {
  const cfg = config.sae;
  return {
    stage: "sae",
    name: `${cfg.kind.replace("-", "_")}_sae`,
    settings: cfg,
    lr: cfg.lr,
    batchSize: cfg.batch_size,
    epochs: cfg.epochs,
    build: (d, seed, sample) => new Sae(d, cfg, seed, sample),
    adapt: (sae) => ({
      latents: sae.m,
      headWidth: sae.m,
      variables: () => sae.variables(),
      trainStep: (x, adam) => sae.trainStep(x, adam),
      reconstruct: (x) => sae.forward(x, { training: false }).xHat,
      activations: (x) => sae.denseLatents(x),
      headInputs: (x) => sae.denseLatents(x),
      extraState: {
        save: () => ({ tokens_since_fired: sae.toTensors().tokens_since_fired }),
        load: (t) => sae.loadTensors({ ...sae.toTensors(), ...t }),
      },
    }),
    tensors: (sae) => sae.toTensors(),
    async exports(sae, standardizer, dir, config) {
      const t = sae.toTensors();
      const f = (name: string) => t[name].data as Float32Array;
      const out = saeLensExport(
        { we: f("W_e"), be: f("b_e"), wd: f("W_d"), b: f("b") },
        standardizer,
        cfg,
        {
          modelName: config.backbone.model,
          contextSize: config.extract.max_length,
          prependBos: config.extract.add_bos,
          dataset: config.data.path || config.data.source,
        },
      );
      await atomicWrite(`${dir}/saelens/cfg.json`, JSON.stringify(out.cfg, null, 2));
      await atomicWrite(`${dir}/saelens/sae_weights.safetensors`, encodeSafetensors(out.tensors));
    },
    dispose: (sae) => sae.dispose(),
  };
}

if (import.meta.main) {
  await runMain(async (args) => {
    const { config } = await loadConfig(args);
    const { table } = await autoencoderStage(config, saeFamily(config));
    console.log(table);
  });
}
