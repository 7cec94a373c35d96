/**
 * Which windows of which documents go into which resumable shard, per split.
 * @module
 */
import { type Split, SPLITS } from "./split.ts";
import { documentWindows, type Window, type WindowOptions } from "./windows.ts";

/** A window tagged with its document. */
export interface PlannedWindow extends Window {
  doc: number;
}

/** A run of consecutive windows written to one shard file. */
export interface Shard {
  split: Split;
  index: number;
  windows: PlannedWindow[];
  /** Token rows the shard stores. */
  tokens: number;
}

/** Options for {@link planExtraction}. */
export interface PlanOptions extends WindowOptions {
  /** Stop a split after this many stored tokens, counted over whole windows (0: no limit). */
  maxTokens: number;
  /** Start a new shard once a shard holds at least this many tokens. */
  shardTokens: number;
}

/**
 * Plan the extraction: windows of every document in split order, cut into shards.
 *
 * @param tokens Token ids per document (index = document index).
 * @param splits Document indices per split.
 * @param options Window, limit and shard options.
 * @returns Shards in the order they are extracted and merged.
 * @example
 * ```ts
 * import { strictEqual } from "node:assert";
 * const shards = planExtraction([[1, 2], [3]], { train: [0], validation: [1] },
 *   { maxLength: 8, stride: 0, bosId: null, eosId: 9, maxTokens: 0, shardTokens: 100 });
 * strictEqual(shards.length, 2);
 * strictEqual(shards[0].tokens, 2);
 * ```
 */
export function planExtraction(
  tokens: ArrayLike<number>[],
  splits: Record<Split, number[]>,
  options: PlanOptions,
): Shard[] {
  const shards: Shard[] = [];
  for (const split of SPLITS) {
    let stored = 0;
    let current: Shard | null = null;
    for (const doc of splits[split]) {
      if (options.maxTokens > 0 && stored >= options.maxTokens) break;
      for (const w of documentWindows(tokens[doc], options)) {
        if (options.maxTokens > 0 && stored >= options.maxTokens) break;
        if (current === null || current.tokens >= options.shardTokens) {
          current = {
            split,
            index: current === null ? 0 : current.index + 1,
            windows: [],
            tokens: 0,
          };
          shards.push(current);
        }
        current.windows.push({ ...w, doc });
        current.tokens += w.targets.length;
        stored += w.targets.length;
      }
    }
  }
  return shards;
}
