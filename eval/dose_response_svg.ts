/**
 * Dose–response summary and plot of intervenability rows: per configuration, mode and dose, the
 * mean and bootstrap 95% CI over latents × seeds of the KL and the token-probability rise, for
 * the edited latents and their random controls. The ablation is dose 0 of both scale and clamp.
 * @module
 */
import type { Row } from "../core/arrow_table.ts";
import { bootstrapMean } from "./bootstrap.ts";

/** One summarised point. */
export interface DosePoint {
  configuration: string;
  role: "target" | "control";
  mode: "scale" | "clamp";
  dose: number;
  n: number;
  kl: number;
  kl_low: number;
  kl_high: number;
  prob_rise: number;
  prob_rise_low: number;
  prob_rise_high: number;
  freq_rise: number;
  ppl_ratio: number;
}

/**
 * Summarise dose–response rows (as `doseResponseRow` writes them).
 *
 * @param rows The rows.
 * @param o Bootstrap resamples and seed.
 * @returns One point per configuration, role, mode (ablation copied into both) and dose.
 */
export function summarizeDoseResponse(
  rows: Row[],
  o: { resamples: number; seed: number },
): DosePoint[] {
  const groups = new Map<string, Row[]>();
  for (const r of rows) {
    const modes = r.mode === "ablate" ? ["scale", "clamp"] : [r.mode as string];
    for (const mode of modes) {
      const key = JSON.stringify([r.configuration, r.role, mode, r.dose]);
      groups.set(key, [...(groups.get(key) ?? []), r]);
    }
  }
  const points: DosePoint[] = [];
  for (const [key, group] of groups) {
    const [configuration, role, mode, dose] = JSON.parse(key);
    const stat = (name: string) =>
      bootstrapMean(
        group.map((r) => r[name] as number).filter(Number.isFinite),
        { resamples: o.resamples, seed: o.seed },
      );
    const [kl, rise] = [stat("kl"), stat("prob_rise")];
    points.push({
      configuration,
      role,
      mode,
      dose,
      n: group.length,
      kl: kl.mean,
      kl_low: kl.ciLow,
      kl_high: kl.ciHigh,
      prob_rise: rise.mean,
      prob_rise_low: rise.ciLow,
      prob_rise_high: rise.ciHigh,
      freq_rise: stat("freq_rise").mean,
      ppl_ratio: stat("ppl_ratio").mean,
    });
  }
  const order = (p: DosePoint) => [p.configuration, p.mode, p.role === "target" ? 0 : 1, p.dose];
  return points.sort((a, b) => {
    const [x, y] = [order(a), order(b)];
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
  });
}

const PANELS = [
  { metric: "kl", mode: "scale", title: "KL(edited ‖ base) · scale ×" },
  { metric: "kl", mode: "clamp", title: "KL(edited ‖ base) · clamp × max" },
  { metric: "prob_rise", mode: "scale", title: "Δ p(top tokens) · scale ×" },
  { metric: "prob_rise", mode: "clamp", title: "Δ p(top tokens) · clamp × max" },
] as const;
const STYLE = {
  target: { color: "#c0392b", dash: "" },
  control: { color: "#7f8c8d", dash: "5,4" },
} as const;

/**
 * A self-contained SVG: one row of four panels per configuration (KL and token-probability rise,
 * against scale and clamp doses), edited latents vs random controls, mean ± 95% CI.
 *
 * @param points Summarised points.
 * @returns The SVG document.
 * @example
 * ```ts
 * import { ok } from "node:assert";
 * const svg = doseResponseSvg([]);
 * ok(svg.startsWith("<svg") && svg.includes("No intervention"));
 * ```
 */
