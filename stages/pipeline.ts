/**
 * Task `pipeline`: every stage in order on one configuration, skipping finished work.
 * Stages resume on their own, so a killed pipeline continues where it stopped.
 * @module
 */
import { loadConfig } from "../core/config.ts";
import { runMain } from "../core/user_error.ts";
import { autoencoderStage } from "./_autoencoder_stage.ts";
import { buildBackbones } from "./backbones.ts";
import { baselines } from "./baselines.ts";
import { concepts } from "./concepts.ts";
import { extract } from "./extract.ts";
import { intervene } from "./intervene.ts";
import { lcblmFamily } from "./lcblm.ts";
import { perplexity } from "./perplexity.ts";
import { report } from "./report.ts";
import { saeFamily } from "./sae.ts";

if (import.meta.main) {
  await runMain(async (args) => {
    const { config, flags } = await loadConfig(args, ["force"]);
    const started = performance.now();
    await buildBackbones(config);
    const s = await extract(config, { force: flags.force === true });
    const counts = Object.entries(s.tokens).map(([k, v]) => `${k} ${v}`).join(", ");
    console.log(`pipeline: extract -> ${s.path} (d=${s.d}, tokens ${counts})`);
    console.log(`\n${(await baselines(config)).table}`);
    console.log(`\n${(await autoencoderStage(config, saeFamily(config))).table}`);
    console.log(`\n${(await autoencoderStage(config, lcblmFamily(config))).table}`);
    console.log(`\n${(await perplexity(config)).table}`);
    console.log(`\n${(await concepts(config)).table}`);
    console.log(`\n${(await intervene(config)).table}`);
    console.log(`\npipeline: report -> ${(await report(config)).path}`);
    console.log(`pipeline: done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  });
}
