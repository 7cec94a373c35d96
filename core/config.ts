/**
 * Load, layer and validate the configuration: schema defaults < config.toml < flags.
 * @module
 */
import { parseArgs } from "node:util";
import { parse as parseToml, stringify as stringifyToml } from "smol-toml";
import type { z } from "zod";
import { type Config, ConfigSchema } from "./config_schema.ts";
import { checkSweepSpace } from "./sweep_space.ts";
import { UserError } from "./user_error.ts";

/** A loaded configuration and where it came from. */
export interface LoadedConfig {
  config: Config;
  /** The config file read, or null when none exists and the defaults were used. */
  file: string | null;
  /** Stage flags that are not config overrides (e.g. `--resume`). */
  flags: Record<string, string | boolean>;
}

type Raw = Record<string, unknown>;

/**
 * Parse a stage's command line and load its configuration.
 *
 * Accepts `--config FILE` (default `config.toml`; a missing default file means "all defaults",
 * a missing named file is an error), `--section.key=value` overrides (values parsed as TOML,
 * falling back to a plain string), and the stage's own boolean flags.
 *
 * @param args Command-line arguments.
 * @param stageFlags Boolean flags the stage accepts besides config overrides.
 * @returns The validated configuration.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const { config } = await loadConfig(["--extract.batch_size=4"]);
 * deepStrictEqual(config.extract.batch_size, 4);
 * ```
 */
export async function loadConfig(
  args: string[],
  stageFlags: string[] = [],
): Promise<LoadedConfig> {
  const { values, tokens } = parseArgs({
    args,
    strict: false,
    tokens: true,
    options: { config: { type: "string" } },
  });
  const flags: Record<string, string | boolean> = {};
  const overrides: Array<{ path: string[]; text: string }> = [];
  const allowed = ["--config FILE", "--section.key=value", ...stageFlags.map((f) => `--${f}`)];
  for (const t of tokens ?? []) {
    if (t.kind === "positional") {
      throw new UserError(`Unexpected argument "${t.value}": allowed are ${allowed.join(", ")}`);
    }
    if (t.kind !== "option" || t.name === "config") continue;
    if (t.name.includes(".")) {
      if (t.value === undefined) {
        throw new UserError(
          `Flag --${t.name} needs a value: write --${t.name}=VALUE`,
        );
      }
      overrides.push({ path: t.name.split("."), text: t.value });
    } else if (stageFlags.includes(t.name)) {
      flags[t.name] = t.value ?? true;
    } else {
      throw new UserError(
        `Unknown flag "--${t.name}": allowed are ${allowed.join(", ")}`,
      );
    }
  }
  const named = typeof values.config === "string" ? values.config : null;
  const file = named ?? "config.toml";
  const raw = await readToml(file, named !== null);
  const fromFlags = new Set<string>();
  for (const { path, text } of overrides) {
    setPath(raw.data, path, parseValue(text));
    fromFlags.add(path.join("."));
  }
  const fromFlag = (key: string) =>
    [...fromFlags].some((f) => f === key || f.startsWith(`${key}.`));
  const origin = (path: PropertyKey[]) =>
    fromFlag(path.join(".")) ? "the command line" : raw.exists ? `"${file}"` : "the defaults";
  return {
    config: validateConfig(raw.data, origin),
    file: raw.exists ? file : null,
    flags,
  };
}

/**
 * Validate a raw config object against the schema.
 *
 * @param raw Parsed TOML (possibly with overrides applied).
 * @param origin Names where a key's value came from, for error messages.
 * @returns The resolved configuration with every default filled in.
 * @throws {UserError} Naming the key, the bad value and what is allowed.
 */
export function validateConfig(
  raw: unknown,
  origin: (path: PropertyKey[]) => string = () => "the configuration",
): Config {
  const result = ConfigSchema.safeParse(raw, { reportInput: true });
  if (result.success) return checkSweepSpace(result.data, origin);
  const lines = result.error.issues.map((issue) => describeIssue(issue, origin));
  throw new UserError(lines.join("\n"));
}

/** Serialise a resolved configuration as TOML (saved beside every artifact). */
export function configToToml(config: Config): string {
  return stringifyToml(config);
}

