/**
 * Learning curves over a training run: find its checkpoints, order them by words seen, and write
 * the headline numbers as a table (JSON, CSV) and as a plot (a self-contained SVG, and an HTML page
 * holding the SVG and the table; no scripts, no external fonts or files).
 * @module
 */
import { isTemporaryName } from "../model/checkpoint.ts";
import { fmt, formatWords } from "./report.ts";

/** A model directory of a run and the words its model had seen. */
export interface Checkpoint {
  dir: string;
  name: string;
  words: number;
}

/** Keys of `training_state.json` that may hold the number of words seen. */
const WORD_KEYS = ["wordsSeen", "words_seen", "words"];

/** Words seen from a checkpoint name: `checkpoint_10M` (or the 2026 revision name `chck_10M`) → 1e7, `checkpoint_1.5B`, `checkpoint_250K`, `checkpoint_1200`. */
export function wordsFromName(name: string): number | undefined {
  const m = /^(?:checkpoint|chck)[_-]?(\d+(?:\.\d+)?)([kmbg]?)(?:[_-]?words)?$/i.exec(name);
  if (!m) return undefined;
  const scale: Record<string, number> = { "": 1, k: 1e3, m: 1e6, b: 1e9, g: 1e9 };
  return Math.round(Number(m[1]) * scale[m[2].toLowerCase()]);
}

/** The first of {@link WORD_KEYS} holding a number, searched breadth-first up to 3 levels deep. */
export function wordsFromState(state: unknown): number | undefined {
  let level: unknown[] = [state];
  for (let depth = 0; depth < 3 && level.length > 0; depth++) {
    const next: unknown[] = [];
    for (const o of level) {
      if (typeof o !== "object" || o === null || Array.isArray(o)) continue;
      const rec = o as Record<string, unknown>;
      for (const k of WORD_KEYS) {
        if (typeof rec[k] === "number" && Number.isFinite(rec[k])) return rec[k] as number;
      }
      next.push(...Object.values(rec));
    }
    level = next;
  }
  return undefined;
}

/**
 * The checkpoints of a run: every folder directly under `runDir` or `runDir/checkpoints` that holds
 * a `config.json` (a Hugging Face model directory), with its words seen from its
 * `training_state.json` or else from its name. Folders whose words are unknown are returned in
 * `skipped` with the reason. Sorted by words seen, then name.
 */
