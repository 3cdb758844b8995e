/**
 * The per-model report: a JSON object with every task's results and headline numbers, and a plain
 * text table of it for the terminal.
 * @module
 */
import { headline, type Layout, type TaskResult, type TaskTiming } from "./tasks.ts";
import type { Protocol } from "./types.ts";
import type { Precision } from "../model/precision.ts";

/** Everything one evaluation of one model produced. */
export interface ModelReport {
  model: string;
  /** Words the model had seen in training, when known (checkpoints of a run). */
  wordsSeen?: number;
  date: string;
  seconds: number;
  tasks: string[];
  batchSize: number;
  /** Scoring rules, and the seed of protocol 2026's tie draws. */
  protocol: Protocol;
  seed?: number;
  /** Folder names of the data (full_eval or fast_eval). */
  layout: Layout;
  /** The matmuls' precision while scoring (model/precision.ts); reports before it was recorded are f32. */
  precision: Precision;
  /** Names of the tasks that failed (their results hold the error). */
  failed: string[];
  /** Per-task sizes and times, when profiled. */
  timing?: TaskTiming[];
  /** Headline numbers: accuracy (percent) per choice task, Spearman rho for wug, reading scores. */
  headline: Record<string, number>;
  results: Record<string, TaskResult>;
}

/** How a report was made, beside its results. */
export interface ReportSettings {
  tasks: string[];
  batchSize: number;
  protocol?: Protocol;
  seed?: number;
  layout?: Layout;
  precision?: Precision;
  timing?: TaskTiming[];
}

/** Build a report from results. */
export function makeReport(
  model: string,
  settings: ReportSettings,
  seconds: number,
  results: Record<string, TaskResult>,
  wordsSeen?: number,
): ModelReport {
  const protocol = settings.protocol ?? "2025";
  return {
    model,
    ...(wordsSeen !== undefined ? { wordsSeen } : {}),
    date: new Date().toISOString(),
    seconds,
    tasks: settings.tasks,
    batchSize: settings.batchSize,
    protocol,
    ...(protocol === "2026" ? { seed: settings.seed ?? 0 } : {}),
    layout: settings.layout ?? "full",
    precision: settings.precision ?? "f32",
    failed: Object.entries(results).filter(([, r]) => r.kind === "error").map(([k]) => k),
    ...(settings.timing ? { timing: settings.timing } : {}),
    headline: headline(results),
    results,
  };
}

/** Items, sequences and tokens per second of each profiled task, as a text table. */
export function formatTiming(timing: TaskTiming[]): string {
  const rows = timing.map((t) => [
    t.task,
    String(t.items),
    String(t.sequences),
    String(t.tokens),
    fmt(t.prepareSeconds, 1),
    fmt(t.scoreSeconds, 1),
    fmt(t.items / t.scoreSeconds, 2),
    fmt(t.sequences / t.scoreSeconds, 2),
    fmt(t.tokens / t.scoreSeconds, 0),
  ]);
  return table(
    ["task", "items", "sequences", "tokens", "prepare s", "score s", "items/s", "seq/s", "tokens/s"],
    rows,
  ).join("\n");
}

/** "12.34", or "-" for a missing number. */
export function fmt(x: number | undefined, digits = 2): string {
  return x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(digits);
}

/** "1.5M", "200K", "3B": a word count for labels. */
export function formatWords(n: number): string {
  const units: Array<[number, string]> = [[1e9, "B"], [1e6, "M"], [1e3, "K"]];
  for (const [u, s] of units) {
    if (n >= u) return `${Number((n / u).toPrecision(3))}${s}`;
  }
  return String(n);
}

function table(header: string[], rows: string[][]): string[] {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join("  ");
  return [line(header), w.map((n) => "-".repeat(n)).join("  "), ...rows.map(line)];
}

/** The report as text: a summary table, then each task's breakdowns (small groups only). */
export function formatReport(r: ModelReport): string {
  const out: string[] = [
    `model: ${r.model}${r.wordsSeen !== undefined ? ` (${formatWords(r.wordsSeen)} words)` : ""}` +
    `, protocol ${r.protocol ?? "2025"}${r.protocol === "2026" ? ` (tie seed ${r.seed})` : ""}` +
    `, precision ${r.precision ?? "f32"}`,
    "",
  ];
  const rows: string[][] = [];
  for (const [name, res] of Object.entries(r.results)) {
    if (res.kind === "choice") {
      rows.push([name, "accuracy, mean over UIDs", fmt(res.average), String(res.items)]);
      rows.push(["", "accuracy, all items", fmt(res.micro), ""]);
      if (res.ties !== undefined) {
        rows.push(["", "  ties credited by share, mean over UIDs", fmt(res.creditedAverage), ""]);
        rows.push(["", "  items with tied best scores", String(res.ties), ""]);
      }
    } else if (res.kind === "error") rows.push([name, "FAILED", "-", ""]);
    else if (res.kind === "aoa_surprisal") {
      rows.push([
        name,
        "mean surprisal of the CDI words (nats)",
        fmt(res.meanSurprisal, 3),
        String(res.words.length),
      ]);
    } else if (res.kind === "wug") rows.push([name, "Spearman rho", fmt(res.spearman, 3), String(res.items)]);
    else if (res.kind === "reading") {
      rows.push([name, "eye tracking ΔR² score", fmt(res.eyeTracking), String(res.rows)]);
      rows.push(["", "self-paced reading ΔR² score", fmt(res.selfPaced), ""]);
    } else {
      rows.push([name, "perplexity", fmt(res.perplexity), String(res.tokens)]);
      rows.push(["", "bits per word", fmt(res.bitsPerWord, 3), String(res.words)]);
    }
  }
  out.push(...table(["task", "metric", "value", "n"], rows));
  for (const [name, res] of Object.entries(r.results)) {
    if (res.kind === "error") out.push("", `${name} failed: ${res.error}`);
  }
  for (const [name, res] of Object.entries(r.results)) {
    if (res.kind === "choice") {
      if (res.splits) {
        out.push("", `${name}: splits (mean over their UIDs)`);
        out.push(...table(["split", "accuracy"], Object.entries(res.splits).map(([k, v]) => [k, fmt(v)])));
      }
      for (const [key, groups] of Object.entries(res.groups)) {
        const entries = Object.entries(groups);
        if (entries.length > 24 || (entries.length < 2 && key !== "UID")) continue;
        out.push("", `${name}: accuracy by ${key}`);
        out.push(
          ...table([key, "accuracy", "n"], entries.map(([k, t]) => [k, fmt(t.accuracy), String(t.total)])),
        );
      }
    } else if (res.kind === "reading") {
      out.push("", `${name}: ΔR² / (1 − R²_baseline) × 100 and the surprisal coefficient's t`);
      const spill = new Map(res.spillover.map((f) => [f.dv, f]));
      out.push(...table(
        ["measure", "score", "t", "score (spillover)", "t (spillover)"],
        res.noSpillover.map((
          f,
        ) => [f.dv, fmt(f.score, 3), fmt(f.t), fmt(spill.get(f.dv)?.score, 3), fmt(spill.get(f.dv)?.t)]),
      ));
      const errors = [...res.noSpillover, ...res.spillover].filter((f) => f.error).map((f) => f.error);
      if (errors.length > 0) out.push(`fits that failed: ${[...new Set(errors)].join("; ")}`);
    }
  }
  return out.join("\n");
}
