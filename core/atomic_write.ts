/**
 * Atomic file writes: write a temporary sibling, then rename over the target, so a crash or
 * Ctrl-C leaves either the old file or the new one, never half of one.
 * @module
 */

/**
 * Write bytes or text to `path` atomically, creating parent folders.
 *
 * @param path Target path.
 * @param data File contents.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const dir = await Deno.makeTempDir();
 * await atomicWrite(`${dir}/a/b.txt`, "hello");
 * deepStrictEqual(await Deno.readTextFile(`${dir}/a/b.txt`), "hello");
 * ```
 */
export async function atomicWrite(
  path: string,
  data: string | Uint8Array,
): Promise<void> {
  const slash = path.lastIndexOf("/");
  if (slash > 0) await Deno.mkdir(path.slice(0, slash), { recursive: true });
  const tmp = `${path}.${Deno.pid}.tmp`;
  try {
    if (typeof data === "string") await Deno.writeTextFile(tmp, data);
    else await Deno.writeFile(tmp, data);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}
