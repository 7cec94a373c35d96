/**
 * Task `backbones`: build the offline models (tokenizer + ONNX graph) that the config names.
 * A model named `backbones/<recipe>` with a recipe in {@link OFFLINE_BACKBONES} is built there
 * when missing or out of date; any other model (a Hub id, your own folder) is left alone.
 * Deterministic: the same recipe always gives the same files.
 * @module
 */
import {
  buildOfflineBackbone,
  OFFLINE_BACKBONES,
  OFFLINE_ROOT,
  offlineRecipeName,
} from "../backbone/offline_backbones.ts";
import { loadConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { runMain } from "../core/user_error.ts";

/**
 * Build the offline models the configuration uses (or all of them).
 *
 * @param config Resolved configuration.
 * @param all Build every recipe, not only the configured ones.
 * @returns The folders built now.
 */
export async function buildBackbones(config: Config, all = false): Promise<string[]> {
  const wanted = all
    ? Object.keys(OFFLINE_BACKBONES).map((name) => `${OFFLINE_ROOT}/${name}`)
    : [config.backbone.model, config.backbone.judge];
  const built = [];
  for (const dir of wanted) {
    const name = offlineRecipeName(dir);
    if (name === null) continue;
    if (await buildOfflineBackbone(name, dir)) {
      built.push(dir);
      console.error(`backbones: built ${dir} (${OFFLINE_BACKBONES[name].purpose})`);
    }
  }
  return built;
}

if (import.meta.main) {
  await runMain(async (args) => {
    const { config, flags } = await loadConfig(args, ["all"]);
    const built = await buildBackbones(config, flags.all === true);
    console.log(
      `backbones: built ${built.length === 0 ? "nothing (up to date)" : built.join(", ")}`,
    );
  });
}
