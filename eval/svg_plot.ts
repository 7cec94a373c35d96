/**
 * Small self-contained SVG charts for the run report: a bar chart with CI error bars, a scatter
 * plot with error bars and point labels, and a line chart with several series. Every chart has
 * axes, round ticks, axis labels and a legend; all text is escaped; no fonts, scripts or links.
 * @module
 */

/** Shared chart text and size. */
export interface ChartOptions {
  title: string;
  /** Bar charts only: false lets the value axis start near the data instead of at 0. */
  fromZero?: boolean;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
}

/** One bar; `low`/`high` are the ends of its error bar (e.g. a 95% CI), absent or NaN: none. */
export interface Bar {
  label: string;
  value: number;
  low?: number;
  high?: number;
  /** Legend group; bars of one group share a colour. */
  group?: string;
}

/** One scatter point; `xErr`/`yErr` are CI half-widths (absent or NaN: no bar). */
export interface ScatterPoint {
  series: string;
  x: number;
  y: number;
  xErr?: number;
  yErr?: number;
  label?: string;
}

/** One line; `dashed` draws it dashed (e.g. validation next to training). */
export interface LineSeries {
  name: string;
  points: Array<{ x: number; y: number; yErr?: number }>;
  dashed?: boolean;
}

/** Colour-blind-friendly palette (Okabe–Ito), cycled. */
export const PALETTE = [
  "#0072b2",
  "#e69f00",
  "#009e73",
  "#cc79a7",
  "#56b4e9",
  "#d55e00",
  "#999933",
  "#000000",
];

/**
 * A linear map from a data interval to a pixel interval.
 *
 * @param domain Data interval [d0, d1] (d0 ≠ d1).
 * @param range Pixel interval [r0, r1] (may be reversed, as for a y axis).
 * @returns The map.
 * @example
 * ```ts
 * import { strictEqual } from "node:assert";
 * strictEqual(linearScale([0, 10], [100, 0])(2.5), 75);
 * ```
 */
export function linearScale(
  domain: [number, number],
  range: [number, number],
): (v: number) => number {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  return (v) => r0 + (v - d0) / (d1 - d0) * (r1 - r0);
}

/**
 * Round tick values (steps of 1, 2, 2.5 or 5 × 10ⁿ) covering the values with a little room.
 *
 * @param values Values to cover (non-finite ones ignored; none: [0, 1]).
 * @param options `includeZero` extends the range to 0 (bar charts); `pad` is the fraction added
 *   at both ends before rounding (default 0.05).
 * @returns Ascending ticks; the first and last are the axis ends.
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * deepStrictEqual(niceTicks([0, 10], { pad: 0 }), [0, 2, 4, 6, 8, 10]);
 * ```
 */
export function niceTicks(
  values: number[],
  options: { includeZero?: boolean; pad?: number } = {},
): number[] {
  const finite = values.filter(Number.isFinite);
  if (options.includeZero) finite.push(0);
  let lo = finite.length ? Math.min(...finite) : 0;
  let hi = finite.length ? Math.max(...finite) : 1;
  if (hi - lo < 1e-12 * Math.max(1, Math.abs(hi))) {
    const pad = Math.abs(hi) > 0 ? Math.abs(hi) * 0.1 : 1;
    [lo, hi] = [lo - pad, hi + pad];
  }
  const pad = (hi - lo) * (options.pad ?? 0.05);
  // Padding never pushes an axis that starts at zero below it.
  [lo, hi] = [lo >= 0 && lo - pad < 0 ? 0 : lo - pad, hi + pad];
  const raw = (hi - lo) / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((s) => s * mag).find((s) => s >= raw * (1 - 1e-9))!;
  const first = Math.floor(lo / step + 1e-9) * step;
  const out: number[] = [];
  for (let i = 0; first + i * step < hi + step * (1 - 1e-9); i++) {
    out.push(Number((first + i * step).toPrecision(12)));
  }
  if (out.length < 2) out.push(Number((first + step).toPrecision(12)));
  return out;
}

