// The blas backend's sparse kernels (TopK, GatherV2, ScatterNd; core/backends/_blas_sparse.ts)
// against the stock cpu kernels: identical values and indices (bit for bit, −0 included) on
// random and tie-heavy inputs of various shapes, the stock errors, the fallbacks, recycled
// (unzeroed) pool arrays, and gradients through gather and the TopK SAE's sparse ops.
// Run: deno test -A tests/blas_kernels_test.ts

import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { Rng } from "../core/rng.ts";
import { openBlasAvailable } from "../core/backends/openblas.ts";
import { type BlasBackend, registerBlasBackend } from "../core/backends/blas_backend.ts";
import { BINARY_KERNELS, UNARY_KERNELS } from "../core/backends/_blas_elementwise.ts";
import { gatherCombine, gatherDot, gatherRows } from "../models/sparse_topk.ts";

const ignore = !openBlasAvailable();
if (ignore) console.log("blas_kernels_test: skipping: OpenBLAS not found");
else registerBlasBackend();

type Arr = Float32Array | Int32Array | Uint8Array;
interface Spec {
  data: Arr;
  shape: number[];
  dtype: "float32" | "int32" | "bool";
}

/** Runs `fn` on fresh tensors made from `inputs` on `backend`; returns its outputs' data. */
async function on(
  backend: string,
  inputs: Spec[],
  fn: (...ts: tf.Tensor[]) => tf.Tensor | tf.Tensor[],
): Promise<{ data: Arr; shape: number[] }[]> {
  await tf.setBackend(backend);
  return tf.tidy(() => {
    const ts = inputs.map((s) => tf.tensor(s.data.slice(), s.shape, s.dtype));
    const out = fn(...ts);
    return (Array.isArray(out) ? out : [out]).map((t) => ({
      data: (t.dataSync() as Arr).slice(),
      shape: t.shape,
    }));
  });
}

/** Bitwise equality (NaN equals NaN, −0 differs from +0). */
function assertSame(a: { data: Arr; shape: number[] }[], b: { data: Arr; shape: number[] }[]) {
  assert.equal(a.length, b.length);
  for (let t = 0; t < a.length; t++) {
    assert.deepEqual(a[t].shape, b[t].shape);
    assert.equal(a[t].data.constructor, b[t].data.constructor);
    assert.equal(a[t].data.length, b[t].data.length);
    for (let i = 0; i < a[t].data.length; i++) {
      if (!Object.is(a[t].data[i], b[t].data[i])) {
        assert.fail(`output ${t} element ${i}: blas ${a[t].data[i]} vs cpu ${b[t].data[i]}`);
      }
    }
  }
}

/** The same computation on blas and cpu gives identical outputs. */
async function matchesCpu(inputs: Spec[], fn: (...ts: tf.Tensor[]) => tf.Tensor | tf.Tensor[]) {
  const cpu = await on("cpu", inputs, fn);
  const blas = await on("blas", inputs, fn);
  assertSame(blas, cpu);
}

/** The same computation throws the same message on blas and cpu. */
async function throwsLikeCpu(inputs: Spec[], fn: (...ts: tf.Tensor[]) => tf.Tensor) {
  const message = async (backend: string) => {
    try {
      await on(backend, inputs, fn);
    } catch (e) {
      return (e as Error).message;
    }
    return "no error";
  };
  const cpu = await message("cpu");
  assert.notEqual(cpu, "no error");
  assert.equal(await message("blas"), cpu);
}

const f32 = (shape: number[], gen: (i: number) => number): Spec => ({
  data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => gen(i)),
  shape,
  dtype: "float32",
});
const i32 = (shape: number[], gen: (i: number) => number): Spec => ({
  data: Int32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => gen(i)),
  shape,
  dtype: "int32",
});

const rng = new Rng(7);
const normal = () => rng.normal();
/** Tie-heavy: a few small values, with −0 and +0 both present. */
const ties = () => [0, -0, 1, -1, 2, 0.5][rng.int(6)];