export async function findCheckpoints(
  runDir: string,
): Promise<{ checkpoints: Checkpoint[]; skipped: string[] }> {
  const checkpoints: Checkpoint[] = [], skipped: string[] = [];
  let found = false;
  for (const base of [runDir, `${runDir}/checkpoints`]) {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(base)];
      found = true;
    } catch {
      continue;
    }
    for (const e of entries) {
      // A checkpoint folder a kill left half-written (or half-replaced) is not a checkpoint.
      if (!e.isDirectory || isTemporaryName(e.name)) continue;
      const dir = `${base}/${e.name}`;
      if (!(await isFile(`${dir}/config.json`))) continue;
      let words: number | undefined;
      let reason = "no training_state.json with a words count and no count in the name";
      if (await isFile(`${dir}/training_state.json`)) {
        try {
          words = wordsFromState(JSON.parse(await Deno.readTextFile(`${dir}/training_state.json`)));
        } catch (err) {
          reason = `${dir}/training_state.json is not valid JSON (${(err as Error).message})`;
        }
      }
      words ??= wordsFromName(e.name);
      if (words === undefined) skipped.push(`${dir}: ${reason}`);
      else checkpoints.push({ dir, name: e.name, words });
    }
  }
  if (!found) throw new Error(`run ${runDir}: expected a folder, found none`);
  checkpoints.sort((a, b) => a.words - b.words || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { checkpoints, skipped };
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** One checkpoint's headline numbers. */
export interface CurvePoint {
  name: string;
  words: number;
  headline: Record<string, number>;
}

/** The metric names over all points, in first-seen order. */
export function curveMetrics(points: CurvePoint[]): string[] {
  const seen = new Set<string>();
  for (const p of points) for (const k of Object.keys(p.headline)) seen.add(k);
  return [...seen];
}

/** The learning curve as JSON: metrics, then one row per checkpoint (null where missing). */
export function curveJson(points: CurvePoint[]): string {
  const metrics = curveMetrics(points);
  const rows = points.map((p) => ({
    checkpoint: p.name,
    words: p.words,
    ...Object.fromEntries(metrics.map((m) => [m, Number.isFinite(p.headline[m]) ? p.headline[m] : null])),
  }));
  return JSON.stringify({ metrics, rows }, null, 2) + "\n";
}

function csvField(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** The learning curve as CSV: checkpoint, words_seen, one column per metric (empty where missing). */
export function curveCsv(points: CurvePoint[]): string {
  const metrics = curveMetrics(points);
  const lines = [["checkpoint", "words_seen", ...metrics].map(csvField).join(",")];
  for (const p of points) {
    const vals = metrics.map((m) => (Number.isFinite(p.headline[m]) ? String(p.headline[m]) : ""));
    lines.push([csvField(p.name), String(p.words), ...vals].join(","));
  }
  return lines.join("\n") + "\n";
}

/** Escape text for XML content and attributes. */
export function xmlEscape(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");
}

/** About five round tick values covering [lo, hi]. */
function niceTicks(lo: number, hi: number): number[] {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

/** What a headline number measures, for panel titles. */
export function metricUnit(metric: string): string {
  if (metric.startsWith("reading/")) return "ΔR², % of possible";
  if (metric.endsWith("/bits_per_word")) return "bits per word";
  if (metric.endsWith("/mean_surprisal")) return "surprisal, nats";
  if (metric === "wug") return "Spearman rho";
  return "accuracy, %";
}

const PANEL_W = 330, PANEL_H = 230, MARGIN = { left: 54, right: 14, top: 28, bottom: 40 };

/** One panel: a metric against words seen (log scale when the words span 10× or more). */
function panel(points: CurvePoint[], metric: string, ox: number, oy: number): string {
  const pts = points.filter((p) => Number.isFinite(p.headline[metric]));
  const w = PANEL_W - MARGIN.left - MARGIN.right, h = PANEL_H - MARGIN.top - MARGIN.bottom;
  const x0 = ox + MARGIN.left, y0 = oy + MARGIN.top;
  const parts: string[] = [
    `<g class="panel">`,
    `<text x="${x0 + w / 2}" y="${oy + 16}" text-anchor="middle" class="title">${xmlEscape(metric)}` +
    `<tspan class="unit"> (${xmlEscape(metricUnit(metric))})</tspan></text>`,
    `<rect x="${x0}" y="${y0}" width="${w}" height="${h}" class="frame"/>`,
  ];
  if (pts.length === 0) {
    parts.push(
      `<text x="${x0 + w / 2}" y="${y0 + h / 2}" text-anchor="middle" class="note">no data</text></g>`,
    );
    return parts.join("\n");
  }
  const words = points.map((p) => p.words);
  const wmin = Math.min(...words), wmax = Math.max(...words);
  const log = wmin > 0 && wmax / wmin >= 10;
  const fx = (v: number) => (log ? Math.log10(v) : v);
  const [a, b] = [fx(wmin), fx(wmax)];
  const xs = (v: number) => x0 + (b > a ? ((fx(v) - a) / (b - a)) * w : w / 2);
  const vals = pts.map((p) => p.headline[metric]);
  let lo = Math.min(...vals), hi = Math.max(...vals);
  const pad = (hi - lo) * 0.08 || Math.max(Math.abs(hi) * 0.05, 0.01);
  lo -= pad;
  hi += pad;
  const ys = (v: number) => y0 + h - ((v - lo) / (hi - lo)) * h;
  for (const t of niceTicks(lo, hi)) {
    if (t < lo || t > hi) continue;
    parts.push(
      `<line x1="${x0}" x2="${x0 + w}" y1="${ys(t).toFixed(1)}" y2="${ys(t).toFixed(1)}" class="grid"/>`,
    );
    parts.push(
      `<text x="${x0 - 5}" y="${(ys(t) + 4).toFixed(1)}" text-anchor="end" class="tick">${t}</text>`,
    );
  }
  const xticks = log
    ? Array.from({ length: Math.floor(b) - Math.ceil(a) + 1 }, (_, i) => 10 ** (Math.ceil(a) + i))
    : niceTicks(wmin, wmax).filter((t) => t >= wmin && t <= wmax);
  for (const t of xticks) {
    parts.push(
      `<line x1="${xs(t).toFixed(1)}" x2="${xs(t).toFixed(1)}" y1="${y0}" y2="${y0 + h}" class="grid"/>`,
    );
    parts.push(
      `<text x="${xs(t).toFixed(1)}" y="${y0 + h + 15}" text-anchor="middle" class="tick">${
        formatWords(t)
      }</text>`,
    );
  }
  parts.push(
    `<text x="${x0 + w / 2}" y="${y0 + h + 32}" text-anchor="middle" class="axis">words seen${
      log ? " (log scale)" : ""
    }</text>`,
  );
  const path = pts.map((p, i) =>
    `${i ? "L" : "M"}${xs(p.words).toFixed(1)},${ys(p.headline[metric]).toFixed(1)}`
  ).join(" ");
  parts.push(`<path d="${path}" class="line"/>`);
  for (const p of pts) {
    const v = p.headline[metric];
    parts.push(
      `<circle cx="${xs(p.words).toFixed(1)}" cy="${ys(v).toFixed(1)}" r="3.5" class="dot">` +
        `<title>${
          xmlEscape(`${p.name}: ${formatWords(p.words)} words, ${metric} = ${fmt(v, 3)}`)
        }</title></circle>`,
    );
  }
  parts.push("</g>");
  return parts.join("\n");
}

/** The learning curves as one standalone SVG: a panel per metric, three panels a row. */
export function curveSvg(points: CurvePoint[], title: string): string {
  const metrics = curveMetrics(points);
  const cols = Math.max(1, Math.min(3, metrics.length));
  const rows = Math.max(1, Math.ceil(metrics.length / cols));
  const W = cols * PANEL_W, H = rows * PANEL_H + 36;
  const body = metrics.map((m, i) =>
    panel(points, m, (i % cols) * PANEL_W, 36 + Math.floor(i / cols) * PANEL_H)
  );
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`,
    `<style>.title{font-size:13px;font-weight:bold}.unit{font-weight:normal;fill:#555}.tick{font-size:10px;fill:#444}.axis{font-size:11px;fill:#333}` +
    `.note{font-size:12px;fill:#888}.frame{fill:#fff;stroke:#999}.grid{stroke:#e4e4e4}` +
    `.line{fill:none;stroke:#1f6fb4;stroke-width:2}.dot{fill:#1f6fb4}</style>`,
    `<rect width="${W}" height="${H}" fill="#fafafa"/>`,
    `<text x="10" y="22" font-size="15">${xmlEscape(title)}</text>`,
    ...body,
    `</svg>`,
  ].join("\n") + "\n";
}

/** An HTML page with the plot and the table; opens in any browser without network access. */
export function curveHtml(points: CurvePoint[], title: string): string {
  const metrics = curveMetrics(points);
  const head = ["checkpoint", "words seen", ...metrics].map((h) => `<th>${xmlEscape(h)}</th>`).join("");
  const rows = points.map((p) =>
    `<tr><td>${xmlEscape(p.name)}</td><td>${formatWords(p.words)}</td>` +
    metrics.map((m) => `<td>${fmt(p.headline[m], 3)}</td>`).join("") + "</tr>"
  );
  return [
    "<!doctype html>",
    `<html lang="en"><head><meta charset="utf-8"><title>${xmlEscape(title)}</title>`,
    "<style>body{font-family:sans-serif;margin:20px;color:#222}table{border-collapse:collapse;margin-top:16px}" +
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}</style>",
    `</head><body><h1>${xmlEscape(title)}</h1>`,
    curveSvg(points, title),
    `<table><thead><tr>${head}</tr></thead><tbody>`,
    ...rows,
    "</tbody></table>",
    "<p>Choice tasks: accuracy in percent (mean over UIDs); wug: Spearman rho; reading: ΔR² as a percentage of the possible increase.</p>",
    "</body></html>",
  ].join("\n") + "\n";
}
