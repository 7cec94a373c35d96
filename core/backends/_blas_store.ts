/**
 * The `blas` backend's storage: the cpu backend's data store plus a pool that reuses the
 * Float32Arrays of disposed tensors (fresh 100 MB arrays cost page faults and GC every step).
 *
 * A pooled array is recycled only while this backend alone can reach it: arrays handed out by
 * `readSync`/`dataSync` (the cpu backend returns its own array), arrays that a stock kernel's
 * output views (`Slice` returns subarrays), and arrays a caller wrote in (`tf.tensor(array)`)
 * are never recycled. Recycled arrays are not zeroed: every kernel writes its whole output.
 * @module
 */
import type * as tf from "@tensorflow/tfjs";
import { MathBackendCPU } from "@tensorflow/tfjs-backend-cpu";
import type { OpenBlas } from "./openblas.ts";
import type { AdamCoefficients } from "./_blas_loops.ts";
import { parallelAdam } from "./_blas_threads.ts";

/** A zeroed float32 array in a SharedArrayBuffer, so helper threads can work on it. */
export function sharedFloat32Array(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(n * 4));
}

type DataId = object;

/** A cpu backend whose float32 outputs come from a pool and whose matmuls call OpenBLAS. */
export class BlasBackend extends MathBackendCPU {
  /** The loaded OpenBLAS. */
  readonly blas: OpenBlas;
  /** Pooled bytes above which disposed arrays are left to the garbage collector. */
  maxPooledBytes = 2 ** 31;
  #owned = new WeakSet<Float32Array>();
  #pool = new Map<number, Float32Array[]>();
  #pooledBytes = 0;
  #ones = new Float32Array(0);

  /**
   * Creates the backend.
   *
   * @param blas The loaded OpenBLAS.
   */
  constructor(blas: OpenBlas) {
    super();
    this.blas = blas;
    // The cpu backend's first write prints "install our node backend" when it sees Node APIs.
    (this as unknown as { firstUse: boolean }).firstUse = false;
  }

  /**
   * An uninitialised float32 array of `n` elements that the pool may later recycle.
   *
   * @param n The element count.
   * @returns A pooled or fresh array; its contents are arbitrary.
   */
  alloc(n: number): Float32Array {
    const free = this.#pool.get(n);
    const out = free?.pop();
    if (out) {
      this.#pooledBytes -= out.byteLength;
      return out;
    }
    const fresh = sharedFloat32Array(n);
    this.#owned.add(fresh);
    return fresh;
  }

  /** An array of at least `n` ones (shared, read-only by convention). */
  ones(n: number): Float32Array {
    if (this.#ones.length < n) this.#ones = new Float32Array(n).fill(1);
    return this.#ones.length === n ? this.#ones : this.#ones.subarray(0, n);
  }

  /**
   * The stored values of a tensor, without handing them out (the pool may still recycle them).
   *
   * @param t A tensor of this backend.
   * @returns Its backing array.
   */
  values(t: tf.TensorInfo): tf.backend_util.BackendValues {
    return this.data.get(t.dataId).values as tf.backend_util.BackendValues;
  }

  /**
   * The float32 values of a tensor (see {@linkcode values}). A float32 tensor may still hold
   * another array: the stock Cast from bool or int32 shares its input's Uint8Array/Int32Array
   * under the new dtype. Such values come back converted, in a fresh (unshared) array.
   */
  f32(t: tf.TensorInfo): Float32Array {
    const values = this.data.get(t.dataId).values;
    if (values instanceof Float32Array) return values;
    return Float32Array.from(values as ArrayLike<number>);
  }

  /**
   * Whether a tensor's array may be written in place: this backend made it, nothing else
   * holds it, and no other tensor shares it.
   */
  writableInPlace(t: tf.TensorInfo): boolean {
    if (!this.data.has(t.dataId)) return false;
    const d = this.data.get(t.dataId);
    return d.refCount === 1 && this.#owned.has(d.values as Float32Array);
  }

  /** Marks an array as reachable from outside so it is never recycled. */
  disown(values: unknown): void {
    if (values instanceof Float32Array) this.#owned.delete(values);
  }

  /**
   * After a stock kernel ran: an output that views an input's array pins that array.
   *
   * @param inputs The kernel's inputs.
   * @param outputs Its outputs.
   */
  pinViews(inputs: tf.NamedTensorInfoMap, outputs: tf.TensorInfo | tf.TensorInfo[]): void {
    const outs = Array.isArray(outputs) ? outputs : [outputs];
    for (const out of outs) {
      const values = this.data.get(out.dataId).values;
      if (!(values instanceof Float32Array)) continue;
      for (const input of Object.values(inputs)) {
        // The same dataId (Reshape, Identity) is shared through its refCount instead.
        if (input === undefined || input.dataId === out.dataId) continue;
        const inValues = this.data.has(input.dataId) ? this.data.get(input.dataId).values : null;
        if (
          inValues instanceof Float32Array && inValues.buffer === values.buffer
        ) {
          this.#owned.delete(inValues);
          this.#owned.delete(values);
        }
      }
    }
  }

  /** Float32 output from an array (usually from {@linkcode alloc}). */
  output(values: Float32Array, shape: number[]): tf.TensorInfo {
    return this.makeTensorInfo(shape, "float32", values);
  }

  /**
   * The fused AdamW update of p, m and v in place from g, split over the helper threads.
   *
   * @param p Parameters (from a tensor {@linkcode writableInPlace} says may be written).
   * @param g Gradients.
   * @param m First moments ({@linkcode sharedFloat32Array} for the threads to help).
   * @param v Second moments (likewise).
   * @param c This step's coefficients.
   */
  adamUpdate(
    p: Float32Array,
    g: Float32Array,
    m: Float32Array,
    v: Float32Array,
    c: AdamCoefficients,
  ): void {
    parallelAdam(p, g, m, v, c);
  }

  /** Returns a temporary from {@linkcode alloc} to the pool. */
  recycle(values: Float32Array): void {
    if (this.#owned.has(values)) this.#release(values);
  }

  override readSync(dataId: DataId): tf.backend_util.BackendValues {
    if (this.data.has(dataId)) this.disown(this.data.get(dataId).values);
    return super.readSync(dataId);
  }

  override disposeData(dataId: DataId, force = false): boolean {
    const values = this.data.has(dataId) ? this.data.get(dataId).values : undefined;
    const freed = super.disposeData(dataId, force);
    if (freed && values instanceof Float32Array && this.#owned.has(values)) {
      this.#release(values);
    }
    return freed;
  }

  /** Drops every pooled array (they are garbage-collected later). */
  clearPool(): void {
    this.#pool.clear();
    this.#pooledBytes = 0;
  }

  override dispose(): void {
    this.clearPool();
    super.dispose();
  }

  #release(values: Float32Array): void {
    if (values.length === 0 || this.#pooledBytes + values.byteLength > this.maxPooledBytes) return;
    let free = this.#pool.get(values.length);
    if (!free) this.#pool.set(values.length, free = []);
    free.push(values);
    this.#pooledBytes += values.byteLength;
  }
}
