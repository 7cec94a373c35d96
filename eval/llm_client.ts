/**
 * An OpenAI-compatible chat-completions client that survives a flaky endpoint (SPEC section 6):
 * per-request timeouts; retries with exponential backoff and jitter on timeouts, network errors,
 * 429 (honouring Retry-After), 5xx, truncated and non-JSON bodies; a malformed answer is re-asked
 * with the parse error appended; after `maxTries` requests a call resolves to a failure with the
 * reason. A concurrency limit caps requests in flight, and a content-hash cache (one JSON file per
 * request) replays a re-run offline and lets an interrupted run resume.
 *
 * The API key goes only into the Authorization header: it is never cached, logged or put in a
 * failure reason (any echo of it in a server's answer is redacted).
 * @module
 */
import { atomicWrite } from "../core/atomic_write.ts";
import { sha256 } from "../core/hash.ts";
import { Rng } from "../core/rng.ts";

/** One chat message. */
export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** How to reach the endpoint and how hard to try. */
export interface LlmClientOptions {
  /** Base URL ending before `/chat/completions`, e.g. "http://localhost:11434/v1". */
  baseUrl: string;
  model: string;
  /** Sent as `Authorization: Bearer <key>`; null: no header. */
  apiKey?: string | null;
  /** Per-request timeout (ms); default 60 000. */
  timeoutMs?: number;
  /** Requests per call, retries and re-asks included; default 5. */
  maxTries?: number;
  /** Requests in flight at once; default 4. */
  concurrency?: number;
  /** Folder of cached answers (null: no cache). */
  cacheDir?: string | null;
  /** Ask again when the cache holds a failure instead of replaying it. */
  retryFailed?: boolean;
  /** Seed of the backoff jitter. */
  seed?: number;
  /** First backoff (ms), doubled per retry; default 500. */
  backoffMs?: number;
  /** Longest backoff or Retry-After wait (ms); default 60 000. */
  maxWaitMs?: number;
  temperature?: number;
  maxOutputTokens?: number;
  /** Injectable clock, for fast tests. */
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
  fetch?: typeof fetch;
}

/** What a call ended with. `cached`: replayed from the cache without a request. */
export type ChatOutcome<T> =
  | { ok: true; value: T; content: string; tries: number; cached: boolean }
  | { ok: false; reason: string; tries: number; cached: boolean };

/** Counters over the client's life. */
export interface LlmStats {
  requests: number;
  cacheHits: number;
  maxInFlight: number;
}

/** A cache file: the request (no key, no URL) and how it ended. */
interface CacheEntry {
  request: unknown;
  ok: boolean;
  content?: string;
  reason?: string;
  tries: number;
}

type Attempt =
  | { kind: "content"; content: string }
  | { kind: "retry"; reason: string; waitMs?: number }
  | { kind: "fatal"; reason: string };

/**
 * The chat client.
 *
 * @example A call that fails fast against an unreachable endpoint records why
 * ```ts
 * import { strictEqual } from "node:assert";
 * const client = new LlmClient({
 *   baseUrl: "http://127.0.0.1:9/v1",
 *   model: "m",
 *   maxTries: 2,
 *   sleep: () => Promise.resolve(),
 *   fetch: () => Promise.reject(new TypeError("connection refused")),
 * });
 * const out = await client.complete([{ role: "user", content: "hi" }], (t) => t);
 * strictEqual(out.ok, false);
 * strictEqual(!out.ok && out.reason, "gave up after 2 tries; last: network error: connection refused");
 * ```
 */
export class LlmClient {
  readonly stats: LlmStats = { requests: 0, cacheHits: 0, maxInFlight: 0 };
  #o: Required<Omit<LlmClientOptions, "apiKey" | "cacheDir">>;
  #key: string | null;
  #cacheDir: string | null;
  #rng: Rng;
  #inFlight = 0;
  #waiting: Array<() => void> = [];
  #pending = new Map<string, Promise<ChatOutcome<unknown>>>();

