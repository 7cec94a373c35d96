/**
 * Peak resident memory of the extract stage, each run in a fresh process under /usr/bin/time -v.
 * @module
 */
import { median } from "./_stats.ts";

/** Peak RSS of one corpus size. */
export interface RssResult {
  /** `[extract].max_tokens` asked for (per split). */
  maxTokens: number;
  /** Token rows the stage stored, all splits. */
  tokens: number;
  /** Median "Maximum resident set size" in MB (10^6 bytes). */
  rssMB: number;
  /** Every repetition's peak, MB. */
  samplesMB: number[];
}

/**
 * Run `stages/extract.ts` with the repo's config.toml into a fresh run folder per repetition.
 *
 * @param dir Scratch folder for the run folders.
 * @param maxTokens Value of `--extract.max_tokens`.
 * @param repeats Fresh processes to run.
 * @returns The median peak and the stored token count.
 */
export async function peakRss(
  dir: string,
  maxTokens: number,
  repeats: number,
): Promise<RssResult> {
  const samples: number[] = [];
  let tokens = 0;
  for (let r = 0; r < repeats; r++) {
    const runDir = `${dir}/rss-${maxTokens}-${r}`;
    const args = [
      "-v",
      Deno.execPath(),
      "run",
      "-A",
      "stages/extract.ts",
      `--run.dir=${runDir}`,
      `--extract.max_tokens=${maxTokens}`,
    ];
    const out = await new Deno.Command("/usr/bin/time", { args, stdout: "piped", stderr: "piped" })
      .output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    const kb = Number(stderr.match(/Maximum resident set size \(kbytes\): (\d+)/)?.[1]);
    const counts = [...stdout.matchAll(/(train|validation) (\d+)/g)].map((m) => Number(m[2]));
    if (!out.success || !Number.isFinite(kb) || counts.length === 0) {
      throw new Error(`extract with max_tokens=${maxTokens} failed:\n${stdout}\n${stderr}`);
    }
    tokens = counts.reduce((a, b) => a + b, 0);
    samples.push((kb * 1024) / 1e6);
    await Deno.remove(runDir, { recursive: true });
  }
  return { maxTokens, tokens, rssMB: median(samples), samplesMB: samples };
}
