/**
 * Run a PyTorch reference bench script (Debian python3-torch) and parse the JSON it prints.
 * @module
 */

/** OPENBLAS_THREAD_TIMEOUT as the user set it, read before our backend sets its own. */
const USER_THREAD_TIMEOUT = Deno.env.get("OPENBLAS_THREAD_TIMEOUT");
const PYTHON = "/usr/bin/python3";

/**
 * Run `script` with PyTorch as installed: without the OpenBLAS variables tuned for our process
 * (FINDINGS: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE slow a current build; the thread timeout is ours).
 *
 * @param script Path of the Python script.
 * @param args Its arguments.
 * @returns The JSON object the script prints on stdout.
 */
export async function runTorchScript<T>(script: string, args: Array<string | number>): Promise<T> {
  const env = Deno.env.toObject();
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  if (USER_THREAD_TIMEOUT === undefined) delete env.OPENBLAS_THREAD_TIMEOUT;
  const out = await new Deno.Command(PYTHON, {
    args: [script, ...args.map(String)],
    env,
    clearEnv: true,
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) throw new Error(`PyTorch bench failed: ${text}`);
  return JSON.parse(text) as T;
}
