/**
 * The run report's HTML: one section per kind of artifact the run holds, each a chart (inline
 * SVG from eval/svg_plot.ts) and a table of mean ± 95% CI over seeds. Pure: artifacts in, text out.
 * @module
 */
import type { Row } from "../core/arrow_table.ts";
import { formatSummary, seedSummary } from "../eval/seed_stats.ts";
import {
  type Bar,
  barChart,
  escapeXml as esc,
  lineChart,
  type LineSeries,
  scatterChart,
} from "../eval/svg_plot.ts";

/** One trained model × seed's training history (from its metrics.json). */
export interface TrainingHistory {
  stage: string;
  model: string;
  seed: number;
  losses: number[];
  validations: Array<{ step: number; value: number }>;
}

/** One concept dictionary's per-latent scores. */
export interface ConceptScores {
  model: string;
  seed: number;
  rows: Row[];
  /** Relative link to its dictionary.html, or null when the page is missing. */
  href: string | null;
}

/** Everything the report shows; null or empty: the section is left out. */
export interface RunArtifacts {
  runDir: string;
  configToml: string;
  provenance: Record<string, string | number> | null;
  baselines: Row[] | null;
  /** `sae` and `lcblm` metrics tables. */
  autoencoders: Array<{ stage: string; rows: Row[] }>;
  histories: TrainingHistory[];
  perplexity: { summary: Row[]; texts: Row[] | null } | null;
  concepts: { summary: Row[]; scores: ConceptScores[] } | null;
  dose: Row[] | null;
  sweep: { trials: number; svg: string | null } | null;
}

/** Section ids in page order (also the table of contents). */
export const SECTIONS = {
  perplexity: "Perplexity of generated text",
  reconstruction: "Reconstruction: L0 vs FVU",
  ce: "Cross-entropy per head",
  losses: "Loss curves",
  concepts: "Concepts",
  dose: "Dose–response",
  sweep: "Sweep",
} as const;

/** Most points per loss curve; longer histories are averaged in buckets. */
const MAX_CURVE_POINTS = 200;
/** Most latents per dictionary in the concept table. */
const MAX_CONCEPT_ROWS = 20;

/**
 * Render the report.
 *
 * @param a The run's artifacts.
 * @param generated When the report was made (shown in the header).
 * @returns The page and the ids of the sections it holds.
 */
