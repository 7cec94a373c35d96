/**
 * Check a `[sweep.space]` against the configuration schema itself: every swept key must exist
 * and matter to the swept stage, and both ends of every range, a point inside it, and every
 * choice must be values the schema accepts for that key. Runs inside `validateConfig`, so a bad
 * space stops any stage before it starts.
 * @module
 */
import { validateConfig } from "./config.ts";
import type { Config } from "./config_schema.ts";
import { UserError } from "./user_error.ts";

/** Config sections a stage's trials may vary (others would change the shared embeddings). */
const SWEEPABLE_SECTIONS: Readonly<Record<Config["sweep"]["stage"], readonly string[]>> = Object
  .freeze({
    sae: ["sae", "heads", "train"],
    lcblm: ["lcblm", "heads", "train"],
    baselines: ["heads", "train"],
  });

/**
 * Validate the search space of a resolved configuration.
 *
 * @param config A configuration that passed the schema.
 * @param origin Names where a key's value came from, for error messages.
 * @returns The same configuration.
 * @throws {UserError} One line per bad key, naming it, the bad value and what is allowed.
 * @example
 * ```ts
 * import { throws } from "node:assert";
 * import { validateConfig } from "./config.ts";
 * throws(
 *   () => validateConfig({ sweep: { space: { sae: { k: { int: [0, 8] } } } } }),
 *   /\[sweep\]\.space\.sae\.k .*lower bound 0 .*expected a number ≥ 1/,
 * );
 * ```
 */
export function checkSweepSpace(
  config: Config,
  origin: (path: PropertyKey[]) => string = () => "the configuration",
): Config {
  const { sweep, ...base } = config;
  const errors: string[] = [];
  const sections = SWEEPABLE_SECTIONS[sweep.stage];
  for (const [section, keys] of Object.entries(sweep.space)) {
    for (const [key, dist] of Object.entries(keys)) {
      const head = `Cannot use [sweep].space.${section}.${key} from ${
        origin(["sweep", "space", section, key])
      }:`;
      const known = (base as Record<string, Record<string, unknown>>)[section];
      if (known === undefined || !(key in known)) {
        const hint = known === undefined
          ? `sections are ${sections.map((s) => `[${s}]`).join(", ")}`
          : `keys of [${section}] are ${Object.keys(known).join(", ")}`;
        errors.push(`${head} there is no key [${section}].${key}; ${hint}`);
        continue;
      }
      if (!sections.includes(section)) {
        errors.push(
          `${head} [${section}] does not vary in stage "${sweep.stage}" trials; sweep keys of ${
            sections.map((s) => `[${s}]`).join(", ")
          }`,
        );
        continue;
      }
      for (const [label, value] of candidates(dist)) {
        const problem = rejects(base, section, key, value);
        if (problem) errors.push(`${head} ${label} ${JSON.stringify(value)} ${problem}`);
      }
    }
  }
  if (errors.length > 0) throw new UserError(errors.join("\n"));
  return config;
}

type Distribution = Config["sweep"]["space"][string][string];

/** The values to try: both ends and an inner point of a range, or every choice. */
function candidates(dist: Distribution): Array<[string, unknown]> {
  if (dist.choice) return dist.choice.map((v) => ["the choice", v]);
  const [kind, range] = Object.entries(dist).find(([, v]) => v !== undefined) as [
    string,
    [number, number],
  ];
  const [a, b] = range;
  const out: Array<[string, unknown]> = [["the lower bound", a], ["the upper bound", b]];
  // An irrational fraction of the way in: catches ranges over integer keys (sampled fractions).
  const t = 1 / Math.PI;
  if (kind === "uniform" && b > a) out.push(["the inner value", a + (b - a) * t]);
  if (kind === "log_uniform" && b > a) out.push(["the inner value", a * (b / a) ** t]);
  return out;
}

/** Why the schema refuses `value` at `section.key` of the base config, or null. */
function rejects(base: object, section: string, key: string, value: unknown): string | null {
  const candidate = structuredClone(base) as Record<string, Record<string, unknown>>;
  candidate[section][key] = value;
  try {
    validateConfig(candidate, () => "the sweep");
    return null;
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    const own = `[${section}].${key}`;
    return e.message.split("\n").map((line) => {
      const m = /^Cannot use (\S+) from the sweep: (.*)$/.exec(line);
      if (!m) return `is not allowed: ${line}`;
      return m[1] === own ? `is not allowed: ${m[2]}` : `is not allowed with ${m[1]}: ${m[2]}`;
    }).join("; ");
  }
}
