import { deepStrictEqual, ok, strictEqual } from "node:assert";
import { validateConfig } from "../core/config.ts";
import { barChart, linearScale, lineChart, niceTicks, scatterChart } from "../eval/svg_plot.ts";
import { subsample } from "../stages/_report_html.ts";
import { report } from "../stages/report.ts";
import { pngInk } from "./fixtures/png_ink.ts";
import { FAKE_PROVENANCE, NEW_HEAD_CE, SAE_FVU, writeFakeRun } from "./fixtures/report_run.ts";

const close = (a: number, b: number) => Math.abs(a - b) < 1e-9;

/** Mean ± t·s/√n over three values, formatted as the report does, computed from scratch. */
function meanCi3(values: number[]): string {
  const mean = (values[0] + values[1] + values[2]) / 3;
  const sd = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / 2);
  return `${mean.toPrecision(4)} ± ${(4.303 * sd / Math.sqrt(3)).toPrecision(2)}`;
}

/** Throws unless every tag in the text is balanced and every attribute quoted (XML-style). */
function checkWellFormed(xml: string): void {
  const stack: string[] = [];
  const tag = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|<!--[\s\S]*?-->/g;
  let end = 0;
  for (const m of xml.matchAll(tag)) {
    const between = xml.slice(end, m.index);
    ok(!/[<>]/.test(between), `Stray < or > before "${xml.slice(m.index, m.index + 40)}"`);
    ok(!/&(?!(amp|lt|gt|quot|#\d+);)/.test(between), `Bad entity in "${between.slice(0, 60)}"`);
    end = m.index + m[0].length;
    if (m[0].startsWith("<!--") || m[4] === "/") continue;
    if (m[1] === "/") strictEqual(stack.pop(), m[2], `Unbalanced </${m[2]}>`);
    else stack.push(m[2]);
  }
  ok(!/[<>]/.test(xml.slice(end)), "Stray < or > at the end");
  deepStrictEqual(stack, [], "Unclosed tags");
}

Deno.test("linearScale maps the domain ends to the range ends, reversed for y", () => {
  const sy = linearScale([0, 5], [282, 40]);
  strictEqual(sy(0), 282);
  strictEqual(sy(5), 40);
  ok(close(sy(4), 88.4));
  ok(close(linearScale([-1, 1], [70, 540])(0), 305));
});

Deno.test("niceTicks picks round steps covering the padded range", () => {
  // [0.13, 0.87] padded by 5% of 0.74 → [0.093, 0.907]; raw step 0.163 → 0.2, from 0.
  deepStrictEqual(niceTicks([0.13, 0.87]), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  // Bars start at zero: [0, 7.35] → step 2 (raw 1.47).
  deepStrictEqual(niceTicks([3, 7], { includeZero: true }), [0, 2, 4, 6, 8]);
  deepStrictEqual(niceTicks([0, 10], { pad: 0 }), [0, 2, 4, 6, 8, 10]);
  // One value: ±10% → [4.45, 5.55], raw step 0.22 → 0.25. Nothing finite: [0, 1] → [0, 1.05].
  deepStrictEqual(niceTicks([5]), [4.25, 4.5, 4.75, 5, 5.25, 5.5, 5.75]);
  deepStrictEqual(niceTicks([NaN]), [0, 0.25, 0.5, 0.75, 1, 1.25]);
  // Negative ranges pad freely: [-3.1, -0.9], raw step 0.44 → 0.5.
  deepStrictEqual(niceTicks([-3, -1]), [-3.5, -3, -2.5, -2, -1.5, -1, -0.5]);
});

Deno.test("barChart places a bar and its CI on hand-computed pixels", () => {
  // 560×340, margins left 70, right 20, top 40, bottom 58. Values 0..5 padded to 5.25 → raw step
  // 1.05 → 2: ticks 0..6, so y = 282 − 242·v/6.
  const svg = barChart([{ label: "a", value: 4, low: 3, high: 5 }], {
    title: "t",
    xLabel: "x",
    yLabel: "y",
  });
  // One slot of 470 px centred at 305; bar 60 px wide.
  ok(svg.includes(`<rect x="275.0" y="120.7" width="60.0" height="161.3"`), svg);
  ok(svg.includes(`<line x1="305.0" y1="161.0" x2="305.0" y2="80.3"`), "CI from 3 to 5");
  checkWellFormed(svg);
});

Deno.test("scatterChart and lineChart scale points, escape text and stay well-formed", () => {
  // x: [0, 10] padded to [0, 10.5] (never below a zero start) → step 2.5 → 0..12.5;
  // y: [0, 1.1] → [0, 1.155] → step 0.25 → 0..1.25. Plot area x 70..540, y 282..60.
  const svg = scatterChart([
    { series: "a&b", x: 0, y: 0, label: "<s0>" },
    { series: "c", x: 10, y: 1, yErr: 0.1 },
  ], { title: `"q"`, xLabel: "x", yLabel: "y" });
  const sx = linearScale([0, 12.5], [70, 540]);
  const sy = linearScale([0, 1.25], [282, 60]);
  ok(svg.includes(`cx="${sx(10).toFixed(1)}" cy="${sy(1).toFixed(1)}"`), svg);
  ok(svg.includes("a&amp;b") && svg.includes("&lt;s0&gt;") && svg.includes("&quot;q&quot;"));
  checkWellFormed(svg);
  const lines = lineChart([
    { name: "seed 0", points: [{ x: 0, y: 1 }, { x: 10, y: 0 }, { x: 5, y: NaN }] },
    { name: "val", points: [{ x: 5, y: 0.5 }], dashed: true },
  ], { title: "t", xLabel: "step", yLabel: "loss" });
  strictEqual(lines.match(/<polyline/g)?.length, 2);
  ok(lines.includes(`stroke-dasharray="5 3"`));
  checkWellFormed(lines);
});

Deno.test("subsample averages buckets so a curve has at most max points", () => {
  const v = Array.from({ length: 500 }, (_, i) => i);
  const s = subsample(v, 200);
  strictEqual(s.length, 167); // buckets of 3
  deepStrictEqual(s[0], { x: 2, y: 1 });
  deepStrictEqual(s[166], { x: 499.5, y: 498.5 }); // the last bucket holds 2
  strictEqual(subsample([1, 2]).length, 2);
});

Deno.test("report writes every section with mean ± CI figures, valid SVG and no network", async () => {
  const dir = await Deno.makeTempDir();
  await writeFakeRun(dir);
  const config = validateConfig({ run: { dir } });
  const { path, sections } = await report(config, new Date(0));
  deepStrictEqual(sections, [
    "perplexity",
    "reconstruction",
    "ce",
    "losses",
    "concepts",
    "dose",
    "sweep",
  ]);
  const html = await Deno.readTextFile(path);
  // 1. Header: provenance and the resolved config.
  for (const v of Object.values(FAKE_PROVENANCE)) {
    ok(html.includes(v.replace(/</g, "&lt;").replace(/>/g, "&gt;")), v);
  }
  ok(html.includes("moby-dick &lt;fake&gt;") && html.includes(`dir = &quot;${dir}&quot;`));
  // 2. Figures as mean ± 95% CI over seeds, computed here independently.
  ok(html.includes(`<td class="n">${meanCi3(NEW_HEAD_CE)}</td>`), meanCi3(NEW_HEAD_CE));
  ok(html.includes(`<td class="n">${meanCi3(SAE_FVU)}</td>`), meanCi3(SAE_FVU));
  strictEqual(meanCi3(SAE_FVU), "0.2300 ± 0.050");
  ok(html.includes("[8.000, 12.00]") && html.includes("10.50 ± 1.3"), "perplexity CI");
  // 3. Texts escaped, links to the dictionaries relative and existing.
  ok(html.includes("Call me &lt;Ishmael&gt; &amp; original") && !html.includes("<Ishmael>"));
  ok(html.includes(`whale-23 &lt;&quot;harpoon&quot;&gt;`));
  for (const m of html.matchAll(/href="([^"#][^"]*)"/g)) await Deno.stat(`${dir}/${m[1]}`);
  ok(html.includes(`href="concepts/sae/seed-0/dictionary.html"`));
  ok(html.includes("pareto-marker"), "pareto.svg embedded");
  // 4. Self-contained: no external resources; every SVG well-formed; the page balanced.
  ok(!/(src|href)\s*=\s*["']?(https?:)?\/\//i.test(html), "external link");
  ok(!/url\(|@import|<script|<link|<img/i.test(html), "external resource or script");
  const svgs = [...html.matchAll(/<svg[\s\S]*?<\/svg>/g)].map((m) => m[0]);
  strictEqual(svgs.length, 1 + 1 + 1 + 4 + 1 + 2 + 1);
  for (const svg of svgs) checkWellFormed(svg);
  checkWellFormed(html.replace(/<!doctype html>/, "").replace(/<meta charset="utf-8">/, ""));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("report leaves out sections whose artifacts are missing", async () => {
  const dir = await Deno.makeTempDir();
  await writeFakeRun(dir, { intervene: false });
  await Deno.remove(`${dir}/perplexity`, { recursive: true });
  const { sections } = await report(validateConfig({ run: { dir } }));
  deepStrictEqual(sections, ["reconstruction", "ce", "losses", "concepts", "sweep"]);
  const empty = await Deno.makeTempDir();
  const bare = await report(validateConfig({ run: { dir: empty } }));
  deepStrictEqual(bare.sections, []);
  ok((await Deno.readTextFile(bare.path)).includes("No artifacts found yet"));
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(empty, { recursive: true });
});

Deno.test("report renders non-blank in headless Chromium", async () => {
  const browser = ["chromium", "chromium-browser"].map((b) => `/usr/bin/${b}`).find(exists);
  if (!browser) {
    console.log("skipped: no chromium in /usr/bin (apt-get install -y chromium)");
    return;
  }
  const dir = await Deno.makeTempDir();
  await writeFakeRun(dir);
  const { path } = await report(validateConfig({ run: { dir } }));
  const profile = await Deno.makeTempDir();
  const shot = `${dir}/shot.png`;
  const { code } = await new Deno.Command(browser, {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${profile}`,
      `--screenshot=${shot}`,
      "--window-size=1200,3000",
      `file://${path}`,
    ],
    stdout: "null",
    stderr: "null",
  }).output();
  strictEqual(code, 0);
  const { width, height, ink } = pngInk(await Deno.readFile(shot));
  deepStrictEqual([width, height], [1200, 3000]);
  ok(ink > 0.02, `only ${(100 * ink).toFixed(2)}% of the screenshot is inked`);
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(profile, { recursive: true });
});

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
