/**
 * Sparse gather / scatter-add ops for the TopK SAE (SPEC section 3, FINDINGS "TopK SAE"): the
 * decoder forward, the decoder gradient and the encoder gradient touch only the k active rows per
 * token, so a step costs about 2·B·d·m (the tape-free pre-activations) + O(B·k·d) instead of the
 * 10·B·d·m of a dense formulation.
 *
 * Every op is a `tf.customGrad` over three row products (combine, dots, scatter-outer). Where the
 * active backend registers fused kernels for them (blas: `ROW_PRODUCT_KERNELS`), those run and no
 * [n, k, d] intermediate is formed; elsewhere they are built from standard kernels (GatherV2,
 * BatchMatMul, ScatterNd) in bounded chunks, so they run on any backend. Scatter-adds use
 * `tf.scatterND`, which sums duplicate indices in one pass: the stock cpu `UnsortedSegmentSum`
 * runs one masked sum per segment (O(m·N·d)), unusable at m = 24576, and the wasm backend has no
 * such kernel at all.
 *
 * Index tensors are closed over rather than passed as op inputs: they carry no gradient.
 * @module
 */
import * as tf from "@tensorflow/tfjs";

/** Gathered floats per chunk: bounds the [rows, k, d] intermediates (128 MiB of float32). */
const CHUNK_ELEMENTS = 1 << 25;

/** Row ranges [start, size) over `batch` rows so that size·k·d stays under the budget. */
function chunks(batch: number, k: number, d: number): Array<[number, number]> {
  const size = Math.max(1, Math.floor(CHUNK_ELEMENTS / Math.max(1, k * d)));
  const out: Array<[number, number]> = [];
  for (let s = 0; s < batch; s += size) out.push([s, Math.min(size, batch - s)]);
  return out;
}

/** Σ of `parts(start, size)` over the chunks, disposing each partial sum as it goes. */
function sumOverChunks(
  ranges: Array<[number, number]>,
  part: (start: number, size: number) => tf.Tensor,
): tf.Tensor {
  let acc: tf.Tensor | null = null;
  for (const [start, size] of ranges) {
    const previous: tf.Tensor | null = acc;
    acc = tf.tidy(() => {
      const p = part(start, size);
      return previous ? tf.add(previous, p) : p;
    });
    previous?.dispose();
  }
  return acc!;
}

/** Per-chunk results stacked along axis 0 (each chunk in its own tidy). */
function concatOverChunks(
  ranges: Array<[number, number]>,
  part: (start: number, size: number) => tf.Tensor,
): tf.Tensor {
  const parts = ranges.map(([start, size]) => tf.tidy(() => part(start, size)));
  if (parts.length === 1) return parts[0];
  const out = tf.concat(parts, 0);
  parts.forEach((p) => p.dispose());
  return out;
}

/** Rows `idx[start:start+size]` as a [size, k] slice. */
function rowsOf(t: tf.Tensor2D, start: number, size: number): tf.Tensor2D {
  return t.shape[0] === size ? t : tf.slice(t, [start, 0], [size, t.shape[1]]);
}

/** Whether the active backend has the fused row-product kernel `name` (blas does). */
const fused = (name: string) => tf.getKernel(name, tf.getBackend()) !== undefined;

/**
 * out[i] = Σ_κ c[i, κ] · w[idx[i, κ]].
 * @param c [n, k]. @param w [m, d]. @param idx [n, k] int32.
 * @returns [n, d].
 */
function combine(c: tf.Tensor2D, w: tf.Tensor2D, idx: tf.Tensor2D): tf.Tensor2D {
  if (fused("BlasGatherCombine")) {
    return tf.engine().runKernel("BlasGatherCombine", { a: c, w, idx }) as tf.Tensor2D;
  }
  const [n, k] = idx.shape, d = w.shape[1];
  return concatOverChunks(chunks(n, k, d), (s, size) => {
    const rows = tf.gather(w, rowsOf(idx, s, size)); // [size, k, d]
    return tf.matMul(rowsOf(c, s, size).reshape([size, 1, k]), rows).reshape([size, d]);
  }) as tf.Tensor2D;
}

/**
 * out[i, κ] = v[i] · w[idx[i, κ]].
 * @param v [n, d]. @param w [m, d]. @param idx [n, k] int32.
 * @returns [n, k].
 */
function dots(v: tf.Tensor2D, w: tf.Tensor2D, idx: tf.Tensor2D): tf.Tensor2D {
  if (fused("BlasGatherDot")) {
    return tf.engine().runKernel("BlasGatherDot", { a: v, w, idx }) as tf.Tensor2D;
  }
  const [n, k] = idx.shape, d = w.shape[1];
  return concatOverChunks(chunks(n, k, d), (s, size) => {
    const rows = tf.gather(w, rowsOf(idx, s, size)); // [size, k, d]
    return tf.matMul(rows, rowsOf(v, s, size).reshape([size, d, 1])).reshape([size, k]);
  }) as tf.Tensor2D;
}