export function doseResponseSvg(points: DosePoint[]): string {
  const configurations = [...new Set(points.map((p) => p.configuration))];
  const [pw, ph, pad, top] = [230, 170, 46, 40];
  const width = PANELS.length * (pw + pad) + pad;
  const height = top + Math.max(1, configurations.length) * (ph + pad + 20) + 10;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `font-family="sans-serif" font-size="10"><rect width="100%" height="100%" fill="white"/>`,
    legend(pad),
  ];
  if (configurations.length === 0) {
    out.push(`<text x="${pad}" y="${top + 20}">No intervention results</text>`);
  }
  configurations.forEach((c, row) => {
    const y0 = top + row * (ph + pad + 20) + 20;
    out.push(`<text x="${pad}" y="${y0 - 6}" font-size="12" font-weight="bold">${esc(c)}</text>`);
    PANELS.forEach((panel, col) => {
      const x0 = pad + col * (pw + pad);
      const mine = points.filter((p) => p.configuration === c && p.mode === panel.mode);
      out.push(plotPanel(mine, panel, x0, y0, pw, ph));
    });
  });
  out.push("</svg>");
  return out.join("\n");
}

function plotPanel(
  points: DosePoint[],
  panel: typeof PANELS[number],
  x0: number,
  y0: number,
  w: number,
  h: number,
): string {
  const m = panel.metric;
  const val = (p: DosePoint, s: "" | "_low" | "_high") => {
    const v = p[`${m}${s}` as keyof DosePoint] as number;
    return Number.isFinite(v) ? v : (p[m] as number);
  };
  const xs = points.map((p) => p.dose);
  const ys = points.flatMap((p) => [val(p, "_low"), val(p, "_high")]).filter(Number.isFinite);
  const [xMax, yMin, yMax] = [Math.max(1, ...xs), Math.min(0, ...ys), Math.max(1e-9, ...ys)];
  const sx = (x: number) => x0 + (x / xMax) * w;
  const sy = (y: number) => y0 + h - ((y - yMin) / (yMax - yMin || 1)) * h;
  const parts = [
    `<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="none" stroke="#999"/>`,
    `<text x="${x0}" y="${y0 + h + 30}">${esc(panel.title)}</text>`,
    `<line x1="${x0}" x2="${x0 + w}" y1="${sy(0)}" y2="${sy(0)}" stroke="#ddd"/>`,
    `<text x="${x0 - 4}" y="${y0 + 8}" text-anchor="end">${fmt(yMax)}</text>`,
    `<text x="${x0 - 4}" y="${y0 + h}" text-anchor="end">${fmt(yMin)}</text>`,
  ];
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    parts.push(`<text x="${sx(x)}" y="${y0 + h + 12}" text-anchor="middle">${fmt(x)}</text>`);
  }
  for (const role of ["target", "control"] as const) {
    const series = points.filter((p) => p.role === role).sort((a, b) => a.dose - b.dose);
    const { color, dash } = STYLE[role];
    const path = series.map((p) => `${sx(p.dose).toFixed(1)},${sy(val(p, "")).toFixed(1)}`);
    if (path.length > 1) {
      parts.push(
        `<polyline points="${
          path.join(" ")
        }" fill="none" stroke="${color}" stroke-dasharray="${dash}"/>`,
      );
    }
    for (const p of series) {
      const x = sx(p.dose).toFixed(1);
      parts.push(
        `<line x1="${x}" x2="${x}" y1="${sy(val(p, "_low")).toFixed(1)}" y2="${
          sy(val(p, "_high")).toFixed(1)
        }" stroke="${color}"/>`,
        `<circle cx="${x}" cy="${sy(val(p, "")).toFixed(1)}" r="2.5" fill="${color}"><title>${
          esc(`${role} ${p.mode} ${p.dose}: ${fmt(val(p, ""))} (n = ${p.n})`)
        }</title></circle>`,
      );
    }
  }
  return parts.join("\n");
}

function legend(x: number): string {
  return (["target", "control"] as const).map((role, i) => {
    const { color, dash } = STYLE[role];
    const lx = x + i * 190;
    const label = role === "target" ? "edited latent" : "random-latent control";
    return `<line x1="${lx}" x2="${lx + 24}" y1="14" y2="14" stroke="${color}" ` +
      `stroke-dasharray="${dash}" stroke-width="2"/><text x="${lx + 30}" y="18">${label}` +
      ` (mean ± 95% CI)</text>`;
  }).join("\n");
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return "–";
  return Math.abs(v) >= 100 || v === 0 ? String(Math.round(v * 100) / 100) : v.toPrecision(2);
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