/**
 * A vertical bar chart with error bars; long labels are rotated.
 *
 * @param bars The bars, left to right.
 * @param options Titles and size.
 * @returns SVG text.
 * @example
 * ```ts
 * import { ok } from "node:assert";
 * const svg = barChart([{ label: "a<b", value: 2, low: 1, high: 3 }], {
 *   title: "t", xLabel: "x", yLabel: "y",
 * });
 * ok(svg.startsWith("<svg") && svg.includes("a&lt;b"));
 * ```
 */
export function barChart(bars: Bar[], options: ChartOptions): string {
  const groups = unique(bars.map((b) => b.group ?? ""));
  const longest = Math.max(0, ...bars.map((b) => b.label.length));
  const rotate = longest * 7 > 600 / Math.max(1, bars.length);
  const frame = new Frame(options, {
    bottom: rotate ? 50 + Math.min(longest, 34) * 5 : 58,
    top: groups.length > 1 ? 60 : 40,
  });
  const fromZero = options.fromZero ?? true;
  const ticks = niceTicks(bars.flatMap((b) => [b.value, b.low ?? NaN, b.high ?? NaN]), {
    includeZero: fromZero,
  });
  const sy = frame.yAxis(ticks);
  const slot = frame.plotWidth / Math.max(1, bars.length);
  const out = frame.open();
  bars.forEach((b, i) => {
    const cx = frame.m.left + slot * (i + 0.5);
    const w = Math.min(60, slot * 0.7);
    const floor = fromZero ? 0 : ticks[0];
    const [top, base] = [sy(Math.max(b.value, floor)), sy(Math.min(b.value, floor))];
    const colour = PALETTE[groups.indexOf(b.group ?? "") % PALETTE.length];
    out.push(
      `<rect x="${f(cx - w / 2)}" y="${f(top)}" width="${f(w)}" height="${
        f(Math.max(0, base - top))
      }" fill="${colour}" fill-opacity="0.8"><title>${esc(b.label)}: ${fmt(b.value)}${
        ciText(b.low, b.high)
      }</title></rect>`,
    );
    if (Number.isFinite(b.low) && Number.isFinite(b.high)) {
      out.push(errorBar(cx, sy(b.low!), cx, sy(b.high!), true));
    }
    const y = frame.height - frame.m.bottom + 14;
    out.push(
      rotate
        ? `<text transform="translate(${f(cx + 4)} ${y}) rotate(-35)" text-anchor="end">${
          esc(clip(b.label, 34))
        }</text>`
        : `<text x="${f(cx)}" y="${y}" text-anchor="middle">${esc(b.label)}</text>`,
    );
  });
  if (groups.length > 1) out.push(legend(frame, groups.map((g) => ({ name: g }))));
  return frame.close(out);
}

/**
 * A scatter plot with error bars; series share a colour and marker, points may carry labels.
 *
 * @param points The points (non-finite x or y are skipped).
 * @param options Titles and size.
 * @returns SVG text.
 * @example
 * ```ts
 * import { ok } from "node:assert";
 * const svg = scatterChart([{ series: "sae", x: 8, y: 0.2, label: "seed 0" }], {
 *   title: "t", xLabel: "L0", yLabel: "FVU",
 * });
 * ok(svg.includes("seed 0") && svg.includes("<circle"));
 * ```
 */
export function scatterChart(points: ScatterPoint[], options: ChartOptions): string {
  const shown = points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const series = unique(shown.map((p) => p.series));
  const frame = new Frame(options, { top: 60 });
  const e = (v?: number) => (v !== undefined && Number.isFinite(v) ? v : 0);
  const sx = frame.xAxis(niceTicks(shown.flatMap((p) => [p.x - e(p.xErr), p.x + e(p.xErr)])));
  const sy = frame.yAxis(niceTicks(shown.flatMap((p) => [p.y - e(p.yErr), p.y + e(p.yErr)])));
  const out = frame.open();
  for (const p of shown) {
    const [cx, cy] = [sx(p.x), sy(p.y)];
    if (e(p.xErr) > 0) out.push(errorBar(sx(p.x - p.xErr!), cy, sx(p.x + p.xErr!), cy, false));
    if (e(p.yErr) > 0) out.push(errorBar(cx, sy(p.y - p.yErr!), cx, sy(p.y + p.yErr!), true));
  }
  for (const p of shown) {
    const colour = PALETTE[series.indexOf(p.series) % PALETTE.length];
    const [cx, cy] = [f(sx(p.x)), f(sy(p.y))];
    out.push(
      `<circle cx="${cx}" cy="${cy}" r="5" fill="${colour}" fill-opacity="0.85" stroke="white"><title>${
        esc(p.series)
      }${p.label ? ` ${esc(p.label)}` : ""}: x ${fmt(p.x)}, y ${fmt(p.y)}</title></circle>`,
    );
    if (p.label) {
      out.push(
        `<text x="${f(sx(p.x) + 7)}" y="${f(sy(p.y) - 6)}" font-size="10" fill="#444">${
          esc(p.label)
        }</text>`,
      );
    }
  }
  out.push(legend(frame, series.map((name) => ({ name }))));
  return frame.close(out);
}