Deno.test({
  name: "blas TopK equals the stock kernel on random and tie-heavy rows",
  ignore,
  async fn() {
    const cases: Array<[number[], number]> = [
      [[5], 1],
      [[5], 5],
      [[1, 7], 3],
      [[7, 100], 1],
      [[7, 100], 3],
      [[7, 100], 100],
      [[3, 4, 50], 10],
      [[16, 1000], 64],
      [[64, 24576], 32],
      [[4, 24576], 512],
    ];
    for (const [shape, k] of cases) {
      for (const gen of [normal, ties, () => 3]) {
        await matchesCpu([f32(shape, gen)], (x) => {
          const { values, indices } = tf.topk(x, k);
          return [values, indices];
        });
      }
    }
  },
});

Deno.test({
  name: "blas TopK falls back to the stock kernel for NaN, ±∞, sorted=false and int32",
  ignore,
  async fn() {
    const special = [NaN, Infinity, -Infinity];
    for (const s of special) {
      const spec = f32([3, 40], (i) => i % 7 === 3 ? s : rng.normal());
      await matchesCpu([spec], (x) => Object.values(tf.topk(x, 5)));
    }
    await matchesCpu([f32([6, 300], normal)], (x) => Object.values(tf.topk(x, 8, false)));
    await matchesCpu([i32([6, 300], () => rng.int(10))], (x) => Object.values(tf.topk(x, 8)));
  },
});

Deno.test({
  name: "blas GatherV2 equals the stock kernel on every axis, batchDims and dtype",
  ignore,
  async fn() {
    // Axis 0 of [m, d] with [B, k] indices (the SAE's gathers), with repeats.
    await matchesCpu(
      [f32([300, 768], normal), i32([64, 32], () => rng.int(300))],
      (x, i) => tf.gather(x, i),
    );
    await matchesCpu(
      [f32([50, 3], normal), i32([17], () => rng.int(50))],
      (x, i) => tf.gather(x, i),
    );
    await matchesCpu(
      [f32([50], normal), i32([4, 5], () => rng.int(50))],
      (x, i) => tf.gather(x, i),
    );
    // Axis 1 (AuxK's pre[:, dead]) and a middle axis.
    await matchesCpu(
      [f32([8, 1000], normal), i32([37], () => rng.int(1000))],
      (x, i) => tf.gather(x, i, 1),
    );
    await matchesCpu(
      [f32([3, 20, 40], normal), i32([2, 6], () => rng.int(20))],
      (x, i) => tf.gather(x, i, 1),
    );
    // batchDims 1 (the dense path's z[i, idx[i]]).
    await matchesCpu(
      [f32([16, 500], normal), i32([16, 32], () => rng.int(500))],
      (x, i) => tf.gather(x, i, 1, 1),
    );
    // int32 and bool tables.
    await matchesCpu(
      [i32([30, 5], () => rng.int(100)), i32([9], () => rng.int(30))],
      (x, i) => tf.gather(x, i),
    );
    await matchesCpu(
      [
        { data: Uint8Array.from({ length: 60 }, () => rng.int(2)), shape: [12, 5], dtype: "bool" },
        i32(
          [7],
          () => rng.int(12),
        ),
      ],
      (x, i) => tf.gather(x, i),
    );
    await throwsLikeCpu(
      [f32([5, 2], normal), i32([3], (j) => [0, 5, 1][j])],
      (x, i) => tf.gather(x, i),
    );
    await throwsLikeCpu(
      [f32([5, 2], normal), i32([3], (j) => [0, -1, 1][j])],
      (x, i) => tf.gather(x, i),
    );
  },
});

Deno.test({
  name: "blas ScatterNd equals the stock kernel (duplicate rows summed in order)",
  ignore,
  async fn() {
    // Row scatter-add [n, 1] → [m, d] with many duplicates (the SAE's gradients).
    await matchesCpu(
      [i32([2048, 1], () => rng.int(40)), f32([2048, 768], normal)],
      (i, u) => tf.scatterND(i, u, [40, 768]),
    );
    // Element scatter [n, 2] → [B, m] (scatterLatents).
    await matchesCpu(
      [i32([96, 2], (j) => j % 2 === 0 ? (j >> 1) % 12 : rng.int(300)), f32([96], normal)],
      (i, u) => tf.scatterND(i, u, [12, 300]),
    );
    await matchesCpu(
      [i32([10, 1], () => rng.int(6)), f32([10], ties)],
      (i, u) => tf.scatterND(i, u, [6]),
    );
    await throwsLikeCpu(
      [i32([3, 1], (j) => [0, 9, 1][j]), f32([3, 4], normal)],
      (i, u) => tf.scatterND(i, u, [5, 4]),
    );
  },
});

