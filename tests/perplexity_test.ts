// Tests of generation and judged perplexity: the sampler on hand-made logits, the KV-cache
// generator against full recomputation, the judge against a bare onnxruntime session in float64,
// the bootstrap, and the perplexity stage end to end on the < 1 MB test model with a distinct
// test-size judge. Run: deno test -A tests/perplexity_test.ts

import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import ort from "onnxruntime-node";
import { trainByteLevelBpe } from "../backbone/bpe.ts";
import { writeGpt2Folder } from "../backbone/gpt2_onnx.ts";
import { randomGpt2Weights } from "../backbone/gpt2_weights.ts";
import { loadBackbone } from "../backbone/load_backbone.ts";
import { buildOfflineBackbone } from "../backbone/offline_backbones.ts";
import { readArrowTable } from "../core/arrow_table.ts";
import { validateConfig } from "../core/config.ts";
import { EmbeddingsReader } from "../core/embeddings_store.ts";
import { Rng } from "../core/rng.ts";
import { loadCorpus } from "../data/corpus.ts";
import { bootstrapMean } from "../eval/bootstrap.ts";
import { judgeTexts, judgeWindows } from "../eval/judge.ts";
import { generate } from "../eval/kv_generator.ts";
import { chooseToken, type SamplingOptions, tokenDistribution } from "../eval/sampling.ts";
import { autoencoderStage } from "../stages/_autoencoder_stage.ts";
import { loadTrainedSet } from "../stages/_trained_models.ts";
import { baselines } from "../stages/baselines.ts";
import { extract } from "../stages/extract.ts";
import { lcblmFamily } from "../stages/lcblm.ts";
import { perplexity, RANDOM_TEXT } from "../stages/perplexity.ts";
import { saeFamily } from "../stages/sae.ts";

const PLAIN: SamplingOptions = { temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1 };
const close = (a: number, b: number, tol: number, what: string) =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