/**
 * A line chart of several series (optionally dashed, optionally with y error bars).
 *
 * @param series The series (non-finite points are skipped).
 * @param options Titles and size.
 * @returns SVG text.
 * @example
 * ```ts
 * import { ok } from "node:assert";
 * const svg = lineChart([{ name: "seed 0", points: [{ x: 0, y: 1 }, { x: 1, y: 0.5 }] }], {
 *   title: "loss", xLabel: "step", yLabel: "loss",
 * });
 * ok(svg.includes("<polyline") && svg.includes("seed 0"));
 * ```
 */
export function lineChart(series: LineSeries[], options: ChartOptions): string {
  const clean = series.map((s) => ({
    ...s,
    points: s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)),
  }));
  const all = clean.flatMap((s) => s.points);
  const e = (v?: number) => (v !== undefined && Number.isFinite(v) ? v : 0);
  const frame = new Frame(options, { top: 60 });
  const sx = frame.xAxis(niceTicks(all.map((p) => p.x), { pad: 0 }));
  const sy = frame.yAxis(niceTicks(all.flatMap((p) => [p.y - e(p.yErr), p.y + e(p.yErr)])));
  const out = frame.open();
  clean.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const dash = s.dashed ? ` stroke-dasharray="5 3"` : "";
    const xy = s.points.map((p) => `${f(sx(p.x))},${f(sy(p.y))}`).join(" ");
    out.push(
      `<polyline points="${xy}" fill="none" stroke="${colour}" stroke-width="1.5"${dash}><title>${
        esc(s.name)
      }</title></polyline>`,
    );
    for (const p of s.points) {
      if (e(p.yErr) > 0) {
        out.push(errorBar(sx(p.x), sy(p.y - p.yErr!), sx(p.x), sy(p.y + p.yErr!), true));
      }
    }
    if (s.points.length <= 30) {
      for (const p of s.points) {
        out.push(`<circle cx="${f(sx(p.x))}" cy="${f(sy(p.y))}" r="2.5" fill="${colour}"/>`);
      }
    }
  });
  out.push(legend(frame, clean.map((s) => ({ name: s.name, dashed: s.dashed, line: true }))));
  return frame.close(out);
}

/** Plot area, axes and the surrounding text of one chart. */
class Frame {
  readonly width: number;
  readonly height: number;
  readonly m: { left: number; right: number; top: number; bottom: number };
  #grid: string[] = [];

  constructor(readonly o: ChartOptions, margins: { top?: number; bottom?: number } = {}) {
    this.width = o.width ?? 560;
    this.height = o.height ?? 340;
    this.m = { left: 70, right: 20, top: margins.top ?? 40, bottom: margins.bottom ?? 58 };
  }

  get plotWidth(): number {
    return this.width - this.m.left - this.m.right;
  }

