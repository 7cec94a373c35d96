/**
 * Task `backbones`: build the offline models (tokenizer + ONNX graph) under `backbones/`.
 * Deterministic: the same recipe always gives the same files.
 * @module
 */
import {
  buildOfflineBackbone,
  OFFLINE_BACKBONES,
} from "../backbone/offline_backbones.ts";
import { runMain } from "../core/user_error.ts";

/**
 * Build every offline model that is missing or out of date.
 *
 * @param root Folder that receives one subfolder per model.
 * @returns The names of the models built now.
 */
export async function buildBackbones(root = "backbones"): Promise<string[]> {
  const built = [];
  for (const [name, recipe] of Object.entries(OFFLINE_BACKBONES)) {
    if (await buildOfflineBackbone(name, `${root}/${name}`)) {
      built.push(name);
      console.error(`backbones: built ${root}/${name} (${recipe.purpose})`);
    }
  }
  return built;
}

if (import.meta.main) {
  await runMain(async () => {
    const built = await buildBackbones();
    console.log(
      `backbones: ${built.length} built, ${
        Object.keys(OFFLINE_BACKBONES).length - built.length
      } up to date`,
    );
  });
}
