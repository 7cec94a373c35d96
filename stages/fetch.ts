/**
 * Task `fetch`: download Hub models named in the config into `[backbone].cache_dir`, so that
 * every other stage runs offline. The only task with network access (to the Hub host only).
 * @module
 */
import { AutoModelForCausalLM, AutoTokenizer, env } from "@huggingface/transformers";
import { HUB_ID, resolveModelDir } from "../backbone/load_backbone.ts";
import { offlineRecipeName } from "../backbone/offline_backbones.ts";
import { loadConfig } from "../core/config.ts";
import type { Config } from "../core/config_schema.ts";
import { runMain, UserError } from "../core/user_error.ts";

/**
 * Download the configured backbone and judge when they are Hub ids not yet in the cache.
 *
 * @param config Resolved configuration.
 * @returns The local folders of the fetched models.
 */
export async function fetchModels(config: Config): Promise<string[]> {
  const { model, judge, allow_remote, cache_dir, hub_url } = config.backbone;
  const fetched = [];
  for (const id of [model, judge]) {
    if (offlineRecipeName(id) !== null || await Deno.stat(id).catch(() => null)) continue;
    if (!HUB_ID.test(id)) {
      throw new UserError(
        `Cannot fetch "${id}": it is neither a local folder nor a Hub id of the form "org/name"`,
      );
    }
    if (await resolveModelDir(id, cache_dir).catch(() => null)) continue;
    if (!allow_remote) {
      throw new UserError(
        `Cannot fetch "${id}": [backbone].allow_remote is false; set it to true to download from ${hub_url}`,
      );
    }
    env.allowRemoteModels = true;
    env.allowLocalModels = false;
    env.useBrowserCache = false; // Deno has a Web Cache API; files must land in cache_dir
    env.useFSCache = true;
    env.cacheDir = cache_dir;
    env.remoteHost = hub_url;
    const progress = (p: { status: string; file?: string; progress?: number }) => {
      if (p.status === "done" && p.file) console.error(`fetch: ${id}/${p.file}`);
    };
    try {
      await AutoTokenizer.from_pretrained(id, { progress_callback: progress });
      const m = await AutoModelForCausalLM.from_pretrained(id, {
        dtype: "fp32",
        device: "cpu",
        progress_callback: progress,
      });
      await m.dispose();
    } catch (e) {
      throw new UserError(`Cannot fetch "${id}" from ${hub_url}: ${(e as Error).message}`);
    }
    fetched.push(await resolveModelDir(id, cache_dir));
  }
  return fetched;
}

if (import.meta.main) {
  await runMain(async (args) => {
    const { config } = await loadConfig(args);
    const fetched = await fetchModels(config);
    console.log(`fetch: ${fetched.length === 0 ? "nothing to fetch" : fetched.join(", ")}`);
  });
}
