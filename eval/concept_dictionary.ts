/**
 * The concept dictionary of one model and seed: its JSON shape and a self-contained, browsable
 * HTML page (label, alternatives, detection score against the shuffled-label baseline, examples
 * with the activating token highlighted, top tokens).
 * @module
 */
import type { DetectionScore } from "./concept_labels.ts";

/** One latent's entry. */
export interface ConceptEntry {
  latent: number;
  status: "labelled" | "failed";
  /** Who labelled it: "llm:<model>" or "offline-top-tokens". */
  labeller: string;
  concept: string | null;
  alternatives: string[];
  /** Why labelling failed, else null. */
  reason: string | null;
  fires: number;
  frequency: number;
  max_activation: number;
  mean_activation: number;
  detection: DetectionScore | null;
  baseline: DetectionScore | null;
  /** The latent whose label the baseline used. */
  baseline_label_from: number | null;
  detection_reason: string | null;
  top_tokens: string[];
  frequent_tokens: Array<{ token: string; count: number }>;
  examples: Array<{ text: string; activation: number; source: string }>;
  held_out: Array<{ text: string; activation: number; fires: boolean }>;
}

/** A model's dictionary. */
export interface ConceptDictionary {
  model: "sae" | "lcblm";
  seed: number;
  labeller: string;
  /** True when made by the offline labeller, not an LLM. */
  offline: boolean;
  /** What the activations are and when a latent counts as firing. */
  activation: string;
  evaluated_tokens: number;
  latents: number;
  live_latents: number;
  labelled: number;
  failed: number;
  mean_f1: number | null;
  mean_baseline_f1: number | null;
  mean_accuracy: number | null;
  mean_baseline_accuracy: number | null;
  entries: ConceptEntry[];
}

/**
 * Render a dictionary as one HTML page with no external resources.
 *
 * @param dict The dictionary.
 * @returns The page.
 * @example
 * ```ts
 * import { ok } from "node:assert";
 * const page = dictionaryHtml({
 *   model: "sae", seed: 0, labeller: "offline-top-tokens", offline: true, activation: "z > 0",
 *   evaluated_tokens: 10, latents: 4, live_latents: 1, labelled: 0, failed: 1, mean_f1: null,
 *   mean_baseline_f1: null, mean_accuracy: null, mean_baseline_accuracy: null, entries: [],
 * });
 * ok(page.includes("offline-top-tokens") && page.startsWith("<!doctype html>"));
 * ```
 */
export function dictionaryHtml(dict: ConceptDictionary): string {
  const title = `Concepts of ${dict.model} seed ${dict.seed}`;
  const banner = dict.offline
    ? `<p class="offline">Labels by the <b>offline-top-tokens</b> labeller (no LLM endpoint was ` +
      `configured): names are the tokens a latent fires on and promotes, and detection asks ` +
      `whether the marked token is one of them. Set [concepts].base_url for LLM labels.</p>`
    : "";
  const summary = [
    `labeller <b>${esc(dict.labeller)}</b>`,
    `${dict.evaluated_tokens} validation tokens`,
    `${dict.live_latents} of ${dict.latents} latents live`,
    `${dict.labelled} labelled, ${dict.failed} failed`,
    `mean detection F1 ${num(dict.mean_f1)} vs shuffled labels ${num(dict.mean_baseline_f1)}`,
    `accuracy ${num(dict.mean_accuracy)} vs ${num(dict.mean_baseline_accuracy)}`,
    `activation: ${esc(dict.activation)}`,
  ].join(" · ");
  const rows = dict.entries.map(entryRow).join("\n");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4;position:sticky;top:0}
mark{background:#ffd54f;padding:0 1px}
.failed{color:#b00020}.alt{color:#666;font-size:12px}
.offline{background:#fff3cd;border:1px solid #e0c36c;padding:8px}
ol{margin:4px 0;padding-left:2em}code{background:#f4f4f4}
.num{text-align:right;font-variant-numeric:tabular-nums}
</style></head><body>
<h1>${esc(title)}</h1>
${banner}
<p>${summary}</p>
<table><thead><tr><th>latent</th><th>concept</th><th class="num">F1</th><th class="num">F1 shuffled</th>` +
    `<th class="num">acc.</th><th class="num">frequency</th><th>top tokens</th></tr></thead>
<tbody>
${rows}
</tbody></table>
</body></html>
`;
}

function entryRow(e: ConceptEntry): string {
  const name = e.status === "labelled"
    ? `<b>${esc(e.concept ?? "")}</b>` +
      (e.alternatives.length > 0
        ? `<div class="alt">also: ${e.alternatives.map(esc).join(" · ")}</div>`
        : "")
    : `<span class="failed">failed: ${esc(e.reason ?? "")}</span>`;
  const examples = e.examples.map((x) =>
    `<li>${marked(x.text)} <span class="alt">(${x.activation.toPrecision(3)}, ${
      esc(x.source)
    })</span></li>`
  ).join("");
  const held = e.held_out.map((x) =>
    `<li>${marked(x.text)} <span class="alt">(${x.fires ? "fires" : "silent"})</span></li>`
  ).join("");
  const tokens = e.top_tokens.map((t) => `<code>${esc(JSON.stringify(t))}</code>`).join(" ");
  const frequent = e.frequent_tokens.map((t) =>
    `<code>${esc(JSON.stringify(t.token))}</code>×${t.count}`
  )
    .join(" ");
  const note = e.detection_reason
    ? `<div class="failed">detection: ${esc(e.detection_reason)}</div>`
    : "";
  return `<tr id="latent-${e.latent}"><td>${e.latent}</td><td>${name}${note}
<details><summary>examples</summary><ol>${examples}</ol>
<div class="alt">held-out contexts</div><ol>${held}</ol>
<div class="alt">fires most on: ${frequent}</div></details></td>
<td class="num">${num(e.detection?.f1 ?? null)}</td><td class="num">${
    num(e.baseline?.f1 ?? null)
  }</td>
<td class="num">${num(e.detection?.accuracy ?? null)}</td><td class="num">${
    (e.frequency * 100).toFixed(2)
  }%</td>
<td>${tokens}</td></tr>`;
}

/** Escape, then turn the ⟦peak⟧ marks into <mark>. */
function marked(text: string): string {
  return esc(text).replace(/⟦([\s\S]*?)⟧/g, "<mark>$1</mark>");
}

function esc(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

function num(x: number | null): string {
  return x === null || !Number.isFinite(x) ? "–" : x.toFixed(2);
}
