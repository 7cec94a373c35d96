import { ok } from "node:assert/strict";
import { configTable } from "../core/config_table.ts";

/** Table rows as trimmed cells, so `deno fmt`'s column padding does not matter. */
function rows(markdown: string): string[] {
  return markdown.split("\n").filter((l) => l.startsWith("|")).map((l) =>
    l.split("|").map((c) => c.trim().replace(/^-+$/, "---")).join("|")
  );
}

Deno.test("README's configuration table is the one the schema generates", async () => {
  const readme = rows(await Deno.readTextFile(new URL("../README.md", import.meta.url)));
  const table = rows(configTable());
  const start = readme.indexOf(table[0]);
  ok(
    start >= 0 && readme.slice(start, start + table.length).join("\n") === table.join("\n"),
    "README.md's table is stale: paste the output of `deno run core/config_table.ts`",
  );
});

Deno.test("README starts with the pipeline and test commands that .ci/run uses", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const ci = await Deno.readTextFile(new URL("../.ci/run", import.meta.url));
  const head = readme.split("\n").slice(0, 6).join("\n");
  ok(head.includes("npx -y deno@2.9.6 task pipeline"));
  ok(head.includes("npx -y deno@2.9.6 task test"));
  ok(ci.includes("npx -y deno@2.9.6 task test"));
});