Deno.test({
  name: "blas sparse kernels write whole outputs into recycled (unzeroed) pool arrays",
  ignore,
  async fn() {
    await tf.setBackend("blas");
    const backend = tf.backend() as BlasBackend;
    // Fill the pool with NaN arrays of every output size used below.
    for (const n of [64 * 32, 64 * 32 * 16, 40 * 16]) {
      const garbage = backend.alloc(n);
      garbage.fill(NaN);
      backend.recycle(garbage);
    }
    const x = f32([64, 500], normal);
    const idx = i32([64, 32], () => rng.int(40));
    const upd = f32([64 * 32, 16], normal);
    const table = f32([40, 16], normal);
    await matchesCpu([x], (t) => Object.values(tf.topk(t, 32)));
    await matchesCpu([table, idx], (t, i) => tf.gather(t, i));
    await matchesCpu(
      [i32([64 * 32, 1], (j) => idx.data[j]), upd],
      (i, u) => tf.scatterND(i, u, [40, 16]),
    );
    // A gather's output is not a view of its input: disposing the table keeps it intact.
    await tf.setBackend("blas");
    const t = tf.tensor(table.data.slice(), table.shape);
    const g = tf.gather(t, tf.tensor1d([3, 1], "int32"));
    const expected = [...table.data.slice(48, 64), ...table.data.slice(16, 32)];
    t.dispose();
    tf.tidy(() => tf.ones([40, 16]).mul(7).dataSync()); // may reuse t's array
    assert.deepEqual([...g.dataSync()], expected);
    g.dispose();
  },
});

/** Gradients on blas and cpu agree to float32 rounding (matmuls differ in summation order). */
async function gradsClose(
  inputs: Spec[],
  loss: (...ts: tf.Tensor[]) => tf.Scalar,
  tol = 1e-5,
) {
  // Differentiate with respect to the float inputs; the int32 ones stay in their places.
  const run = (backend: string) =>
    on(backend, inputs, (...ts) => {
      const floats = ts.filter((t) => t.dtype === "float32");
      const f = (...xs: tf.Tensor[]) => {
        let next = 0;
        return loss(...ts.map((t) => t.dtype === "float32" ? xs[next++] : t));
      };
      return tf.grads(f)(floats);
    });
  const cpu = await run("cpu"), blas = await run("blas");
  assert.equal(blas.length, cpu.length);
  for (let t = 0; t < cpu.length; t++) {
    assert.deepEqual(blas[t].shape, cpu[t].shape);
    let scale = 0;
    for (const v of cpu[t].data) scale = Math.max(scale, Math.abs(v));
    for (let i = 0; i < cpu[t].data.length; i++) {
      const diff = Math.abs(blas[t].data[i] - cpu[t].data[i]);
      if (!(diff <= tol * Math.max(1, scale))) {
        assert.fail(`grad ${t} element ${i}: blas ${blas[t].data[i]} vs cpu ${cpu[t].data[i]}`);
      }
    }
  }
}