Deno.test("sampler: top-k, top-p and repetition penalty on hand-made logits", async (t) => {
  await t.step("top-k keeps logits >= the k-th largest, ties at the edge included", () => {
    const d = tokenDistribution([1, 3, 2, 3, 0], [], { ...PLAIN, topK: 3 });
    assert.deepEqual(d.ids, [1, 3, 2]);
    const z = 2 * Math.exp(3) + Math.exp(2);
    [Math.exp(3) / z, Math.exp(3) / z, Math.exp(2) / z].forEach((p, i) =>
      close(d.probs[i], p, 1e-12, `p${i}`)
    );
    assert.deepEqual(tokenDistribution([3, 2, 2, 1], [], { ...PLAIN, topK: 2 }).ids, [0, 1, 2]);
    assert.deepEqual(tokenDistribution([3, 2, 2, 1], [], { ...PLAIN, topK: 0 }).ids, [0, 1, 2, 3]);
  });

  await t.step("top-p keeps a token while the mass before it is below p", () => {
    const logits = [0.05, 0.5, 0.15, 0.3].map(Math.log);
    const a = tokenDistribution(logits, [], { ...PLAIN, topP: 0.75 });
    assert.deepEqual(a.ids, [1, 3]);
    close(a.probs[0], 0.625, 1e-12, "0.5 / 0.8");
    close(a.probs[1], 0.375, 1e-12, "0.3 / 0.8");
    const b = tokenDistribution(logits, [], { ...PLAIN, topP: 0.85 });
    assert.deepEqual(b.ids, [1, 3, 2]);
    close(b.probs[2], 0.15 / 0.95, 1e-12, "0.15 / 0.95");
    // p tiny: the most likely token alone.
    assert.deepEqual(tokenDistribution(logits, [], { ...PLAIN, topP: 1e-9 }).ids, [1]);
  });

  await t.step("top-p renormalises over the top-k survivors, after the temperature", () => {
    // Logits ln [4, 2, 1, 1] / 0.5: over the top 2 the probabilities are 16/20 and 4/20.
    const logits = [4, 2, 1, 1].map(Math.log);
    const o = { ...PLAIN, temperature: 0.5, topK: 2 };
    const d = tokenDistribution(logits, [], o);
    assert.deepEqual(d.ids, [0, 1]);
    close(d.probs[0], 0.8, 1e-12, "16 / 20");
    assert.deepEqual(tokenDistribution(logits, [], { ...o, topP: 0.7 }).ids, [0]);
    assert.deepEqual(tokenDistribution(logits, [], { ...o, topP: 0.85 }).ids, [0, 1]);
    // At temperature 1 the first token holds only 4/6 < 0.7 of the top-2 mass.
    assert.deepEqual(tokenDistribution(logits, [], { ...o, temperature: 1, topP: 0.7 }).ids, [
      0,
      1,
    ]);
  });

  await t.step("the penalty divides positive and multiplies negative logits of used tokens", () => {
    const d = tokenDistribution([2, -1, 0.5, 0], [0, 1, 3, 0], { ...PLAIN, repetitionPenalty: 2 });
    const x = [1, -2, 0.5, 0]; // penalised
    const z = x.reduce((a, v) => a + Math.exp(v), 0);
    assert.deepEqual(d.ids, [0, 2, 3, 1]);
    [0, 2, 3, 1].forEach((id, i) => close(d.probs[i], Math.exp(x[id]) / z, 1e-12, `id ${id}`));
    // Greedy sees the penalty too: 2 / 2 = 1 < 1.5.
    const greedy = { ...PLAIN, temperature: 0, repetitionPenalty: 2 };
    assert.equal(chooseToken([2, 1.5], [0], greedy, new Rng(0)), 1);
  });

  await t.step("seeded draws follow the kept distribution (chi-square, 2 dof)", () => {
    const logits = [0.05, 0.5, 0.15, 0.3].map(Math.log);
    const o = { ...PLAIN, topP: 0.85 };
    const { ids, probs } = tokenDistribution(logits, [], o);
    const rng = new Rng(11);
    const n = 20000;
    const counts = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const id = chooseToken(logits, [], o, rng);
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    assert.equal(counts.get(0), undefined, "a token top-p removed was drawn");
    const chi2 = ids.reduce(
      (a, id, i) => a + ((counts.get(id) ?? 0) - n * probs[i]) ** 2 / (n * probs[i]),
      0,
    );
    assert.ok(chi2 < 13.8, `chi-square ${chi2} >= 13.8 (p = 0.001)`);
    // Same seed, same draws.
    const draw = (seed: number) => {
      const r = new Rng(seed);
      return Array.from({ length: 50 }, () => chooseToken(logits, [], o, r));
    };
    assert.deepEqual(draw(5), draw(5));
  });

  await t.step("temperature -> 0 equals greedy, with top-k, top-p and the penalty", () => {
    const rng = new Rng(3);
    for (let trial = 0; trial < 200; trial++) {
      const logits = Array.from({ length: 50 }, () => 3 * rng.normal());
      const used = Array.from({ length: 5 }, () => rng.int(50));
      for (
        const base of [PLAIN, { temperature: 0.7, topK: 10, topP: 0.9, repetitionPenalty: 1.5 }]
      ) {
        const greedy = chooseToken(logits, used, { ...base, temperature: 0 }, rng);
        const cold = chooseToken(logits, used, { ...base, temperature: 1e-6 }, new Rng(trial));
        assert.equal(cold, greedy);
      }
    }
  });

  await t.step("bad options are refused by name", async () => {
    await assert.rejects(
      () => generate(null as never, null as never, { sampling: { ...PLAIN, topP: 0 } } as never),
      /top_p 0: expected a number in \(0, 1\]/,
    );
  });
});

