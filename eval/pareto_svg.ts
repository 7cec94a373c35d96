/**
 * A self-contained SVG scatter plot of sweep trials on two metrics, with 95% CI error bars, the
 * Pareto front drawn as a staircase and the best trial marked. No fonts, scripts or links.
 * @module
 */

/** One trial in the plot. */
export interface PlotPoint {
  label: string;
  x: number;
  y: number;
  /** 95% CI half-widths (NaN or absent: no bar). */
  xErr?: number;
  yErr?: number;
  front: boolean;
  best: boolean;
}

/** Plot text and options. */
export interface PlotOptions {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  maximizeY: boolean;
  /** A dashed vertical line, e.g. the L0 budget. */
  xLine?: { value: number; label: string };
}

const LABEL_OFFSETS = [[8, -7], [8, 15], [-16, -7], [-16, 15]];
const W = 720;
const H = 480;
const M = { left: 78, right: 24, top: 76, bottom: 58 };

/**
 * Render the plot.
 *
 * @param points The trials (finite x and y).
 * @param options Titles, axis labels, direction.
 * @returns SVG text.
 * @example
 * ```ts
 * import { ok } from "node:assert";
 * const svg = paretoSvg([{ label: "0", x: 1, y: 2, front: true, best: true }], {
 *   title: "t", xLabel: "L0", yLabel: "FVU", maximizeY: false,
 * });
 * ok(svg.startsWith("<svg") && svg.includes("trial 0"));
 * ```
 */