Deno.test({
  name: "gradients through gather and the TopK SAE's sparse ops match the cpu backend",
  ignore,
  async fn() {
    const [m, d, b, k] = [60, 24, 10, 4];
    const idx = i32([b, k], () => rng.int(m));
    const w = f32([m, d], normal), v = f32([b, d], normal), c = f32([b, k], normal);
    const bias = f32([m], normal);
    // Stock tf.gather gradient (UnsortedSegmentSum), axis 0 and axis 1.
    await gradsClose([w, idx], (t, i) => tf.sum(tf.square(tf.gather(t, i))) as tf.Scalar);
    await gradsClose(
      [v, i32([5], () => rng.int(d))],
      (t, i) => tf.sum(tf.mul(tf.gather(t, i, 1), 0.5)) as tf.Scalar,
    );
    // The custom-gradient sparse ops of models/sparse_topk.ts.
    await gradsClose(
      [w, bias, idx],
      (t, be, i) =>
        tf.add(
          tf.sum(tf.square(gatherRows<tf.Tensor3D>(t, i))),
          tf.sum(gatherRows<tf.Tensor2D>(be, i)),
        ) as tf.Scalar,
    );
    await gradsClose(
      [c, w, idx],
      (cc, ww, i) =>
        tf.sum(
          tf.square(gatherCombine(cc as tf.Tensor2D, ww as tf.Tensor2D, i as tf.Tensor2D)),
        ) as tf.Scalar,
    );
    await gradsClose(
      [v, w, idx],
      (vv, ww, i) =>
        tf.sum(
          tf.square(gatherDot(vv as tf.Tensor2D, ww as tf.Tensor2D, i as tf.Tensor2D)),
        ) as tf.Scalar,
    );
  },
});

Deno.test({
  name: "blas fused row products equal a float64 reference (threaded sizes, repeats, zeros)",
  ignore,
  async fn() {
    await tf.setBackend("blas");
    // n·k·d and m·d above the threading threshold (2^18); rows repeat within and across tokens,
    // and every fifth coefficient is zero (skipped by the kernels).
    const [m, d, n, k] = [3000, 96, 300, 12];
    const w = f32([m, d], normal), v = f32([n, d], normal);
    const c = f32([n, k], (i) => i % 5 === 0 ? 0 : rng.normal());
    const idx = i32([n, k], (i) => i % 7 === 0 ? 3 : rng.int(m));
    const W = w.data as Float32Array, V = v.data as Float32Array, C = c.data as Float32Array;
    const I = idx.data as Int32Array;
    const combine = new Float64Array(n * d), dots = new Float64Array(n * k);
    const outer = new Float64Array(m * d);
    for (let i = 0; i < n; i++) {
      for (let s = i * k; s < (i + 1) * k; s++) {
        for (let j = 0; j < d; j++) {
          combine[i * d + j] += C[s] * W[I[s] * d + j];
          dots[s] += V[i * d + j] * W[I[s] * d + j];
          outer[I[s] * d + j] += C[s] * V[i * d + j];
        }
      }
    }
    const got = tf.tidy(() => {
      // Through a blas op so the values live in shared memory, which the helper threads need.
      const [wt, vt, ct] = [w, v, c].map((s) => tf.mul(tf.tensor(s.data, s.shape), 1));
      const it = tf.tensor(idx.data, idx.shape, "int32");
      const run = (name: string, inputs: tf.NamedTensorMap, attrs = {}) =>
        (tf.engine().runKernel(name, inputs, attrs) as tf.Tensor).dataSync().slice();
      return [
        run("BlasGatherCombine", { a: ct, w: wt, idx: it }),
        run("BlasGatherDot", { a: vt, w: wt, idx: it }),
        run("BlasScatterOuter", { c: ct, v: vt, idx: it }, { rows: m }),
      ];
    });
    for (const [t, want] of [combine, dots, outer].entries()) {
      for (let i = 0; i < want.length; i++) {
        const diff = Math.abs(got[t][i] - want[i]);
        if (!(diff <= 1e-5 * Math.max(1, Math.abs(want[i])))) {
          assert.fail(`product ${t} element ${i}: ${got[t][i]} vs ${want[i]}`);
        }
      }
    }
    // Out-of-range rows and mismatched shapes are errors, not silent NaNs.
    tf.tidy(() => {
      const wt = tf.tensor(w.data, w.shape), ct = tf.tensor(c.data, c.shape);
      const bad = tf.tensor2d([[0, m]], [1, 2], "int32");
      assert.throws(
        () =>
          tf.engine().runKernel("BlasGatherCombine", {
            a: ct.slice(0, 1).slice([0, 0], [1, 2]),
            w: wt,
            idx: bad,
          }),
        new RegExp(`Row index ${m} is not in \\[0, ${m - 1}\\]`),
      );
      assert.throws(
        () =>
          tf.engine().runKernel("BlasGatherDot", {
            a: ct,
            w: wt,
            idx: tf.tensor(idx.data, idx.shape, "int32"),
          }),
        /Cannot dots \[300,12\] with a table \[3000,96\]/,
      );
    });
  },
});

