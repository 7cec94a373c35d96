import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { buildOfflineBackbone } from "../backbone/offline_backbones.ts";
import { loadBackbone } from "../backbone/load_backbone.ts";
import { validateConfig } from "../core/config.ts";
import { UserError } from "../core/user_error.ts";
import { fetchModels } from "../stages/fetch.ts";

const FILES = [
  "config.json",
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "onnx/model.onnx",
];

/** A Hub double on 127.0.0.1 serving one model folder at /{id}/resolve/main/{file}. */
function serveHub(id: string, dir: string) {
  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    requests.push(path);
    const prefix = `/${id}/resolve/main/`;
    if (!path.startsWith(prefix)) return new Response("not found", { status: 404 });
    try {
      return new Response(await Deno.readFile(`${dir}/${path.slice(prefix.length)}`));
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return { server, requests, url: `http://127.0.0.1:${server.addr.port}/` };
}

Deno.test("fetch downloads a Hub model over HTTP into the cache, then loads it offline", async () => {
  const tmp = await Deno.makeTempDir();
  const source = `${tmp}/source`;
  await buildOfflineBackbone("tiny-gpt2-test", source);
  const hub = serveHub("lcblm/tiny-test", source);
  try {
    const config = validateConfig({
      backbone: {
        model: "lcblm/tiny-test",
        judge: `${source}`,
        allow_remote: true,
        cache_dir: `${tmp}/hub`,
        hub_url: hub.url,
      },
    });
    const fetched = await fetchModels(config);
    deepStrictEqual(fetched, [await Deno.realPath(`${tmp}/hub/lcblm/tiny-test`)]);
    for (const f of FILES) {
      deepStrictEqual(
        await Deno.readFile(`${tmp}/hub/lcblm/tiny-test/${f}`),
        await Deno.readFile(`${source}/${f}`),
        f,
      );
    }
    ok(hub.requests.includes("/lcblm/tiny-test/resolve/main/onnx/model.onnx"));
    // A second fetch finds the cache and sends nothing.
    const before = hub.requests.length;
    deepStrictEqual(await fetchModels(config), []);
    deepStrictEqual(hub.requests.length, before);
    const backbone = await loadBackbone("lcblm/tiny-test", {
      cacheDir: `${tmp}/hub`,
      workDir: `${tmp}/work`,
    });
    deepStrictEqual(backbone.d, 32);
    // decode: the inverse of encode, and an empty generation (EOS first) is the empty text.
    deepStrictEqual(backbone.decode(backbone.encode("Call me Ishmael.")), "Call me Ishmael.");
    deepStrictEqual(backbone.decode([]), "");
    await backbone.dispose();
  } finally {
    await hub.server.shutdown();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("fetch refuses without allow_remote and reports a missing Hub model", async () => {
  const tmp = await Deno.makeTempDir();
  const hub = serveHub("lcblm/exists", tmp);
  try {
    const base = { judge: tmp, cache_dir: `${tmp}/hub`, hub_url: hub.url };
    await rejects(
      fetchModels(validateConfig({ backbone: { ...base, model: "lcblm/none" } })),
      (e: Error) => e instanceof UserError && /allow_remote is false/.test(e.message),
    );
    deepStrictEqual(hub.requests, []);
    await rejects(
      fetchModels(
        validateConfig({ backbone: { ...base, model: "lcblm/none", allow_remote: true } }),
      ),
      (e: Error) => e instanceof UserError && /Cannot fetch "lcblm\/none"/.test(e.message),
    );
    ok(hub.requests.length > 0);
  } finally {
    await hub.server.shutdown();
    await Deno.remove(tmp, { recursive: true });
  }
});
