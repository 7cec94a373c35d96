/**
 * The README's configuration table, derived from the schema so the two never drift apart.
 * @module
 */
import z from "zod";
import { ConfigSchema } from "./config_schema.ts";

type JsonSchema = {
  type?: string;
  enum?: unknown[];
  default?: unknown;
  description?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
};

/**
 * Render every config key as a Markdown table row: key, default, allowed values, doc.
 *
 * @returns The table, header included.
 * @example
 * ```ts
 * import { ok } from "node:assert";
 * ok(configTable().includes("| `[extract].max_length` | `128` |"));
 * ```
 */
export function configTable(): string {
  const root = z.toJSONSchema(ConfigSchema, { io: "input" }) as JsonSchema;
  const rows = ["| key | default | allowed | meaning |", "| --- | --- | --- | --- |"];
  for (const [section, sectionSchema] of Object.entries(root.properties ?? {})) {
    for (const [key, s] of Object.entries(sectionSchema.properties ?? {})) {
      const cells = [
        `\`[${section}].${key}\``,
        `\`${JSON.stringify(s.default)}\``,
        allowed(s),
        s.description ?? "",
      ];
      rows.push(`| ${cells.join(" | ")} |`);
    }
  }
  return rows.join("\n");
}

function allowed(s: JsonSchema): string {
  if (s.enum) return s.enum.map((v) => `\`${JSON.stringify(v)}\``).join(", ");
  if (s.type === "array") return `list of ${allowed(s.items ?? {})}`;
  const bounds = [];
  if (s.minimum !== undefined) bounds.push(`≥ ${s.minimum}`);
  if (s.exclusiveMinimum !== undefined) bounds.push(`> ${s.exclusiveMinimum}`);
  if (s.maximum !== undefined && s.maximum < Number.MAX_SAFE_INTEGER) bounds.push(`≤ ${s.maximum}`);
  if (s.exclusiveMaximum !== undefined) bounds.push(`< ${s.exclusiveMaximum}`);
  const type = s.type === "integer" ? "integer" : s.type ?? "";
  return [type, ...bounds].join(" ");
}

if (import.meta.main) console.log(configTable());