  /** @param options Endpoint, limits and the injectable clock. */
  constructor(options: LlmClientOptions) {
    this.#key = options.apiKey ?? null;
    this.#cacheDir = options.cacheDir ?? null;
    this.#o = {
      timeoutMs: 60_000,
      maxTries: 5,
      concurrency: 4,
      retryFailed: false,
      seed: 0,
      backoffMs: 500,
      maxWaitMs: 60_000,
      temperature: 0,
      maxOutputTokens: 400,
      sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      now: () => Date.now(),
      fetch: (input, init) => fetch(input, init),
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
      baseUrl: options.baseUrl.replace(/\/+$/, ""),
      model: options.model,
    } as Required<Omit<LlmClientOptions, "apiKey" | "cacheDir">>;
    this.#rng = new Rng(this.#o.seed);
  }

  /**
   * Ask the model and parse its answer; identical requests share one call and one cache file.
   *
   * @param messages The conversation.
   * @param parse Turns the answer text into a value; throws an Error saying what is wrong (that
   *   message is sent back to the model). Must be deterministic: the cache stores the text.
   * @returns The parsed value, or the reason it failed after `maxTries` requests.
   */
  complete<T>(messages: ChatMessage[], parse: (text: string) => T): Promise<ChatOutcome<T>> {
    const request = {
      model: this.#o.model,
      messages,
      temperature: this.#o.temperature,
      max_tokens: this.#o.maxOutputTokens,
    };
    const body = JSON.stringify(request);
    const pending = this.#pending.get(body);
    if (pending) return pending as Promise<ChatOutcome<T>>;
    const call = this.#call(request, body, parse);
    this.#pending.set(body, call);
    return call.finally(() => this.#pending.delete(body));
  }

  async #call<T>(
    request: { messages: ChatMessage[] },
    body: string,
    parse: (text: string) => T,
  ): Promise<ChatOutcome<T>> {
    const path = this.#cacheDir ? `${this.#cacheDir}/${await sha256(body)}.json` : null;
    const hit: CacheEntry | null = path
      ? await Deno.readTextFile(path).then(JSON.parse).catch(() => null)
      : null;
    if (hit?.ok && typeof hit.content === "string") {
      try {
        const value = parse(hit.content);
        this.stats.cacheHits++;
        return { ok: true, value, content: hit.content, tries: hit.tries, cached: true };
      } catch {
        // The parser changed since the answer was cached: ask again.
      }
    } else if (hit && !hit.ok && !this.#o.retryFailed) {
      this.stats.cacheHits++;
      return { ok: false, reason: String(hit.reason), tries: hit.tries, cached: true };
    }
    const { outcome, answerProblem } = await this.#ask(request.messages, parse);
    // Cache answers and failures caused by the answers; a failure to reach the endpoint is
    // not a result, so a re-run tries again.
    if (path && (outcome.ok || answerProblem)) {
      const entry: CacheEntry = outcome.ok
        ? { request, ok: true, content: outcome.content, tries: outcome.tries }
        : { request, ok: false, reason: outcome.reason, tries: outcome.tries };
      await atomicWrite(path, JSON.stringify(entry, null, 1));
    }
    return outcome;
  }

  async #ask<T>(
    messages: ChatMessage[],
    parse: (text: string) => T,
  ): Promise<{ outcome: ChatOutcome<T>; answerProblem: boolean }> {
    const max = this.#o.maxTries;
    let conversation = messages;
    let last = "";
    let answerProblem = false;
    for (let attempt = 1; attempt <= max; attempt++) {
      const got = await this.#attempt(conversation);
      if (got.kind === "content") {
        try {
          const value = parse(got.content);
          const outcome = { ok: true as const, value, content: got.content, tries: attempt };
          return { outcome: { ...outcome, cached: false }, answerProblem: false };
        } catch (e) {
          // 1. Re-ask at once, showing the model its answer and what was wrong with it.
          const problem = (e as Error).message;
          last = `malformed answer: ${problem}`;
          answerProblem = true;
          conversation = [
            ...messages,
            { role: "assistant", content: got.content },
            { role: "user", content: reaskText(problem) },
          ];
          continue;
        }
      }
      last = got.reason;
      answerProblem = false;
      if (got.kind === "fatal") {
        return { outcome: this.#failure(`failed: ${last}`, attempt), answerProblem };
      }
      // 2. Transport trouble: wait (Retry-After, else exponential backoff with jitter).
      if (attempt < max) await this.#o.sleep(this.#wait(attempt, got.waitMs));
    }
    return {
      outcome: this.#failure(`gave up after ${max} tries; last: ${last}`, max),
      answerProblem,
    };
  }

  #failure(reason: string, tries: number): ChatOutcome<never> {
    return { ok: false, reason: this.#redact(reason), tries, cached: false };
  }

  /** Backoff before retry `attempt` + 1: base·2^(attempt−1), capped, times a jitter in [0.5, 1). */
  #wait(attempt: number, retryAfterMs?: number): number {
    const cap = this.#o.maxWaitMs;
    if (retryAfterMs !== undefined) return Math.min(cap, Math.max(0, retryAfterMs));
    const exp = Math.min(cap, this.#o.backoffMs * 2 ** (attempt - 1));
    return exp * (0.5 + 0.5 * this.#rng.next());
  }

  async #attempt(messages: ChatMessage[]): Promise<Attempt> {
    await this.#acquire();
    this.stats.requests++;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.#o.timeoutMs);
    try {
      const headers: Record<string, string> = { "content-type": "application/json" };
      if (this.#key) headers.authorization = `Bearer ${this.#key}`;
      const res = await this.#o.fetch(`${this.#o.baseUrl}/chat/completions`, {
        method: "POST",
        headers,
        body: JSON.stringify({
          model: this.#o.model,
          messages,
          temperature: this.#o.temperature,
          max_tokens: this.#o.maxOutputTokens,
        }),
        signal: controller.signal,
      });
      const text = await res.text();
      const status = `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`;
      if (res.status === 429) {
        return { kind: "retry", reason: status, waitMs: this.#retryAfter(res.headers) };
      }
      if (res.status >= 500 || res.status === 408) return { kind: "retry", reason: status };
      if (!res.ok) return { kind: "fatal", reason: `${status}: ${snippet(text)}` };
      let body;
      try {
        body = JSON.parse(text);
      } catch {
        return { kind: "retry", reason: `non-JSON response body: ${snippet(text)}` };
      }
      const content = body?.choices?.[0]?.message?.content;
      if (typeof content !== "string") {
        return {
          kind: "retry",
          reason: `response without choices[0].message.content: ${snippet(text)}`,
        };
      }
      return { kind: "content", content };
    } catch (e) {
      if (controller.signal.aborted) {
        return { kind: "retry", reason: `timed out after ${this.#o.timeoutMs / 1000} s` };
      }
      return { kind: "retry", reason: `network error: ${(e as Error).message}` };
    } finally {
      clearTimeout(timer);
      this.#release();
    }
  }

  /** Retry-After as seconds or an HTTP date, in ms from now; undefined when absent or invalid. */
  #retryAfter(headers: Headers): number | undefined {
    const value = headers.get("retry-after")?.trim();
    if (!value) return undefined;
    if (/^\d+(\.\d+)?$/.test(value)) return Number(value) * 1000;
    const at = Date.parse(value);
    return Number.isNaN(at) ? undefined : Math.max(0, at - this.#o.now());
  }

  #acquire(): Promise<void> {
    if (this.#inFlight < this.#o.concurrency) {
      this.#inFlight++;
      this.stats.maxInFlight = Math.max(this.stats.maxInFlight, this.#inFlight);
      return Promise.resolve();
    }
    // The releaser hands its slot over, so the count stays the same.
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#inFlight--;
  }

  #redact(text: string): string {
    return this.#key ? text.replaceAll(this.#key, "[redacted]") : text;
  }
}

function reaskText(problem: string): string {
  return `Your answer could not be used: ${problem}. Reply again with only the JSON object, no other text.`;
}

function snippet(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > 120 ? `${flat.slice(0, 117)}...` : flat || "(empty)";
}