Deno.test("bootstrap: mean and median exact, the CI covers the mean and narrows with n", () => {
  const rng = new Rng(1);
  const sample = (n: number) => Array.from({ length: n }, () => 10 + 2 * rng.normal());
  const big = sample(400);
  const s = bootstrapMean(big, { resamples: 2000, seed: 0 });
  close(s.mean, big.reduce((a, b) => a + b, 0) / 400, 1e-12, "mean");
  const sorted = [...big].sort((a, b) => a - b);
  close(s.median, (sorted[199] + sorted[200]) / 2, 1e-12, "median (even n)");
  assert.ok(s.ciLow < s.mean && s.mean < s.ciHigh);
  // Normal theory: width ≈ 2 · 1.96 · 2 / √400 = 0.392.
  close(s.ciHigh - s.ciLow, 0.392, 0.06, "CI width at n = 400");
  const small = bootstrapMean(big.slice(0, 100), { resamples: 2000, seed: 0 });
  close((small.ciHigh - small.ciLow) / (s.ciHigh - s.ciLow), 2, 0.4, "width ratio n = 100 vs 400");
  assert.deepEqual(bootstrapMean(big, { seed: 0 }), bootstrapMean(big, { seed: 0 }));
  assert.ok(Number.isNaN(bootstrapMean([]).mean));
});

// ---- Models: the test backbone, a distinct test-size judge, and a tiny trained run ----