export function paretoSvg(points: PlotPoint[], options: PlotOptions): string {
  const err = (v?: number) => (v !== undefined && Number.isFinite(v) ? v : 0);
  const xs = points.flatMap((p) => [p.x - err(p.xErr), p.x + err(p.xErr)]);
  const ys = points.flatMap((p) => [p.y - err(p.yErr), p.y + err(p.yErr)]);
  if (options.xLine) xs.push(options.xLine.value);
  const xt = ticks(xs);
  const yt = ticks(ys);
  const sx = (v: number) =>
    M.left + (v - xt[0]) / (xt[xt.length - 1] - xt[0]) * (W - M.left - M.right);
  const sy = (v: number) =>
    H - M.bottom - (v - yt[0]) / (yt[yt.length - 1] - yt[0]) * (H - M.top - M.bottom);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${
      esc(options.title)
    }</text>`,
  ];
  if (options.subtitle) {
    out.push(
      `<text x="${W / 2}" y="40" text-anchor="middle" fill="#555">${esc(options.subtitle)}</text>`,
    );
  }
  // 1. Grid, ticks and axis labels.
  for (const t of xt) {
    out.push(line(sx(t), M.top, sx(t), H - M.bottom, "#e4e4e4"));
    out.push(
      `<text x="${f(sx(t))}" y="${H - M.bottom + 16}" text-anchor="middle">${fmt(t)}</text>`,
    );
  }
  for (const t of yt) {
    out.push(line(M.left, sy(t), W - M.right, sy(t), "#e4e4e4"));
    out.push(`<text x="${M.left - 6}" y="${f(sy(t) + 4)}" text-anchor="end">${fmt(t)}</text>`);
  }
  out.push(
    `<rect x="${M.left}" y="${M.top}" width="${W - M.left - M.right}" height="${
      H - M.top - M.bottom
    }" fill="none" stroke="#333"/>`,
    `<text x="${(M.left + W - M.right) / 2}" y="${H - 14}" text-anchor="middle">${
      esc(options.xLabel)
    } (lower is better)</text>`,
    `<text transform="translate(18 ${
      (M.top + H - M.bottom) / 2
    }) rotate(-90)" text-anchor="middle">${esc(options.yLabel)} (${
      options.maximizeY ? "higher" : "lower"
    } is better)</text>`,
  );
  if (options.xLine) {
    const x = sx(options.xLine.value);
    out.push(
      `<line x1="${f(x)}" y1="${M.top}" x2="${f(x)}" y2="${
        H - M.bottom
      }" stroke="#c0392b" stroke-dasharray="5 4"/>`,
      `<text x="${f(x + 4)}" y="${M.top + 14}" fill="#c0392b">${esc(options.xLine.label)}</text>`,
    );
  }
  // 2. The Pareto front as a staircase: from each front point, across to the next one's x.
  const front = points.filter((p) => p.front).sort((a, b) => a.x - b.x);
  if (front.length > 1) {
    const path = front.map((p, i) =>
      i === 0 ? `M${f(sx(p.x))},${f(sy(p.y))}` : `H${f(sx(p.x))}V${f(sy(p.y))}`
    ).join("");
    out.push(`<path d="${path}" fill="none" stroke="#2c7fb8" stroke-width="1.5"/>`);
  }
  // 3. Error bars, then points (front filled, others hollow), best ringed, labels.
  for (const p of points) {
    const [cx, cy] = [sx(p.x), sy(p.y)];
    if (err(p.xErr) > 0) {
      const [a, b] = [sx(p.x - p.xErr!), sx(p.x + p.xErr!)];
      out.push(line(a, cy, b, cy), line(a, cy - 3, a, cy + 3), line(b, cy - 3, b, cy + 3));
    }
    if (err(p.yErr) > 0) {
      const [a, b] = [sy(p.y - p.yErr!), sy(p.y + p.yErr!)];
      out.push(line(cx, a, cx, b), line(cx - 3, a, cx + 3, a), line(cx - 3, b, cx + 3, b));
    }
  }
  const placed: number[][] = [];
  for (const p of points) {
    const [cx, cy] = [f(sx(p.x)), f(sy(p.y))];
    const fill = p.front ? "#2c7fb8" : "white";
    out.push(
      `<circle cx="${cx}" cy="${cy}" r="5" fill="${fill}" stroke="#2c7fb8" stroke-width="1.5"><title>trial ${
        esc(p.label)
      }: x ${fmt(p.x)}, y ${fmt(p.y)}</title></circle>`,
    );
    if (p.best) {
      out.push(
        `<circle cx="${cx}" cy="${cy}" r="9" fill="none" stroke="#e6550d" stroke-width="2"/>`,
      );
    }
  }
  // Labels top to bottom, each above-right or at the first free corner, so that of two close
  // points the upper one keeps the upper label.
  for (const p of [...points].sort((a, b) => b.y - a.y)) {
    const [lx, ly] = LABEL_OFFSETS.map(([dx, dy]) => [sx(p.x) + dx, sy(p.y) + dy])
      .find(([x, y]) => placed.every(([u, v]) => Math.abs(u - x) > 12 || Math.abs(v - y) > 11)) ??
      [sx(p.x) + 8, sy(p.y) - 7];
    placed.push([lx, ly]);
    out.push(`<text x="${f(lx)}" y="${f(ly)}" fill="#333">${esc(p.label)}</text>`);
  }
  // 4. Legend: one row between the titles and the plot, so it never hides a point.
  const ly = M.top - 14;
  const lx = M.left;
  out.push(
    `<circle cx="${lx + 6}" cy="${ly}" r="5" fill="#2c7fb8" stroke="#2c7fb8"/>`,
    `<text x="${lx + 16}" y="${ly + 4}">Pareto front</text>`,
    `<circle cx="${lx + 116}" cy="${ly}" r="5" fill="white" stroke="#2c7fb8" stroke-width="1.5"/>`,
    `<text x="${lx + 126}" y="${ly + 4}">dominated trial</text>`,
    `<circle cx="${lx + 246}" cy="${ly}" r="7" fill="none" stroke="#e6550d" stroke-width="2"/>`,
    `<text x="${lx + 258}" y="${ly + 4}">best by objective</text>`,
    "</svg>",
  );
  return out.join("\n") + "\n";
}

/** 4–8 round tick values covering the values, with a little room at both ends. */
function ticks(values: number[]): number[] {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) [lo, hi] = [0, 1];
  if (hi - lo < 1e-12 * Math.max(1, Math.abs(hi))) {
    const pad = Math.abs(hi) > 0 ? Math.abs(hi) * 0.1 : 1;
    [lo, hi] = [lo - pad, hi + pad];
  }
  const pad = (hi - lo) * 0.06;
  [lo, hi] = [lo - pad, hi + pad];
  const raw = (hi - lo) / 6;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((s) => s * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let t = Math.floor(lo / step) * step; t < hi + step * 0.999; t += step) {
    out.push(Number(t.toPrecision(12)));
  }
  return out;
}

function fmt(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? v.toExponential(1) : Number(v.toPrecision(4)).toString();
}

function f(v: number): string {
  return v.toFixed(1);
}

function line(x1: number, y1: number, x2: number, y2: number, stroke = "#888"): string {
  return `<line x1="${f(x1)}" y1="${f(y1)}" x2="${f(x2)}" y2="${f(y2)}" stroke="${stroke}"/>`;
}

function esc(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}