Deno.test({
  name: "blas unary kernels equal the stock cpu kernels (±0 aside), specials included",
  ignore,
  async fn() {
    // Above the threading threshold, with zeros, infinities, NaN and large magnitudes mixed in.
    const specials = [0, -0, NaN, Infinity, -Infinity, 88.8, -88.8, 1e-30, 6, -6];
    const x = f32(
      [600, 500],
      (i) => i % 17 === 0 ? specials[(i / 17) % specials.length] : 3 * rng.normal(),
    );
    for (const name of UNARY_KERNELS) {
      const run = (backend: string) =>
        on(backend, [x], (t) => tf.engine().runKernel(name, { x: t }, { alpha: 0.2 }) as tf.Tensor);
      const [cpu, blas] = [await run("cpu"), await run("blas")];
      for (let i = 0; i < cpu[0].data.length; i++) {
        const a = blas[0].data[i], b = cpu[0].data[i];
        if (!(a === b || (Number.isNaN(a) && Number.isNaN(b)))) {
          assert.fail(`${name}(${x.data[i]}): blas ${a} vs cpu ${b}`);
        }
      }
    }
  },
});

Deno.test({
  name: "blas binary kernels equal the stock cpu kernels (±0 aside), specials and broadcasts",
  ignore,
  async fn() {
    const specials = [0, -0, NaN, Infinity, -Infinity, 1e30, -1e-30, 2];
    const gen = (i: number) =>
      i % 13 === 0 ? specials[(i / 13) % specials.length] : 2 * rng.normal();
    const a = f32([300, 400], gen), same = f32([300, 400], gen);
    const row = f32([400], gen), col = f32([300, 1], gen), scalar = f32([], () => -1.5);
    for (const name of BINARY_KERNELS.filter((n) => !n.startsWith("Blas"))) {
      for (const b of [same, row, col, scalar]) {
        const run = (backend: string) =>
          on(backend, [a, b], (x, y) => tf.engine().runKernel(name, { a: x, b: y }) as tf.Tensor);
        const [cpu, blas] = [await run("cpu"), await run("blas")];
        assert.deepEqual(blas[0].shape, cpu[0].shape);
        for (let i = 0; i < cpu[0].data.length; i++) {
          const u = blas[0].data[i], v = cpu[0].data[i];
          if (!(u === v || (Number.isNaN(u) && Number.isNaN(v)))) {
            assert.fail(`${name} [${b.shape}] element ${i}: blas ${u} vs cpu ${v}`);
          }
        }
      }
    }
  },
});

Deno.test({
  name: "blas reads float32 tensors cast from bool or int32 as numbers, not as raw bytes",
  ignore,
  async fn() {
    // The stock Cast shares the input's Uint8Array/Int32Array under dtype float32.
    const x = f32([64, 300], normal);
    const ones = f32([300, 3], () => 1);
    for (const from of ["bool", "int32"] as const) {
      const fn = (a: tf.Tensor, b: tf.Tensor) => {
        const mask = from === "bool"
          ? tf.cast(tf.greater(a, 0.5), "float32")
          : tf.cast(tf.cast(tf.greater(a, 0.5), "int32"), "float32");
        return [tf.sum(mask, 1), tf.matMul(mask, b), tf.add(mask, 1), tf.relu(tf.neg(mask))];
      };
      const [cpu, blas] = [await on("cpu", [x, ones], fn), await on("blas", [x, ones], fn)];
      assertSame(blas, cpu);
      // And against a count done here: the row sums are the number of entries above 0.5.
      for (let r = 0; r < 64; r++) {
        let count = 0;
        for (let j = 0; j < 300; j++) count += +(x.data[r * 300 + j] > 0.5);
        assert.equal(blas[0].data[r], count, `${from} row ${r}`);
      }
    }
  },
});