export function reportHtml(
  a: RunArtifacts,
  generated: string,
): { html: string; sections: string[] } {
  const parts: Array<[keyof typeof SECTIONS, string]> = [];
  if (a.perplexity) parts.push(["perplexity", perplexitySection(a.perplexity)]);
  if (a.autoencoders.length) parts.push(["reconstruction", reconstructionSection(a.autoencoders)]);
  if (a.baselines || a.autoencoders.length) {
    parts.push(["ce", ceSection(a.baselines ?? [], a.autoencoders)]);
  }
  if (a.histories.length) parts.push(["losses", lossSection(a.histories)]);
  if (a.concepts) parts.push(["concepts", conceptSection(a.concepts)]);
  if (a.dose?.length) parts.push(["dose", doseSection(a.dose)]);
  if (a.sweep) parts.push(["sweep", sweepSection(a.sweep)]);
  const toc = parts.map(([id]) => `<a href="#${id}">${esc(SECTIONS[id])}</a>`).join(" · ");
  const body = parts.map(([id, html]) =>
    `<section id="${id}">\n<h2>${esc(SECTIONS[id])}</h2>\n${html}\n</section>`
  );
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>lcblm report: ${esc(a.runDir)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>lcblm report: <code>${esc(a.runDir)}</code></h1>
${header(a, generated)}
<nav>${toc || "No artifacts found yet: run the stages first."}</nav>
${body.join("\n")}
</body>
</html>
`;
  return { html, sections: parts.map(([id]) => id) };
}

const CSS = `body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222;
line-height:1.4}h1{font-size:22px}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;
padding:3px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}td.n{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}.charts{display:flex;flex-wrap:wrap;gap:12px}
.charts svg{border:1px solid #eee}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px;
max-height:420px}.note{color:#666;font-size:13px}nav{margin:12px 0}nav a{margin-right:4px}`;

function header(a: RunArtifacts, generated: string): string {
  const prov = a.provenance
    ? table(["attribute", "value"], Object.entries(a.provenance).map(([k, v]) => [k, String(v)]))
    : `<p class="note">No embeddings.h5: provenance unknown (run "deno task extract").</p>`;
  return `<p class="note">Generated ${esc(generated)}. Every figure with ± is mean ± 95% CI over
training seeds (Student's t); perplexity CIs are bootstrap 95% CIs over texts.</p>
<h3>Provenance (embeddings.h5)</h3>
${prov}
<details><summary>Resolved configuration</summary><pre>${esc(a.configToml)}</pre></details>`;
}

function perplexitySection(p: NonNullable<RunArtifacts["perplexity"]>): string {
  const pooled = p.summary.filter((r) => r.seed === -1);
  const bars: Bar[] = pooled.map((r) => ({
    label: String(r.configuration),
    value: num(r.mean),
    low: num(r.ci_low),
    high: num(r.ci_high),
  }));
  const chart = barChart(bars, {
    title: "Judge perplexity per configuration (all seeds pooled)",
    xLabel: "configuration",
    yLabel: "perplexity (mean, bootstrap 95% CI)",
    width: 1000,
    height: 420,
  });
  const rows = pooled.map((r) => [
    String(r.configuration),
    String(r.n),
    String(r.empty),
    prec(r.mean),
    prec(r.median),
    `[${prec(r.ci_low)}, ${prec(r.ci_high)}]`,
    formatSummary({ n: 0, mean: num(r.seed_mean), ci95: num(r.seed_ci95) }),
  ]);
  const cols = ["configuration", "texts", "empty", "mean", "median", "bootstrap 95% CI"];
  let examples = "";
  if (p.texts?.length) {
    const first = pooled.map((r) =>
      p.texts!.find((t) => t.configuration === r.configuration && String(t.text).trim() !== "")
    ).filter((t): t is Row => t !== undefined);
    examples = `<h3>One sample per configuration</h3>\n${
      table(
        ["configuration", "seed", "perplexity", "text"],
        first.map((
          t,
        ) => [String(t.configuration), String(t.seed), prec(t.perplexity), clip(t.text)]),
      )
    }`;
  }
  return `<div class="charts">${chart}</div>\n${
    table([...cols, "mean over seeds ± CI"], rows)
  }\n${examples}`;
}

function reconstructionSection(stages: RunArtifacts["autoencoders"]): string {
  const rows: Row[] = stages.flatMap((s) => s.rows.map((r) => ({ ...r, stage: s.stage })));
  const chart = scatterChart(
    rows.map((r) => ({
      series: `${r.stage}/${r.model}`,
      x: num(r.l0),
      y: num(r.fvu),
      label: `seed ${r.seed}`,
    })),
    {
      title: "L0 vs FVU, every model and seed",
      xLabel: "L0 (active latents per token)",
      yLabel: "FVU (lower is better)",
      width: 720,
      height: 440,
    },
  );
  return `<div class="charts">${chart}</div>\n${summaryTable(rows, ["stage", "model"])}`;
}

function ceSection(baselines: Row[], stages: RunArtifacts["autoencoders"]): string {
  // Each head's validation CE: the baselines' heads, then per autoencoder its latent head and its
  // reconstruction through the original head.
  const heads: Array<{ label: string; group: string; values: number[] }> = [];
  const add = (label: string, group: string, values: number[]) => {
    const finite = values.filter(Number.isFinite);
    if (finite.length) heads.push({ label, group, values: finite });
  };
  for (const model of unique(baselines.map((r) => String(r.model)))) {
    add(model, "baselines", baselines.filter((r) => r.model === model).map((r) => num(r.val_ce)));
  }
  for (const s of stages) {
    for (const model of unique(s.rows.map((r) => String(r.model)))) {
      const mine = s.rows.filter((r) => r.model === model);
      add(
        `${model} latents → head`,
        `${s.stage} latent head`,
        mine.map((r) => num(r.latent_head_ce)),
      );
      add(`${model} recon → original head`, `${s.stage} recon`, mine.map((r) => num(r.ce_recon)));
    }
  }
  const stats = heads.map((h) => ({ ...h, s: seedSummary(h.values) }));
  const chart = barChart(
    stats.map((h) => ({
      label: h.label,
      group: h.group,
      value: h.s.mean,
      low: h.s.mean - h.s.ci95,
      high: h.s.mean + h.s.ci95,
    })),
    {
      title: "Validation cross-entropy per head (axis not from 0)",
      xLabel: "head",
      yLabel: "CE (nats/token; mean ± 95% CI over seeds)",
      fromZero: false,
      width: 900,
      height: 420,
    },
  );
  const rows = stats.map((h) => [h.label, h.group, String(h.s.n), formatSummary(h.s)]);
  return `<div class="charts">${chart}</div>\n${table(["head", "kind", "seeds", "CE"], rows)}\n${
    baselines.length ? summaryTable(baselines, ["model"]) : ""
  }`;
}

function lossSection(histories: TrainingHistory[]): string {
  const charts: string[] = [];
  for (const key of unique(histories.map((h) => `${h.stage}/${h.model}`))) {
    const mine = histories.filter((h) => `${h.stage}/${h.model}` === key);
    const size = { width: 470, height: 300 };
    charts.push(lineChart(
      mine.map((h) => ({ name: `seed ${h.seed}`, points: subsample(h.losses) })),
      { title: `${key}: training loss`, xLabel: "step", yLabel: "loss", ...size },
    ));
    if (mine.some((h) => h.validations.length)) {
      const metric = key.startsWith("baselines/") ? "CE" : "FVU";
      charts.push(lineChart(
        mine.map((h) => ({
          name: `seed ${h.seed}`,
          points: h.validations.map((v) => ({ x: v.step, y: v.value })),
          dashed: true,
        })),
        { title: `${key}: validation ${metric}`, xLabel: "step", yLabel: metric, ...size },
      ));
    }
  }
  return `<p class="note">Training losses averaged over at most ${MAX_CURVE_POINTS} buckets per
curve; validations as recorded.</p>\n<div class="charts">${charts.join("\n")}</div>`;
}

function conceptSection(c: NonNullable<RunArtifacts["concepts"]>): string {
  const models = unique(c.summary.map((r) => String(r.model)));
  const bars: Bar[] = models.flatMap((model) => {
    const mine = c.summary.filter((r) => r.model === model);
    return [["f1", "labels"], ["f1_shuffled", "shuffled labels"]].map(([key, group]) => {
      const s = seedSummary(mine.map((r) => num(r[key])).filter(Number.isFinite));
      return {
        label: `${model} ${group}`,
        group,
        value: s.mean,
        low: s.mean - s.ci95,
        high: s.mean + s.ci95,
      };
    });
  }).filter((b) => Number.isFinite(b.value));
  const chart = bars.length
    ? `<div class="charts">${
      barChart(bars, {
        title: "Detection F1: labels vs shuffled-label baseline",
        xLabel: "model",
        yLabel: "mean F1 over latents (± 95% CI over seeds)",
        width: 620,
        height: 360,
      })
    }</div>`
    : "";
  const link = (model: string, seed: number) => {
    const href = c.scores.find((s) => s.model === model && s.seed === seed)?.href;
    return href ? `<a href="${esc(href)}">dictionary.html</a>` : "";
  };
  const summary = table(
    ["model", "seed", "labeller", "live", "labelled", "failed", "F1", "F1 shuffled", "page"],
    c.summary.map((r) => [
      String(r.model),
      String(r.seed),
      String(r.labeller),
      String(r.live),
      String(r.labelled),
      String(r.failed),
      fixed(r.f1),
      fixed(r.f1_shuffled),
      { html: link(String(r.model), num(r.seed)) },
    ]),
  );
  const offline = c.summary.some((r) => String(r.labeller).startsWith("offline"))
    ? `<p class="note">Labels from the offline top-token labeller, not an LLM.</p>`
    : "";
  // Each dictionary's best latents, collapsed but the first: six tables would bury the page.
  const dictionaries = c.scores.map((d, i) => {
    const f1 = (r: Row) => (Number.isFinite(num(r.f1)) ? num(r.f1) : -1);
    const shown = d.rows.filter((r) => r.status === "labelled").sort((x, y) => f1(y) - f1(x))
      .slice(0, MAX_CONCEPT_ROWS);
    const more = d.rows.length - shown.length;
    const rows = shown.map((r) => [
      String(r.latent),
      String(r.concept),
      prec(r.frequency, 3),
      fixed(r.f1),
      fixed(r.baseline_f1),
      fixed(r.accuracy),
      fixed(r.baseline_accuracy),
    ]);
    const cols = [
      "latent",
      "concept",
      "frequency",
      "F1",
      "F1 shuffled",
      "accuracy",
      "acc. shuffled",
    ];
    const note = more > 0
      ? `<p class="note">${more} more latents (failed or lower F1) in the dictionary page.</p>`
      : "";
    return `<details${i === 0 ? ` open=""` : ""}><summary>${
      esc(d.model)
    } seed ${d.seed}: top ${shown.length} latents by detection F1</summary>\n${
      table(cols, rows)
    }${note}</details>`;
  });
  return `${offline}${chart}\n${summary}\n${dictionaries.join("\n")}`;
}

function doseSection(rows: Row[]): string {
  // The table's shape is the intervene stage's: x is its scale column, series are its text
  // columns, every other numeric column is a metric averaged (± 95% CI) over seeds and latents.
  const cols = unique(rows.flatMap((r) => Object.keys(r)));
  const x = ["scale", "dose", "alpha", "factor", "value"].find((c) => cols.includes(c));
  if (!x) {
    return `<p class="note">dose_response.arrow has no scale column; columns: ${
      esc(cols.join(", "))
    }</p>`;
  }
  const skip = new Set([x, "seed", "latent", "sample", "n", "step"]);
  const textCols = cols.filter((c) => rows.some((r) => typeof r[c] === "string"));
  const metrics = cols.filter((c) =>
    !skip.has(c) && !textCols.includes(c) && !/(_ci95|_low|_high|_std)$/.test(c) &&
    rows.some((r) => typeof r[c] === "number")
  );
  const group = (r: Row) => textCols.map((c) => String(r[c])).join(" / ") || "all";
  const charts = metrics.map((m) => {
    const series: LineSeries[] = unique(rows.map(group)).map((g) => {
      const mine = rows.filter((r) => group(r) === g);
      const xs = unique(mine.map((r) => String(num(r[x])))).map(Number).sort((p, q) => p - q);
      return {
        name: g,
        points: xs.map((v) => {
          const s = seedSummary(
            mine.filter((r) => num(r[x]) === v).map((r) => num(r[m])).filter(Number.isFinite),
          );
          return { x: v, y: s.mean, yErr: s.ci95 };
        }),
      };
    });
    return lineChart(series, {
      title: `${m} vs ${x}`,
      xLabel: x,
      yLabel: m,
      width: 470,
      height: 320,
    });
  });
  return `<div class="charts">${charts.join("\n")}</div>`;
}

function sweepSection(s: NonNullable<RunArtifacts["sweep"]>): string {
  const svg = s.svg ? `<div class="charts">${s.svg.replace(/^<\?xml[^>]*>\s*/, "")}</div>` : "";
  return `<p class="note">${s.trials} rows (trial × seed) in sweep/results.arrow.</p>\n${svg}`;
}

/** Mean ± CI of every numeric column (a row each) per key (a column each), seeds pooled. */
function summaryTable(rows: Row[], keys: string[]): string {
  const metrics = unique(rows.flatMap((r) => Object.keys(r))).filter((c) =>
    c !== "seed" && !keys.includes(c) && rows.some((r) => typeof r[c] === "number")
  );
  const id = (r: Row) => keys.map((k) => String(r[k])).join(" / ");
  const groups = unique(rows.map(id)).map((g) => ({ g, mine: rows.filter((r) => id(r) === g) }));
  const body = [
    ["seeds", ...groups.map(({ mine }) => String(mine.length))],
    ...metrics.map((m) => [
      m,
      ...groups.map(({ mine }) => {
        const v = mine.map((r) => r[m]).filter((x): x is number =>
          typeof x === "number" && Number.isFinite(x)
        );
        return v.length ? formatSummary(seedSummary(v)) : "–";
      }),
    ]),
  ];
  return table([keys.join(" / "), ...groups.map(({ g }) => g)], body);
}

/** Bucket means of a long series, x at each bucket's middle step. */
export function subsample(
  values: number[],
  max = MAX_CURVE_POINTS,
): Array<{ x: number; y: number }> {
  const size = Math.max(1, Math.ceil(values.length / max));
  const out: Array<{ x: number; y: number }> = [];
  for (let start = 0; start < values.length; start += size) {
    const bucket = values.slice(start, start + size).filter(Number.isFinite);
    if (!bucket.length) continue;
    const end = Math.min(values.length, start + size);
    out.push({
      x: (start + end - 1) / 2 + 1,
      y: bucket.reduce((p, q) => p + q, 0) / bucket.length,
    });
  }
  return out;
}

type Cell = string | { html: string };

function table(columns: string[], rows: Cell[][]): string {
  const cell = (c: Cell) => {
    if (typeof c !== "string") return `<td>${c.html}</td>`;
    const numeric = /^[-+\d.e ±naN/[\],–]+$/i.test(c) && /\d/.test(c);
    return `<td${numeric ? ` class="n"` : ""}>${esc(c)}</td>`;
  };
  return `<table>\n<tr>${columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr>\n${
    rows.map((r) => `<tr>${r.map(cell).join("")}</tr>`).join("\n")
  }\n</table>`;
}

function num(v: Row[string] | undefined): number {
  return typeof v === "number" ? v : NaN;
}

function prec(v: Row[string] | undefined, digits = 4): string {
  const n = num(v);
  return Number.isFinite(n) ? n.toPrecision(digits) : "–";
}

function fixed(v: Row[string] | undefined): string {
  const n = num(v);
  return Number.isFinite(n) ? n.toFixed(3) : "–";
}

function clip(v: Row[string] | undefined, n = 240): string {
  const text = String(v ?? "").replace(/\s+/g, " ");
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}