const ROOT = await Deno.makeTempDir({ prefix: "perplexity_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(ROOT, { recursive: true }));
const MODEL = `${ROOT}/tiny-gpt2-test`;
const JUDGE = `${ROOT}/test-judge`;
await buildOfflineBackbone("tiny-gpt2-test", MODEL);
{
  // Its own tokenizer (300 BPE tokens on State of the Union), shape and seed; 48 positions, so
  // long texts need several windows.
  const sotu = await loadCorpus({
    source: "sotu",
    path: "",
    text_column: "text",
    label_column: "",
    val_fraction: 0.1,
    split_seed: 0,
    max_documents: 3,
  });
  const bpe = trainByteLevelBpe(sotu.documents.map((d) => d.text), { vocabSize: 300 });
  const shape = { vocabSize: bpe.eosTokenId + 1, nPositions: 48, nEmbd: 16, nLayer: 2, nHead: 2 };
  await writeGpt2Folder(JUDGE, shape, randomGpt2Weights(shape, 99), bpe);
}
const LOAD = { cacheDir: `${ROOT}/hub`, workDir: `${ROOT}/work` };

const config = (dir: string, extra: Record<string, Record<string, unknown>> = {}) =>
  validateConfig({
    run: { dir, seeds: [0, 1] },
    backbone: { model: MODEL, judge: JUDGE },
    data: { max_documents: 40 },
    extract: { max_length: 64, stride: 64, max_tokens: 1500 },
    train: { backend: "blas", checkpoint_every: 0 },
    heads: { epochs: 1, batch_size: 256 },
    sae: { batch_size: 256, epochs: 1, k: 4, k_aux: 16, dead_tokens: 500, expansion: 2 },
    lcblm: { concepts: 8, embedding_dim: 4, batch_size: 256, epochs: 1, prior: 0.3 },
    generate: { samples: 2, max_new_tokens: 10, batch_size: 2, bootstrap: 200 },
    ...extra,
  });
const RUN = `${ROOT}/run`;
const CONFIG = config(RUN);
await extract(CONFIG);
await baselines(CONFIG);
await autoencoderStage(CONFIG, saeFamily(CONFIG));
await autoencoderStage(CONFIG, lcblmFamily(CONFIG));

Deno.test("KV-cache generation equals full recomputation through the head configurations", async (t) => {
  const backbone = await loadBackbone(MODEL, LOAD);
  const reader = await EmbeddingsReader.open(`${RUN}/embeddings.h5`);
  const set = await loadTrainedSet(CONFIG, reader, 0);
  const byName = Object.fromEntries(set.configurations.map((c) => [c.name, c]));
  const d = backbone.d;
  /** The reference: the whole sequence through the backbone at every step, no cache. */
  const naive = async (
    name: string,
    prompt: number[],
    o: SamplingOptions,
    seed: number,
    steps: number,
    eos: number | null,
  ) => {
    const rng = new Rng(seed);
    const ids = [...prompt];
    for (let s = 0; s < steps; s++) {
      const h = await backbone.hiddenStates([ids]);
      const logits = tf.tidy(() =>
        byName[name].logits(tf.tensor2d(h.slice((ids.length - 1) * d), [1, d])).dataSync()
      );
      const next = chooseToken(logits, ids, o, rng);
      if (next === eos) return { ids: ids.slice(prompt.length), stoppedAtEos: true };
      ids.push(next);
    }
    return { ids: ids.slice(prompt.length), stoppedAtEos: false };
  };
  const bos = backbone.bosId!;

  await t.step(
    "greedy, original head, BOS prompt and left-padded prompts of other lengths",
    async () => {
      const greedy = { ...PLAIN, temperature: 0 };
      const prompts = [[bos], [bos, 17, 250, 3], [bos, 99]];
      const got = await generate(backbone, byName.original, {
        sampling: greedy,
        maxNewTokens: 12,
        seeds: [0, 1, 2],
        eosId: null,
        prompts,
        batchSize: 3,
      });
      for (let i = 0; i < 3; i++) {
        assert.deepEqual(got[i], await naive("original", prompts[i], greedy, i, 12, null));
      }
    },
  );

  await t.step(
    "sampled through SAE and LCBLM configurations, batched, rows stopping at EOS",
    async () => {
      const o = { temperature: 0.7, topK: 100, topP: 0.9, repetitionPenalty: 1.5 };
      for (const name of ["sae_recon_original", "lcblm_latents"]) {
        const seeds = [5, 6, 7, 8, 9];
        // Pretend the first token sample 0 draws is EOS, so some rows finish early.
        const eos = (await naive(name, [bos], o, seeds[0], 1, null)).ids[0];
        const got = await generate(backbone, byName[name], {
          sampling: o,
          maxNewTokens: 8,
          seeds,
          eosId: eos,
          batchSize: 3,
        });
        for (let i = 0; i < seeds.length; i++) {
          assert.deepEqual(got[i], await naive(name, [bos], o, seeds[i], 8, eos), `${name} ${i}`);
        }
        assert.deepEqual(got[0], { ids: [], stoppedAtEos: true });
      }
    },
  );

  await t.step("generation stops at the context length", async () => {
    const got = await generate(backbone, byName.original, {
      sampling: { ...PLAIN, temperature: 0 },
      maxNewTokens: 500,
      seeds: [0],
      eosId: null,
      batchSize: 1,
    });
    assert.equal(got[0].ids.length, 128); // 1 BOS + 127 fed tokens, the last one's successor
  });
  set.dispose();
  reader.close();
  await backbone.dispose();
});

Deno.test("judge NLL equals a bare onnxruntime forward with float64 log-softmax", async () => {
  const judge = await loadBackbone(JUDGE, LOAD);
  const session = await ort.InferenceSession.create(`${JUDGE}/onnx/model.onnx`);
  /** Summed NLL of seq[from..] given the earlier tokens, one unpadded forward. */
  const reference = async (seq: number[], from: number) => {
    const n = seq.length;
    const i64 = (v: number[]) => new ort.Tensor("int64", BigInt64Array.from(v, BigInt), [1, n]);
    const feeds: Record<string, ort.Tensor> = {
      input_ids: i64(seq),
      attention_mask: i64(seq.map(() => 1)),
      position_ids: i64(seq.map((_, i) => i)),
    };
    for (const name of session.inputNames.filter((x) => x.startsWith("past_key_values."))) {
      feeds[name] = new ort.Tensor("float32", new Float32Array(0), [1, 2, 0, 8]);
    }
    const logits = (await session.run(feeds)).logits;
    const [vocab, data] = [logits.dims[2], logits.data as Float32Array];
    let sum = 0;
    for (let j = from; j < n; j++) {
      const row = Array.from(data.subarray((j - 1) * vocab, j * vocab), Number);
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0));
      sum += lse - row[seq[j]];
    }
    return sum;
  };
  const texts = [
    "The state of the Union is strong.",
    "Fellow citizens,",
    "", // empty: no token to score
    "We have met in a time of great trial and greater hope; the economy grows, and the " +
    "nation stands together across every state, from the coasts to the plains and mountains.",
  ];
  const scores = await judgeTexts(judge, texts, 100); // small batches: padding and several passes
  const bos = judge.bosId!;
  for (const [i, text] of texts.entries()) {
    const seq = [bos, ...judge.encode(text)];
    assert.equal(scores[i].tokens, seq.length - 1);
    if (seq.length === 1) {
      assert.ok(Number.isNaN(scores[i].nll) && Number.isNaN(scores[i].perplexity));
      continue;
    }
    let sum = 0;
    for (const w of judgeWindows(i, seq, 48)) sum += await reference(w.ids, w.from);
    close(scores[i].nll, sum / (seq.length - 1), 1e-5, `text ${i} NLL`);
    close(scores[i].perplexity, Math.exp(scores[i].nll), 1e-9, "perplexity = exp(NLL)");
  }
  assert.ok(judge.encode(texts[3]).length > 48, "the long text needs several windows");
  await session.release();
  await judge.dispose();
});

