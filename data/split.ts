/**
 * Train/validation split by document, never by token.
 * @module
 */
import { Rng } from "../core/rng.ts";
import { UserError } from "../core/user_error.ts";

/** Names of the stored splits, in the order they are extracted. */
export const SPLITS = ["train", "validation"] as const;
/** One split name. */
export type Split = typeof SPLITS[number];

/**
 * Assign documents to splits from a seeded shuffle.
 *
 * @param count Number of documents.
 * @param valFraction Fraction held out for validation, in (0, 1); rounded, at least one each.
 * @param seed Seed of the shuffle.
 * @returns Document indices per split, each in ascending (source) order.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const s = splitDocuments(10, 0.2, 0);
 * deepStrictEqual(s.validation.length, 2);
 * deepStrictEqual([...s.train, ...s.validation].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
 * ```
 */
export function splitDocuments(
  count: number,
  valFraction: number,
  seed: number,
): Record<Split, number[]> {
  if (count < 2) {
    throw new UserError(
      `Cannot split ${count} document(s) into train and validation: the corpus needs at least 2 documents`,
    );
  }
  const order = new Rng(seed).shuffle(
    Array.from({ length: count }, (_, i) => i),
  );
  const nVal = Math.min(
    count - 1,
    Math.max(1, Math.round(count * valFraction)),
  );
  const byIndex = (a: number, b: number) => a - b;
  return {
    train: order.slice(nVal).sort(byIndex),
    validation: order.slice(0, nVal).sort(byIndex),
  };
}
