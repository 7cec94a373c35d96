// Tests of `deno task sweep`: sampling distributions (seeded, within bounds, log-uniform's log
// uniform, integers inclusive), search-space validation by the config schema, resume (finished
// trials are not re-run), failing trials recorded while the sweep continues, a 6-trial SAE sweep
// on the < 1 MB test model, and `--workers 2` as real processes.
// Run: deno test -A tests/sweep_test.ts

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { buildOfflineBackbone } from "../backbone/offline_backbones.ts";
import { readArrowTable, type Row } from "../core/arrow_table.ts";
import { loadConfig, validateConfig } from "../core/config.ts";
import {
  AUTOENCODER_METRICS,
  type Config,
  HEAD_METRICS,
  SWEEP_OBJECTIVES,
} from "../core/config_schema.ts";
import { DivergedError } from "../core/train/train_loop.ts";
import { UserError } from "../core/user_error.ts";
import { sampleTrials, sampleValue } from "../eval/sweep_sampling.ts";
import { extract } from "../stages/extract.ts";
import { sweep } from "../stages/sweep.ts";

const ROOT = await Deno.makeTempDir({ prefix: "sweep_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(ROOT, { recursive: true }));
const quiet = () => {};

// ---------------------------------------------------------------------------------------------
// Sampling

/** n draws of one distribution through the real sampler (trial numbers 0..n-1). */
const draws = (dist: Record<string, unknown>, n: number, seed = 1) =>
  sampleTrials({ x: { y: dist } } as Config["sweep"]["space"], n, seed).map((t) => t["x.y"]);

Deno.test("sampling: same seed same trials, another seed others; earlier trials kept", () => {
  const space = {
    sae: {
      lr: { log_uniform: [1e-5, 1e-2] },
      k: { int: [4, 64] },
      kind: { choice: ["topk", "relu-l1"] },
    },
  } as Config["sweep"]["space"];
  assert.deepEqual(sampleTrials(space, 20, 3), sampleTrials(space, 20, 3));
  assert.notDeepEqual(sampleTrials(space, 20, 3), sampleTrials(space, 20, 4));
  assert.deepEqual(sampleTrials(space, 30, 3).slice(0, 20), sampleTrials(space, 20, 3));
  // Adding a key leaves the other keys' values alone.
  const more = { sae: { ...space.sae, l1: { uniform: [0, 1] } } } as Config["sweep"]["space"];
  assert.deepEqual(
    sampleTrials(more, 5, 3).map((t) => t["sae.lr"]),
    sampleTrials(space, 5, 3).map((t) => t["sae.lr"]),
  );
});

Deno.test("sampling: uniform within bounds with the right mean; choice uniform", () => {
  const u = draws({ uniform: [-2, 6] }, 4000) as number[];
  assert.ok(u.every((v) => v >= -2 && v <= 6));
  const mean = u.reduce((a, b) => a + b, 0) / u.length;
  assert.ok(Math.abs(mean - 2) < 0.15, `mean ${mean}`); // sd of the mean ≈ 2.31/√4000 = 0.037
  const c = draws({ choice: ["a", 7, true] }, 3000);
  for (const v of ["a", 7, true]) {
    const share = c.filter((x) => x === v).length / c.length;
    assert.ok(Math.abs(share - 1 / 3) < 0.04, `${v}: ${share}`);
  }
});

Deno.test("sampling: log-uniform's log is uniform (bucket counts and KS distance)", () => {
  const n = 5000;
  const v = draws({ log_uniform: [1e-5, 1e-1] }, n) as number[];
  assert.ok(v.every((x) => x >= 1e-5 && x <= 1e-1));
  // Four decades, equally likely: each holds n/4 (sd √(n·¼·¾) ≈ 31).
  const decades = [0, 0, 0, 0];
  for (const x of v) decades[Math.min(3, Math.floor(Math.log10(x) + 5))]++;
  for (const count of decades) assert.ok(Math.abs(count - n / 4) < 150, `decades ${decades}`);
  // Kolmogorov–Smirnov on t = (log x − log a)/(log b − log a) against U(0, 1): 1.63/√n is the
  // 1% critical value.
  const t = v.map((x) => (Math.log(x) - Math.log(1e-5)) / Math.log(1e4)).sort((a, b) => a - b);
  const ks = Math.max(...t.map((x, i) => Math.max((i + 1) / n - x, x - i / n)));
  assert.ok(ks < 1.63 / Math.sqrt(n), `KS ${ks}`);
  // A plain uniform on the same range fails the same test: it is nearly all in the top decade.
  const plain = draws({ uniform: [1e-5, 1e-1] }, n) as number[];
  assert.ok(plain.filter((x) => x >= 1e-2).length > 0.85 * n);
});

Deno.test("sampling: integers inclusive of both ends; log_int favours small values", () => {
  const ints = draws({ int: [3, 7] }, 2500) as number[];
  assert.ok(ints.every((v) => Number.isInteger(v) && v >= 3 && v <= 7));
  for (let k = 3; k <= 7; k++) {
    const share = ints.filter((v) => v === k).length / ints.length;
    assert.ok(Math.abs(share - 0.2) < 0.035, `${k}: ${share}`);
  }
  const logs = draws({ log_int: [1, 8] }, 4000) as number[];
  assert.ok(logs.every((v) => Number.isInteger(v) && v >= 1 && v <= 8));
  // P(i) = ln((i+1)/i) / ln 9: 1 → 0.315, 8 → 0.054.
  const share = (k: number) => logs.filter((v) => v === k).length / logs.length;
  assert.ok(Math.abs(share(1) - Math.log(2) / Math.log(9)) < 0.03, `1: ${share(1)}`);
  assert.ok(Math.abs(share(8) - Math.log(9 / 8) / Math.log(9)) < 0.02, `8: ${share(8)}`);
  // The extreme uniforms land on the ends.
  assert.equal(sampleValue({ int: [3, 7] }, 0), 3);
  assert.equal(sampleValue({ int: [3, 7] }, 1 - 2 ** -32), 7);
  assert.equal(sampleValue({ log_int: [2, 50] }, 1 - 2 ** -32), 50);
});

// ---------------------------------------------------------------------------------------------
// Validation of the search space by the config schema

const spaceError = (space: unknown, raw: Record<string, Record<string, unknown>> = {}) => {
  try {
    validateConfig({ ...raw, sweep: { space, ...raw.sweep } });
  } catch (e) {
    assert.ok(e instanceof UserError, String(e));
    return e.message;
  }
  assert.fail(`accepted ${JSON.stringify(space)}`);
};

Deno.test("space validation: bad keys, ranges and choices name the key and what is allowed", () => {
  const cases: Array<[unknown, string[]]> = [
    [{ sae: { kk: { int: [1, 8] } } }, ["[sweep].space.sae.kk", "no key [sae].kk", "k_aux"]],
    [{ nope: { lr: { uniform: [0, 1] } } }, ["[sweep].space.nope.lr", "sections are [sae]"]],
    [{ sae: { k: { int: [0, 8] } } }, ["[sweep].space.sae.k", "lower bound 0", "≥ 1"]],
    [{ sae: { expansion: { int: [2, 300] } } }, ["sae.expansion", "upper bound 300", "≤ 256"]],
    [{ sae: { kind: { choice: ["topk", "gated"] } } }, ['choice "gated"', '"relu-l1"']],
    [{ sae: { lr: { log_uniform: [0, 1e-2] } } }, ["sae.lr.log_uniform", "bounds > 0"]],
    [{ sae: { lr: { log_uniform: [-1, 1e-2] } } }, ["sae.lr.log_uniform", "bounds > 0"]],
    [{ sae: { k: { log_int: [0, 8] } } }, ["sae.k.log_int", "bounds ≥ 1"]],
    [{ sae: { lr: { uniform: [1e-2, 1e-4] } } }, ["sae.lr.uniform", "lower ≤ upper"]],
    [{ sae: { k: { uniform: [2, 9] } } }, ["sae.k", "inner value", "expected an integer"]],
    [{ sae: { k: { int: [2.5, 9] } } }, ["sae.k.int", "integer bounds"]],
    [{ sae: { k: { int: [2, 9], choice: [4] } } }, ["sae.k", "exactly one of"]],
    [{ sae: { l1: { gaussian: [0, 1] } } }, ["sae.l1", "gaussian"]],
    [{ lcblm: { lr: { uniform: [0.1, 0.2] } } }, ["lcblm.lr", 'stage "sae"', "[sae], [heads]"]],
    [{ data: { val_fraction: { uniform: [0.1, 0.2] } } }, ["[data] does not vary"]],
  ];
  for (const [space, parts] of cases) {
    const message = spaceError(space);
    for (const part of parts) {
      assert.ok(message.includes(part), `${JSON.stringify(space)}: ${message} lacks ${part}`);
    }
  }
  // A value the schema refuses only together with another key names both.
  const combo = spaceError({ lcblm: { topology: { choice: ["stacked", "summed"] } } }, {
    sweep: { stage: "lcblm" },
    lcblm: { ortho: 0.5 },
  });
  assert.match(combo, /lcblm\.topology.*choice "summed" is not allowed with \[lcblm\]\.ortho/);
  // Valid spaces pass, in both TOML spellings ("sae.lr" quoted, or sae.lr dotted).
  const ok = validateConfig({
    sweep: { space: { "sae.lr": { log_uniform: [1e-5, 1e-2] }, sae: { k: { log_int: [4, 64] } } } },
  });
  assert.deepEqual(Object.keys(ok.sweep.space.sae).sort(), ["k", "lr"]);
});

Deno.test("space validation: errors name config.toml or the command line", async () => {
  const file = `${ROOT}/bad_space.toml`;
  await Deno.writeTextFile(file, "[sweep.space]\nsae.k = { int = [0, 8] }\n");
  await assert.rejects(
    loadConfig(["--config", file]),
    (e: Error) => e instanceof UserError && e.message.includes(`sae.k from "${file}"`),
  );
  await assert.rejects(
    loadConfig(["--config", file, "--sweep.space.sae.k={ int = [1, 8] }", "--sweep.objective=x"]),
    (e: Error) =>
      e instanceof UserError && /\[sweep\]\.objective from the command line/.test(e.message),
  );
});

Deno.test("objectives: the schema's metric names are the stages' row metrics", () => {
  assert.deepEqual(SWEEP_OBJECTIVES.autoencoder, [...AUTOENCODER_METRICS, "fvu_at_l0"]);
  assert.deepEqual(SWEEP_OBJECTIVES.baselines, HEAD_METRICS);
  assert.match(spaceError({}, { sweep: { stage: "baselines" } }), /val_ce.*\n.*finetuned_head/s);
});

// ---------------------------------------------------------------------------------------------
// Resume and failures, with a stand-in for the stage (no training)

/** A run folder with a placeholder embeddings.h5 (the stand-in runner never opens it). */
async function fakeRun(name: string): Promise<string> {
  const dir = `${ROOT}/${name}`;
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/embeddings.h5`, "placeholder");
  return dir;
}

const fakeConfig = (dir: string, raw: Record<string, Record<string, unknown>> = {}) =>
  validateConfig({
    ...raw,
    run: { dir, seeds: [0, 1] },
    sweep: {
      n_trials: 4,
      space: { sae: { lr: { log_uniform: [1e-4, 1e-2] }, k: { int: [1, 64] } } },
      ...raw.sweep,
    },
  });

/** Rows as the sae stage returns them, with FVU a function of the sampled values. */
function counting(fail?: (c: Config) => void) {
  const calls: Config[] = [];
  const runner = (c: Config): Promise<Row[]> => {
    calls.push(c);
    fail?.(c);
    return Promise.resolve(c.run.seeds.map((seed) => ({
      model: "topk_sae",
      seed,
      fvu: c.sae.lr * 50 + seed / 100,
      l0: c.sae.k,
    })));
  };
  return { calls, runner };
}

Deno.test("resume: finished trials are never re-run; new or interrupted ones are", async () => {
  const dir = await fakeRun("resume");
  const first = counting();
  const report = await sweep(fakeConfig(dir), { runner: first.runner, log: quiet });
  assert.equal(first.calls.length, 4);
  // Each trial ran in its own folder, on the shared embeddings (a hard link), with its config.
  const c0 = first.calls[0];
  assert.equal(c0.run.dir, `${dir}/sweep/trial-0`);
  assert.deepEqual(c0.run.seeds, [0, 1]);
  assert.equal(
    (await Deno.stat(`${c0.run.dir}/embeddings.h5`)).ino,
    (await Deno.stat(`${dir}/embeddings.h5`)).ino,
  );
  const saved = await loadConfig(["--config", `${c0.run.dir}/config.toml`]);
  assert.deepEqual(saved.config, c0);
  // One row per trial × seed, with the sampled values.
  const rows = await readArrowTable(`${dir}/sweep/results.arrow`);
  assert.equal(rows.length, 8);
  assert.deepEqual(Object.keys(rows[0]).slice(0, 5), [
    "trial",
    "status",
    "reason",
    "sae.k",
    "sae.lr",
  ]);
  assert.equal(rows[2]["sae.lr"], first.calls[1].sae.lr);

  // Again: nothing runs, same report.
  const again = counting();
  const second = await sweep(fakeConfig(dir), { runner: again.runner, log: quiet });
  assert.equal(again.calls.length, 0);
  assert.equal(second.leaderboard, report.leaderboard);

  // Killed during trial 2 (no result.json yet), and two more trials asked for: 3 runs.
  await Deno.remove(`${dir}/sweep/trial-2/result.json`);
  const third = counting();
  await sweep(fakeConfig(dir, { sweep: { n_trials: 6 } }), { runner: third.runner, log: quiet });
  assert.deepEqual(third.calls.map((c) => c.run.dir.split("/").pop()), [
    "trial-2",
    "trial-4",
    "trial-5",
  ]);
  assert.deepEqual(third.calls[0].sae, first.calls[2].sae);

  // A changed base setting changes every trial: all run again.
  const fourth = counting();
  await sweep(fakeConfig(dir, { sae: { epochs: 2 } }), { runner: fourth.runner, log: quiet });
  assert.equal(fourth.calls.length, 4);
});

Deno.test("best.toml: the best trial's values on the base run, ready to load", async () => {
  const dir = await fakeRun("best");
  const { calls, runner } = counting();
  const report = await sweep(fakeConfig(dir, { sweep: { n_trials: 5 } }), { runner, log: quiet });
  const lowest = calls.reduce((a, b) => (a.sae.lr < b.sae.lr ? a : b));
  assert.equal(report.best?.params["sae.lr"], lowest.sae.lr);
  const best = (await loadConfig(["--config", `${dir}/sweep/best.toml`])).config;
  assert.equal(best.sae.lr, lowest.sae.lr);
  assert.equal(best.sae.k, lowest.sae.k);
  assert.equal(best.run.dir, dir);
  assert.deepEqual(best.sweep.space, {});
  // The leaderboard lists trials best first, as mean ± CI.
  const lines = report.leaderboard.split("\n");
  assert.match(lines[1], /^rank\s+trial\s+fvu ↓\s+l0\s+seeds\s+sae\.k\s+sae\.lr$/);
  assert.match(lines[2], new RegExp(`^1\\s+${calls.indexOf(lowest)}\\s+\\d\\.\\d+ ± \\d`));
  const svg = await Deno.readTextFile(`${dir}/sweep/pareto.svg`);
  assert.ok(svg.startsWith("<svg") && svg.trimEnd().endsWith("</svg>"));
  assert.equal([...svg.matchAll(/<title>trial /g)].length, 5);
});

Deno.test("failing trials are recorded with their reason and the sweep continues", async () => {
  const dir = await fakeRun("failing");
  const { calls, runner } = counting((c) => {
    if (c.sae.lr > 4e-3) throw new DivergedError(`sae seed 0: the loss became NaN at step 3`);
    if (c.sae.k > 40) throw new RangeError(`Cannot build a TopK SAE with [sae].k = ${c.sae.k}`);
  });
  const config = fakeConfig(dir, { sweep: { n_trials: 12 } });
  const report = await sweep(config, { runner, log: quiet });
  assert.equal(calls.length, 12);
  const failed = report.results.filter((r) => r.status === "failed");
  const diverged = failed.filter((r) => /loss became NaN/.test(r.reason));
  const tooBig = failed.filter((r) => /^RangeError: Cannot build/.test(r.reason));
  assert.ok(diverged.length > 0 && tooBig.length > 0 && failed.length < 12, `${failed.length}`);
  assert.equal(diverged.length + tooBig.length, failed.length);
  // Failed trials: one row per seed, no metrics; listed last with their reason.
  const rows = await readArrowTable(`${dir}/sweep/results.arrow`);
  const failedRows = rows.filter((r) => r.status === "failed");
  assert.equal(failedRows.length, failed.length * 2);
  // (A number column's missing cell reads back as NaN.)
  assert.ok(failedRows.every((r) => Number.isNaN(r.fvu) && String(r.reason).length > 0));
  const board = report.leaderboard.split("\n").slice(2, -1);
  assert.equal(board.filter((l) => l.startsWith("-")).length, failed.length);
  assert.ok(
    board.slice(-failed.length).every((l) => /^-\s+\d+\s+failed\s.*(NaN|RangeError)/.test(l)),
  );
  // Not retried on a rerun.
  const again = counting();
  await sweep(config, { runner: again.runner, log: quiet });
  assert.equal(again.calls.length, 0);
});

Deno.test("a combination the schema refuses fails its trial before the stage runs", async () => {
  const dir = await fakeRun("combination");
  const { calls, runner } = counting();
  const space = {
    lcblm: { ortho: { uniform: [0, 1] }, topology: { choice: ["stacked", "summed"] } },
  };
  const config = fakeConfig(dir, { sweep: { stage: "lcblm", n_trials: 8, space } });
  const report = await sweep(config, { runner, log: quiet });
  const refused = report.results.filter((r) => r.status === "failed");
  assert.ok(refused.length > 0 && refused.every((r) => r.params["lcblm.topology"] === "summed"));
  assert.match(refused[0].reason, /\[lcblm\]\.ortho from trial \d+: the orthogonality term needs/);
  assert.equal(calls.length, 8 - refused.length);
});

Deno.test("time budget: no trial starts after it; a rerun continues", async () => {
  const dir = await fakeRun("budget");
  const slow = (c: Config) =>
    new Promise<Row[]>((done) =>
      setTimeout(() => done([{ model: "topk_sae", seed: 0, fvu: c.sae.lr, l0: 1 }]), 100)
    );
  const config = fakeConfig(dir, { sweep: { n_trials: 6, time_budget_s: 0.25 } });
  let calls = 0;
  const counted = (c: Config) => (calls++, slow(c));
  const report = await sweep(config, { runner: counted, log: quiet });
  assert.ok(calls >= 1 && calls <= 4, `${calls} calls`);
  assert.match(report.leaderboard, new RegExp(`${6 - calls} not run yet`));
  await sweep(fakeConfig(dir, { sweep: { n_trials: 6 } }), { runner: counted, log: quiet });
  assert.equal(calls, 6);
});

// ---------------------------------------------------------------------------------------------
// The real thing on the test model

const MODEL = `${ROOT}/tiny-gpt2-test`;
const RUN = `${ROOT}/run`;
const realRaw = {
  run: { dir: RUN, seeds: [0, 1] },
  backbone: { model: MODEL, judge: `${ROOT}/judge` },
  data: { max_documents: 30 },
  extract: { max_length: 64, stride: 64, max_tokens: 800 },
  train: { backend: "blas", checkpoint_every: 0 },
  heads: { epochs: 0.5, batch_size: 256 },
  sae: { batch_size: 128, epochs: 1, k: 4, k_aux: 16, dead_tokens: 500, expansion: 2 },
  sweep: {
    n_trials: 6,
    seed: 5,
    objective: "fvu_at_l0",
    l0_budget: 24,
    space: { sae: { k: { int: [2, 80] }, lr: { log_uniform: [1e-4, 1e-2] } } },
  },
};

Deno.test("a 6-trial SAE sweep on the test model, end to end", async () => {
  await buildOfflineBackbone("tiny-gpt2-test", MODEL);
  await extract(validateConfig(realRaw));
  const lines: string[] = [];
  const report = await sweep(validateConfig(realRaw), { log: (l) => lines.push(l) });
  assert.equal(report.results.length, 6);
  // 2 × 32 = 64 latents: a trial with k > 64 is a bad combination, recorded; the others train.
  for (const r of report.results) {
    const k = Number(r.params["sae.k"]);
    if (k > 64) assert.match(r.reason, /expected at most the 64 latents/);
    else assert.equal(r.status, "ok", r.reason);
  }
  const rows = await readArrowTable(`${RUN}/sweep/results.arrow`);
  assert.equal(rows.length, 12);
  for (const row of rows.filter((r) => r.status === "ok")) {
    assert.ok(Number(row.fvu) > 0 && Number(row.l0) <= Number(row["sae.k"]));
    assert.equal(row.model, "topk_sae");
  }
  // The best trial is within the L0 budget and has the lowest mean FVU among those that are.
  const best = report.ranked[0];
  assert.ok(best.feasible && best.objective!.mean > 0);
  for (const r of report.ranked.filter((r) => r.feasible && r.objective)) {
    assert.ok(r.objective!.mean >= best.objective!.mean);
  }
  const ok = report.results.find((r) => r.status === "ok")!;
  assert.ok(
    await Deno.stat(`${RUN}/sweep/trial-${ok.trial}/sae/topk_sae/seed-1/model.safetensors`),
  );
  assert.ok((await Deno.readTextFile(`${RUN}/sweep/pareto.svg`)).includes("L0 budget 24"));
});

Deno.test("--workers 2: separate processes share the trials, each runs once", async () => {
  const dir = `${ROOT}/run-workers`;
  await Deno.mkdir(dir);
  await Deno.link(`${RUN}/embeddings.h5`, `${dir}/embeddings.h5`);
  const file = `${ROOT}/workers.toml`;
  const { stringify } = await import("smol-toml");
  await Deno.writeTextFile(
    file,
    stringify({
      ...realRaw,
      run: { dir, seeds: [0] },
      sweep: { n_trials: 3, space: { sae: { k: { int: [2, 8] } } } },
    }),
  );
  const script = fileURLToPath(new URL("../stages/sweep.ts", import.meta.url));
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, "--config", file, "--workers", "2"],
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  assert.match(stderr, /2 workers on 3 trials/);
  // Each trial started exactly once, across both processes, and left no claim behind.
  for (let n = 0; n < 3; n++) {
    assert.equal(stderr.split(`sweep: trial ${n} of 3:`).length - 1, 1, stderr);
    const files = [...Deno.readDirSync(`${dir}/sweep/trial-${n}`)].map((e) => e.name);
    assert.ok(files.includes("result.json") && !files.some((f) => f.startsWith("claim-")));
  }
  assert.equal((await readArrowTable(`${dir}/sweep/results.arrow`)).length, 3);
  assert.match(stdout, /^rank\s+trial\s+fvu ↓/m);
});