Deno.test("stage: texts and summary over seeds, random text of the same lengths, skip on rerun", async () => {
  const first = await perplexity(CONFIG);
  const configurations = [
    "original",
    "finetuned_head",
    "new_head",
    "sae_latents",
    "sae_recon_original",
    "lcblm_latents",
    "lcblm_recon_original",
    RANDOM_TEXT,
  ];
  assert.equal(first.texts.length, 2 * configurations.length * 2);
  const saved = await readArrowTable(`${RUN}/perplexity/texts.arrow`);
  assert.deepEqual(
    [...new Set(saved.map((r) => r.configuration))],
    configurations,
  );
  for (const r of saved) {
    assert.ok(Number(r.token_count) <= 10);
    assert.ok(Number(r.perplexity) > 1);
    close(Number(r.perplexity), Math.exp(Number(r.nll)), 1e-9 * Number(r.perplexity), "exp(nll)");
  }
  for (const seed of [0, 1]) {
    const lengths = (name: string) =>
      saved.filter((r) => r.seed === seed && r.configuration === name).map((r) => r.token_count);
    assert.deepEqual(lengths(RANDOM_TEXT), lengths("original"));
  }
  // Different training seeds draw different samples.
  const originalTexts = (seed: number) =>
    saved.filter((r) => r.seed === seed && r.configuration === "original").map((r) => r.text);
  assert.notDeepEqual(originalTexts(0), originalTexts(1));
  const summary = await readArrowTable(`${RUN}/perplexity/summary.arrow`);
  assert.equal(summary.length, configurations.length * 3); // two seeds + pooled
  for (const r of summary.filter((x) => x.seed === -1)) {
    assert.ok(Number(r.ci_low) <= Number(r.mean) && Number(r.mean) <= Number(r.ci_high));
    assert.equal(r.n, 4);
  }
  assert.match(first.table, /^configuration\tseeds\ttexts/);
  assert.ok(first.generated.tokens > 0);

  // A rerun scores nothing again and returns the same texts.
  const part = `${RUN}/perplexity/parts/seed-1/sae_latents.json`;
  const before = (await Deno.stat(part)).mtime;
  const again = await perplexity(CONFIG);
  assert.equal(again.generated.tokens, 0);
  assert.deepEqual(again.texts, first.texts);
  assert.deepEqual((await Deno.stat(part)).mtime, before);
});
