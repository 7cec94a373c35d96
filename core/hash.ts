/**
 * Content hashes for provenance and cache keys.
 * @module
 */

/**
 * SHA-256 of bytes or text, as lowercase hex.
 *
 * @param data Bytes, or text hashed as UTF-8.
 * @returns 64 hex characters.
 * @example
 * ```ts
 * import { strictEqual } from "node:assert";
 * strictEqual((await sha256("abc")).slice(0, 8), "ba7816bf");
 * ```
 */
export async function sha256(data: string | Uint8Array): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest(
    "SHA-256",
    bytes as Uint8Array<ArrayBuffer>,
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}