/**
 * Scatter-add of outer products into an [m, d] gradient: out[idx[i, κ]] += c[i, κ] · v[i].
 * @param c [n, k]. @param v [n, d]. @param idx [n, k] int32. @param m Rows of the result.
 * @returns [m, d].
 */
function scatterOuter(c: tf.Tensor2D, v: tf.Tensor2D, idx: tf.Tensor2D, m: number): tf.Tensor2D {
  if (fused("BlasScatterOuter")) {
    return tf.engine().runKernel("BlasScatterOuter", { c, v, idx }, { rows: m }) as tf.Tensor2D;
  }
  const [n, k] = idx.shape, d = v.shape[1];
  return sumOverChunks(chunks(n, k, d), (s, size) => {
    const outer = tf.matMul(
      rowsOf(c, s, size).reshape([size, k, 1]),
      rowsOf(v, s, size).reshape([size, 1, d]),
    );
    return tf.scatterND(rowsOf(idx, s, size).reshape([size * k, 1]), outer.reshape([size * k, d]), [
      m,
      d,
    ]);
  }) as tf.Tensor2D;
}

/**
 * Runs `fn` without recording it on the gradient tape: its result is a constant to any
 * `tf.grads`/`tf.variableGrads` around it (TensorFlow.js has no stop-gradient op). Ops inside a
 * `customGrad` forward are never taped, and the result hangs only off `anchor`, which gets a zero
 * gradient.
 *
 * @param anchor Any tensor (e.g. the batch); only used as the op's input.
 * @param fn Computes the constant.
 * @returns fn's result, detached.
 */
export function untaped<T extends tf.Tensor>(anchor: tf.Tensor, fn: () => T): T {
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const shape = (args[0] as tf.Tensor).shape;
    return { value: fn(), gradFunc: () => tf.zeros(shape) };
  });
  return op(anchor) as T;
}

/**
 * `tf.gather(table, idx)` along axis 0 whose gradient is one scatter-add (the stock GatherV2
 * gradient goes through UnsortedSegmentSum).
 *
 * @param table [m] or [m, d].
 * @param idx int32 indices of any shape.
 * @returns [...idx.shape, ...table.shape.slice(1)].
 */
export function gatherRows<T extends tf.Tensor>(table: tf.Tensor, idx: tf.Tensor): T {
  const rest = table.shape.slice(1);
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [t, save] = args as [tf.Tensor, tf.GradSaveFunc];
    save([idx]);
    return {
      value: tf.gather(t, idx),
      gradFunc: (dy: tf.Tensor, [i]: tf.Tensor[]) =>
        tf.scatterND(i.reshape([i.size, 1]), dy.reshape([i.size, ...rest]), table.shape),
    };
  });
  return op(table) as T;
}

/**
 * Sparse decode: out[i] = Σ_κ c[i, κ] · w[idx[i, κ]].
 *
 * Gradients: dc[i, κ] = dy[i] · w[idx[i, κ]] (per-(row, k) dot products); dw = scatter-add of
 * c[i, κ] · dy[i] into rows idx[i, κ]. Nothing of size [B, m] is formed.
 *
 * @param c [B, k] coefficients (the active latents' values).
 * @param w [m, d] rows (decoder directions).
 * @param idx [B, k] int32 row of each coefficient.
 * @returns [B, d].
 */
export function gatherCombine(c: tf.Tensor2D, w: tf.Tensor2D, idx: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [cc, ww, save] = args as [tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
    save([cc, ww, idx]);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [cs, ws, is] = saved as tf.Tensor2D[];
      const dy2 = dy as tf.Tensor2D;
      return [dots(dy2, ws, is), scatterOuter(cs, dy2, is, ws.shape[0])];
    };
    return { value: combine(cc, ww, idx), gradFunc };
  });
  return op(c, w) as tf.Tensor2D;
}

/**
 * Sparse encode: out[i, κ] = v[i] · w[idx[i, κ]] (the k selected pre-activations, minus bias).
 *
 * Gradients: dv[i] = Σ_κ dy[i, κ] · w[idx[i, κ]]; dw = scatter-add of dy[i, κ] · v[i] into rows
 * idx[i, κ] — the encoder gradient touches k rows per token.
 *
 * @param v [B, d] inputs (centred tokens).
 * @param w [m, d] rows (encoder directions).
 * @param idx [B, k] int32 rows to evaluate per token.
 * @returns [B, k].
 */
export function gatherDot(v: tf.Tensor2D, w: tf.Tensor2D, idx: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [vv, ww, save] = args as [tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
    save([vv, ww, idx]);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [vs, ws, is] = saved as tf.Tensor2D[];
      const dy2 = dy as tf.Tensor2D;
      return [combine(dy2, ws, is), scatterOuter(dy2, vs, is, ws.shape[0])];
    };
    return { value: dots(vv, ww, idx), gradFunc };
  });
  return op(v, w) as tf.Tensor2D;
}