async function readToml(
  file: string,
  mustExist: boolean,
): Promise<{ data: Raw; exists: boolean }> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound && !mustExist) {
      return { data: {}, exists: false };
    }
    if (e instanceof Deno.errors.NotFound) {
      throw new UserError(`Cannot read config "${file}": it does not exist`);
    }
    throw new UserError(
      `Cannot read config "${file}": ${(e as Error).message}`,
    );
  }
  try {
    return { data: parseToml(text) as Raw, exists: true };
  } catch (e) {
    throw new UserError(
      `Cannot parse "${file}" as TOML: ${(e as Error).message}`,
    );
  }
}

function parseValue(text: string): unknown {
  try {
    return parseToml(`v = ${text}`).v;
  } catch {
    return text;
  }
}

function setPath(target: Raw, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    if (typeof node[key] !== "object" || node[key] === null) node[key] = {};
    node = node[key] as Raw;
  }
  node[path[path.length - 1]] = value;
}

function keyName(path: PropertyKey[]): string {
  const [section, ...rest] = path.map(String);
  return rest.length === 0 ? `[${section}]` : `[${section}].${rest.join(".")}`;
}

function show(value: unknown): string {
  if (value === undefined) return "nothing";
  const text = JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function describeIssue(
  issue: z.core.$ZodIssue,
  origin: (path: PropertyKey[]) => string,
): string {
  const where = origin(issue.path);
  if (issue.code === "unrecognized_keys") {
    const parent = issue.path.length === 0 ? "top level" : keyName(issue.path);
    return issue.keys.map((k) => {
      const name = issue.path.length === 0 ? `[${k}]` : `${keyName([...issue.path, k])}`;
      const allowed = allowedKeys(issue.path);
      const from = origin([...issue.path, k]);
      return `Unknown key ${name} in ${from}: allowed at ${parent} are ${allowed.join(", ")}`;
    }).join("\n");
  }
  const got = `got ${show(issue.input)}`;
  const head = `Cannot use ${keyName(issue.path)} from ${where}:`;
  switch (issue.code) {
    case "invalid_type":
      return issue.input === undefined
        ? `${head} expected a value of type ${issue.expected}, got nothing`
        : `${head} expected ${article(issue.expected)}, ${got}`;
    case "invalid_value":
      return `${head} expected one of ${
        issue.values.map((v) => JSON.stringify(v)).join(", ")
      }, ${got}`;
    case "too_small":
      return `${head} expected ${bound(issue.origin, ">", issue.minimum, issue.inclusive)}, ${got}`;
    case "too_big":
      return `${head} expected ${bound(issue.origin, "<", issue.maximum, issue.inclusive)}, ${got}`;
    default:
      return `${head} ${issue.message}, ${got}`;
  }
}

function article(expected: string): string {
  const names: Record<string, string> = {
    int: "an integer",
    number: "a number",
    string: "a string",
    boolean: "true or false",
    array: "an array",
    object: "a table",
  };
  return names[expected] ?? expected;
}

function bound(
  kind: string,
  dir: "<" | ">",
  limit: unknown,
  inclusive?: boolean,
): string {
  const op = dir === ">" ? (inclusive ? "≥" : ">") : (inclusive ? "≤" : "<");
  if (kind === "array") {
    return `an array with ${dir === ">" ? "at least" : "at most"} ${limit} items`;
  }
  if (kind === "string") {
    return `a string of ${dir === ">" ? "at least" : "at most"} ${limit} characters`;
  }
  return `a number ${op} ${limit}`;
}

function allowedKeys(path: PropertyKey[]): string[] {
  // deno-lint-ignore no-explicit-any
  let schema: any = ConfigSchema;
  for (const key of path) {
    schema = unwrap(schema).shape[key as string];
  }
  return Object.keys(unwrap(schema).shape);
}

// deno-lint-ignore no-explicit-any
function unwrap(schema: any): any {
  while (!schema.shape && schema.def?.innerType) schema = schema.def.innerType;
  while (!schema.shape && schema.def?.in) schema = schema.def.in;
  return schema;
}
