/**
 * A helper thread of the `blas` backend: runs its share of a large elementwise kernel or Adam
 * update on shared arrays, then counts itself done (and failed, if it threw) on shared counters.
 * @module
 */
import { type Job, runJob } from "./_blas_loops.ts";

globalThis.addEventListener("message", (e) => {
  const { job, done } = (e as MessageEvent).data as { job: Job; done: Int32Array };
  try {
    runJob(job);
  } catch (error) {
    console.error(error);
    Atomics.add(done, 1, 1);
  } finally {
    Atomics.add(done, 0, 1);
    Atomics.notify(done, 0);
  }
});
