// Tests for the configuration loader: malformed configs give a UserError naming the key, the bad
// value and what is allowed; layering is defaults < config.toml < flags; errors name where a
// value came from; the real CLI exits 1 with a one-line error. Run: deno test -A tests/config_test.ts

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { loadConfig, validateConfig } from "../core/config.ts";
import { UserError } from "../core/user_error.ts";

const ROOT = await Deno.makeTempDir({ prefix: "config_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(ROOT, { recursive: true }));
const REPO = fileURLToPath(new URL("..", import.meta.url));

/** Asserts `fn` throws (or rejects with) a UserError whose message contains every part. */
async function assertUserError(fn: () => unknown, parts: string[]): Promise<string> {
  let error: unknown = null;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  assert.ok(error !== null, `expected a UserError containing ${JSON.stringify(parts)}`);
  assert.ok(error instanceof UserError, `expected a UserError, got ${error}`);
  for (const part of parts) {
    assert.ok(
      error.message.includes(part),
      `message ${JSON.stringify(error.message)} lacks ${JSON.stringify(part)}`,
    );
  }
  return error.message;
}

/** Writes a TOML file in the temp dir and returns its path. */
async function tomlFile(name: string, text: string): Promise<string> {
  const path = `${ROOT}/${name}`;
  await Deno.writeTextFile(path, text);
  return path;
}

// Each case: a raw config, then the key, the bad value and the allowed values as they must appear.
const MALFORMED: Array<[string, unknown, string[]]> = [
  ["wrong type", { extract: { batch_size: "8" } }, [
    "[extract].batch_size",
    'got "8"',
    "expected a number",
  ]],
  ["float for an integer", { extract: { batch_size: 2.5 } }, [
    "[extract].batch_size",
    "got 2.5",
    "expected an integer",
  ]],
  ["below the minimum", { extract: { batch_size: 0 } }, [
    "[extract].batch_size",
    "got 0",
    "≥ 1",
  ]],
  ["above the maximum", { extract: { batch_size: 5000 } }, [
    "[extract].batch_size",
    "got 5000",
    "≤ 4096",
  ]],
  ["exclusive upper bound", { data: { val_fraction: 1 } }, [
    "[data].val_fraction",
    "got 1",
    "< 1",
  ]],
  ["unknown enum value", { data: { source: "parquet" } }, [
    "[data].source",
    '"parquet"',
    '"moby-dick", "sotu", "txt", "jsonl", "csv"',
  ]],
  ["boolean as a string", { extract: { add_bos: "yes" } }, [
    "[extract].add_bos",
    'got "yes"',
    "true or false",
  ]],
  ["unknown key in a section", { data: { source: "sotu", bogus: 1 } }, [
    "Unknown key [data].bogus",
    "source, path, text_column, label_column, val_fraction, split_seed, max_documents",
  ]],
  ["unknown section", { colour: { x: 1 } }, [
    "Unknown key [colour]",
    "run",
    "backbone",
    "data",
    "extract",
  ]],
  ["a section that is not a table", { run: "fast" }, [
    "[run]",
    'got "fast"',
    "a table",
  ]],
  ["judge equal to the model", { backbone: { model: "m/x", judge: "m/x" } }, [
    "[backbone].judge",
    'got "m/x"',
    "different model from [backbone].model",
  ]],
  ["txt source without a path", { data: { source: "txt" } }, [
    "[data].path",
    'got ""',
    'required when [data].source is "txt"',
  ]],
  ["stride above max_length", { extract: { max_length: 16, stride: 17 } }, [
    "[extract].stride",
    "got 17",
    "at most [extract].max_length (16)",
  ]],
  ["duplicate seeds", { run: { seeds: [4, 5, 4] } }, [
    "[run].seeds",
    "got [4,5,4]",
    "distinct seeds",
  ]],
  ["empty seeds", { run: { seeds: [] } }, [
    "[run].seeds",
    "got []",
    "at least 1 items",
  ]],
  ["negative seed", { run: { seeds: [0, -3] } }, [
    "[run].seeds.1",
    "got -3",
    "≥ 0",
  ]],
  ["empty run dir", { run: { dir: "" } }, [
    "[run].dir",
    'got ""',
    "at least 1 characters",
  ]],
];

for (const [name, raw, parts] of MALFORMED) {
  Deno.test(`validateConfig rejects ${name}`, async () => {
    await assertUserError(() => validateConfig(raw), parts);
  });
}

Deno.test("validateConfig fills every default of an empty config", () => {
  const c = validateConfig({});
  assert.equal(c.run.dir, "runs/default");
  assert.deepEqual(c.run.seeds, [0, 1, 2]);
  assert.equal(c.backbone.model, "backbones/tiny-gpt2");
  assert.equal(c.data.source, "moby-dick");
  assert.equal(c.extract.max_length, 128);
  assert.equal(c.extract.stride, 0);
  assert.equal(c.extract.batch_size, 8);
  assert.equal(c.extract.dtype, "float32");
});

Deno.test("loadConfig: a TOML syntax error names the file", async () => {
  const file = await tomlFile("broken.toml", "[extract]\nbatch_size = = 4\n");
  await assertUserError(() => loadConfig(["--config", file]), [`"${file}"`, "TOML"]);
});

Deno.test("loadConfig: --config of a missing file is an error naming it", async () => {
  const file = `${ROOT}/nowhere.toml`;
  await assertUserError(() => loadConfig([`--config=${file}`]), [`"${file}"`, "does not exist"]);
});

Deno.test("loadConfig: an unknown flag names it and the allowed flags", async () => {
  const empty = await tomlFile("empty.toml", "");
  await assertUserError(
    () => loadConfig(["--config", empty, "--fast"], ["force"]),
    ['"--fast"', "--config FILE", "--section.key=value", "--force"],
  );
});

Deno.test("loadConfig: a positional argument names it and the allowed flags", async () => {
  const empty = await tomlFile("empty.toml", "");
  await assertUserError(
    () => loadConfig(["--config", empty, "extract.toml"], ["force"]),
    ['"extract.toml"', "--config FILE", "--section.key=value", "--force"],
  );
});

Deno.test("loadConfig: a config flag without a value says how to give one", async () => {
  const empty = await tomlFile("empty.toml", "");
  await assertUserError(
    () => loadConfig(["--config", empty, "--extract.batch_size"]),
    ["--extract.batch_size", "--extract.batch_size=VALUE"],
  );
  // A value after a space is not taken: the flag still has none.
  await assertUserError(
    () => loadConfig(["--config", empty, "--extract.batch_size", "4"]),
    ["--extract.batch_size=VALUE"],
  );
});

Deno.test("loadConfig layers defaults < config file < flags", async () => {
  const file = await tomlFile(
    "layers.toml",
    [
      "[run]",
      'dir = "runs/from-file"',
      "[extract]",
      "batch_size = 4",
      "max_length = 64",
      "[data]",
      'source = "sotu"',
    ].join("\n"),
  );
  const { config, file: used, flags } = await loadConfig(
    [
      "--config",
      file,
      "--extract.batch_size=16",
      "--run.seeds=[7, 8, 9]",
      "--backbone.model=backbones/other",
      "--force",
    ],
    ["force"],
  );
  assert.equal(used, file);
  assert.deepEqual(flags, { force: true });
  assert.equal(config.extract.batch_size, 16, "flag beats file");
  assert.deepEqual(config.run.seeds, [7, 8, 9], "flag values are parsed as TOML");
  assert.equal(config.backbone.model, "backbones/other", "a non-TOML flag value is a string");
  assert.equal(config.extract.max_length, 64, "file beats default");
  assert.equal(config.run.dir, "runs/from-file");
  assert.equal(config.data.source, "sotu");
  assert.equal(config.extract.stride, 0, "default where neither sets it");
  assert.equal(config.data.val_fraction, 0.1);
});

Deno.test("loadConfig without --config and without config.toml uses the defaults", async () => {
  const here = Deno.cwd();
  const dir = await Deno.makeTempDir({ dir: ROOT });
  Deno.chdir(dir);
  try {
    const { config, file } = await loadConfig(["--extract.stride=3"]);
    assert.equal(file, null);
    assert.equal(config.extract.stride, 3);
    assert.equal(config.extract.max_length, 128);
    await assertUserError(
      () => loadConfig(["--extract.stride=1000"]),
      ["[extract].stride", "the command line", "got 1000"],
    );
  } finally {
    Deno.chdir(here);
  }
});

Deno.test("errors name where the bad value came from", async () => {
  const file = await tomlFile("origin.toml", "[extract]\nbatch_size = 0\n");
  // From the file.
  await assertUserError(
    () => loadConfig(["--config", file]),
    [`[extract].batch_size from "${file}"`, "got 0", "≥ 1"],
  );
  // The flag replaces the file's bad value with another bad one: now the command line is to blame.
  const msg = await assertUserError(
    () => loadConfig(["--config", file, "--extract.batch_size=-2"]),
    ["[extract].batch_size from the command line", "got -2"],
  );
  assert.ok(!msg.includes(file), msg);
  // A good flag fixes the file.
  const { config } = await loadConfig(["--config", file, "--extract.batch_size=2"]);
  assert.equal(config.extract.batch_size, 2);
  // A bad value from the file next to a flag in the same section is still the file's.
  const two = await tomlFile("origin2.toml", '[data]\nsource = "sotu"\nval_fraction = 2\n');
  await assertUserError(
    () => loadConfig(["--config", two, "--data.split_seed=3"]),
    [`[data].val_fraction from "${two}"`, "got 2"],
  );
  // Unknown keys too: from a flag, and from the file beside a flag of the same section.
  await assertUserError(
    () => loadConfig(["--config", two, "--data.val_fraction=0.5", "--data.colour=1"]),
    ["Unknown key [data].colour in the command line"],
  );
  const three = await tomlFile("origin3.toml", "[data]\ncolour = 1\n");
  await assertUserError(
    () => loadConfig(["--config", three, "--data.split_seed=3"]),
    [`Unknown key [data].colour in "${three}"`],
  );
});

Deno.test("the extract CLI exits 1 with a one-line error and writes nothing", async () => {
  const run = `${ROOT}/cli-run`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "stages/extract.ts", "--extract.batch_size=0", `--run.dir=${run}`],
    cwd: REPO,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 1, stderr);
  assert.ok(stderr.startsWith("error: "), stderr);
  assert.ok(stderr.includes("[extract].batch_size from the command line"), stderr);
  assert.ok(!/^\s+at /m.test(stderr), `stack trace in ${stderr}`);
  assert.equal(stderr.trim().split("\n").length, 1, stderr);
  assert.equal(new TextDecoder().decode(out.stdout), "");
  assert.equal(await Deno.stat(run).catch(() => null), null, "the run dir was created");
});