  /** Draw the x grid and tick labels; returns the scale. */
  xAxis(ticks: number[]): (v: number) => number {
    const s = linearScale([ticks[0], ticks[ticks.length - 1]], [
      this.m.left,
      this.width - this.m.right,
    ]);
    for (const t of ticks) {
      this.#grid.push(
        line(s(t), this.m.top, s(t), this.height - this.m.bottom, "#e4e4e4"),
        `<text x="${f(s(t))}" y="${this.height - this.m.bottom + 16}" text-anchor="middle">${
          fmt(t)
        }</text>`,
      );
    }
    return s;
  }

  /** Draw the y grid and tick labels; returns the scale. */
  yAxis(ticks: number[]): (v: number) => number {
    const s = linearScale([ticks[0], ticks[ticks.length - 1]], [
      this.height - this.m.bottom,
      this.m.top,
    ]);
    for (const t of ticks) {
      this.#grid.push(
        line(this.m.left, s(t), this.width - this.m.right, s(t), "#e4e4e4"),
        `<text x="${this.m.left - 6}" y="${f(s(t) + 4)}" text-anchor="end">${fmt(t)}</text>`,
      );
    }
    return s;
  }

  /** The opening tag, background, title, axis labels and grid. */
  open(): string[] {
    const { width: w, height: h, m, o } = this;
    return [
      `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif" font-size="11">`,
      `<rect width="${w}" height="${h}" fill="white"/>`,
      `<text x="${w / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${
        esc(o.title)
      }</text>`,
      ...this.#grid,
      `<text x="${(m.left + w - m.right) / 2}" y="${h - 8}" text-anchor="middle">${
        esc(o.xLabel)
      }</text>`,
      `<text transform="translate(16 ${
        (m.top + h - m.bottom) / 2
      }) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`,
    ];
  }

  /** The plot border and the closing tag. */
  close(out: string[]): string {
    const { width: w, height: h, m } = this;
    out.push(
      `<rect x="${m.left}" y="${m.top}" width="${w - m.left - m.right}" height="${
        h - m.top - m.bottom
      }" fill="none" stroke="#333"/>`,
      "</svg>",
    );
    return out.join("\n") + "\n";
  }
}

/** A legend row (wrapping) between the title and the plot. */
function legend(
  frame: Frame,
  items: Array<{ name: string; dashed?: boolean; line?: boolean }>,
): string {
  const out: string[] = [];
  let [x, y] = [frame.m.left, 38];
  items.forEach((item, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const width = 22 + Math.min(item.name.length, 28) * 6.2 + 14;
    if (x + width > frame.width - frame.m.right && x > frame.m.left) {
      [x, y] = [frame.m.left, y + 14];
    }
    out.push(
      item.line
        ? `<line x1="${x}" y1="${y}" x2="${x + 16}" y2="${y}" stroke="${colour}" stroke-width="2"${
          item.dashed ? ` stroke-dasharray="4 2"` : ""
        }/>`
        : `<rect x="${x + 3}" y="${y - 5}" width="10" height="10" fill="${colour}"/>`,
      `<text x="${f(x + 20)}" y="${y + 4}">${esc(clip(item.name, 28))}</text>`,
    );
    x += width;
  });
  return out.join("\n");
}

function errorBar(x1: number, y1: number, x2: number, y2: number, vertical: boolean): string {
  const cap = (x: number, y: number) =>
    vertical ? line(x - 4, y, x + 4, y, "#333") : line(x, y - 4, x, y + 4, "#333");
  return [line(x1, y1, x2, y2, "#333"), cap(x1, y1), cap(x2, y2)].join("");
}

function ciText(low?: number, high?: number): string {
  return Number.isFinite(low) && Number.isFinite(high)
    ? ` (95% CI ${fmt(low!)} to ${fmt(high!)})`
    : "";
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

function clip(text: string, n: number): string {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

function fmt(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e5 || a < 1e-3 ? v.toExponential(1) : Number(v.toPrecision(4)).toString();
}

function f(v: number): string {
  return v.toFixed(1);
}

function line(x1: number, y1: number, x2: number, y2: number, stroke: string): string {
  return `<line x1="${f(x1)}" y1="${f(y1)}" x2="${f(x2)}" y2="${f(y2)}" stroke="${stroke}"/>`;
}

/**
 * Escape text for XML/HTML content and attribute values.
 *
 * @param text Any text.
 * @returns The text with `& < > " '` replaced by entities.
 * @example
 * ```ts
 * import { strictEqual } from "node:assert";
 * strictEqual(escapeXml(`<a href="x">&'`), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
 * ```
 */
export function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

const esc = escapeXml;
