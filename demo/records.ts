/**
 * Run records as the page reads them. A run folder may be half-written or hostile, so every line of
 * `metrics.jsonl` and `interactions/round_N.jsonl` is checked on load: a record with a wrong type is
 * skipped and counted, never passed on to a view; so is every line of `interactions/round_N.rewards.jsonl`
 * (each pair's SimPO rewards). Also the per-pair statistics (shared words, lengths) and the per-round
 * summary Inspect tabulates.
 * Pure: text in, plain objects out.
 * @module
 */
import type { MetricsRecord } from "../interaction/loop.ts";
import { countWords } from "../interaction/words.ts";
import { parseJsonLines } from "../model/jsonl.ts";
import { wordDiff } from "./diff.ts";

/** The fields of an interaction the page shows (the records' token arrays are dropped on load). */
export interface ShownInteraction {
  round: number;
  index: number;
  source?: string;
  context: string;
  student: string;
  teacher: string;
  /** The pair's SimPO rewards, when the run recorded them. */
  reward?: PairReward;
}

/**
 * A pair's SimPO rewards at the step that trained on it in its round's last SimPO epoch (the loop's
 * `PairRewardRecord`): chosen = the teacher's sequence, rejected = the student's, margin = chosen - rejected.
 */
export interface PairReward {
  chosen: number;
  rejected: number;
  margin: number;
}

/** Records that passed their check, how many lines did not, and the first few reasons. */
export interface Parsed<T> {
  rows: T[];
  bad: number;
  problems: string[];
}

/** A check: the record to keep, or why the value is not one. */
export type Check<T> = (v: unknown) => T | string;

/** How many reasons {@link parseRecords} keeps (the count covers all). */
const MAX_PROBLEMS = 5;

/** Parse JSON lines with `check`; blank lines are skipped, unreadable or failing lines counted. */
export function parseRecords<T>(text: string, check: Check<T>, where: string): Parsed<T> {
  const rows: T[] = [];
  const bad: Array<[number, string]> = [];
  const lines = parseJsonLines(text, where, {
    onBadLine: (line, e) => bad.push([line, `not valid JSON (${e.message})`]),
  });
  for (const { line, value } of lines) {
    const r = check(value);
    if (typeof r === "string") bad.push([line, r]);
    else rows.push(r);
  }
  bad.sort((a, b) => a[0] - b[0]);
  const problems = bad.slice(0, MAX_PROBLEMS).map(([line, why]) => `${where}:${line}: ${why}`);
  return { rows, bad: bad.length, problems };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const isCount = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0;

/** An interaction line: round and index counts, context/student/teacher strings, source a string if any. */
export const checkInteraction: Check<ShownInteraction> = (v) => {
  if (!isObject(v)) return "not a JSON object";
  for (const k of ["round", "index"]) if (!isCount(v[k])) return `"${k}" is not an integer >= 0`;
  for (const k of ["context", "student", "teacher"]) {
    if (typeof v[k] !== "string") return `"${k}" is not a string`;
  }
  if (v.source !== undefined && typeof v.source !== "string") return `"source" is not a string`;
  return {
    round: v.round as number,
    index: v.index as number,
    source: v.source as string | undefined,
    context: v.context as string,
    student: v.student as string,
    teacher: v.teacher as string,
  };
};

/** A rewards line: round and index counts; chosen, rejected and margin finite numbers. */
export const checkPairReward: Check<PairReward & { round: number; index: number }> = (v) => {
  if (!isObject(v)) return "not a JSON object";
  for (const k of ["round", "index"]) if (!isCount(v[k])) return `"${k}" is not an integer >= 0`;
  for (const k of ["chosen", "rejected", "margin"]) {
    if (typeof v[k] !== "number" || !Number.isFinite(v[k])) return `"${k}" is not a finite number`;
  }
  return {
    round: v.round as number,
    index: v.index as number,
    chosen: v.chosen as number,
    rejected: v.rejected as number,
    margin: v.margin as number,
  };
};

/**
 * `pairs` with the rewards of their datapoints from `rewards` (a round's checked lines); a pair without a
 * line keeps none (a round whose SimPO epoch was cut short), a line of another round or datapoint is ignored.
 */
export function withRewards(
  pairs: readonly ShownInteraction[],
  rewards: ReadonlyArray<PairReward & { round: number; index: number }>,
): ShownInteraction[] {
  const by = new Map(rewards.map((r) => [`${r.round}.${r.index}`, r]));
  return pairs.map((p) => {
    const r = by.get(`${p.round}.${p.index}`);
    return r ? { ...p, reward: { chosen: r.chosen, rejected: r.rejected, margin: r.margin } } : p;
  });
}

const OPTIONAL_METRICS = [
  "simpoLoss",
  "chosenReward",
  "rejectedReward",
  "margin",
  "winRate",
  "gradNorm",
  "tokensPerSec",
] as const;

/**
 * A metrics line: phase `sft` or `po`, round/epoch/step counts, finite lmLoss, lr and wordsSeen; the
 * preference numbers finite when present (null counts as absent: JSON writes NaN as null).
 */
export const checkMetrics: Check<MetricsRecord> = (v) => {
  if (!isObject(v)) return "not a JSON object";
  if (v.phase !== "sft" && v.phase !== "po") return `"phase" is not "sft" or "po"`;
  for (const k of ["round", "epoch", "step"]) if (!isCount(v[k])) return `"${k}" is not an integer >= 0`;
  for (const k of ["lmLoss", "lr", "wordsSeen"]) {
    if (typeof v[k] !== "number" || !Number.isFinite(v[k])) return `"${k}" is not a finite number`;
  }
  const out: Record<string, unknown> = {
    phase: v.phase,
    round: v.round,
    epoch: v.epoch,
    step: v.step,
    lmLoss: v.lmLoss,
    lr: v.lr,
    wordsSeen: v.wordsSeen,
    time: typeof v.time === "string" ? v.time : "",
  };
  for (const k of OPTIONAL_METRICS) {
    if (v[k] === undefined || v[k] === null) continue;
    if (typeof v[k] !== "number" || !Number.isFinite(v[k])) return `"${k}" is not a finite number`;
    out[k] = v[k];
  }
  return out as unknown as MetricsRecord;
};

/** What the page knows of one pair beyond its text. */
export interface PairStats {
  /** Words in the longest common subsequence of the two continuations. */
  shared: number;
  studentWords: number;
  teacherWords: number;
  /** shared / the longer side's words, in [0, 1]; 1 when both are empty. */
  overlap: number;
}

/** The statistics of one pair (a word diff: computed once per pair by the views that need it). */
export function pairStats(r: ShownInteraction): PairStats {
  const shared = wordDiff(r.student, r.teacher).common;
  const studentWords = countWords(r.student), teacherWords = countWords(r.teacher);
  const longer = Math.max(studentWords, teacherWords);
  return { shared, studentWords, teacherWords, overlap: longer === 0 ? 1 : shared / longer };
}

/** One row of the per-round summary; undefined where the round has no such data (yet). */
export interface RoundSummary {
  round: number;
  /** Mean LM loss over the round's LM-phase steps. */
  lmLoss?: number;
  /** Means over the round's SimPO-phase steps. */
  chosenReward?: number;
  rejectedReward?: number;
  margin?: number;
  winRate?: number;
  /** Optimisation steps of the round (both phases). */
  steps: number;
  /** Pairs loaded for the round, and the means over them. */
  pairs?: number;
  overlap?: number;
  studentWords?: number;
  teacherWords?: number;
}

function mean(xs: number[]): number | undefined {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : undefined;
}

/**
 * The summary of every round that has metrics or pairs: step means from `metrics`, pair means from
 * `stats` (round -> the statistics of its pairs; rounds not loaded are absent).
 */
export function summarizeRounds(
  metrics: readonly MetricsRecord[],
  stats: ReadonlyMap<number, readonly PairStats[]>,
): RoundSummary[] {
  const rounds = new Set<number>([...metrics.map((m) => m.round), ...stats.keys()]);
  return [...rounds].sort((a, b) => a - b).map((round) => {
    const ms = metrics.filter((m) => m.round === round);
    const po = ms.filter((m) => m.phase === "po");
    const pick = (k: keyof MetricsRecord) =>
      mean(po.map((m) => m[k]).filter((v): v is number => typeof v === "number"));
    const row: RoundSummary = {
      round,
      steps: ms.length,
      lmLoss: mean(ms.filter((m) => m.phase === "sft").map((m) => m.lmLoss)),
      chosenReward: pick("chosenReward"),
      rejectedReward: pick("rejectedReward"),
      margin: pick("margin"),
      winRate: pick("winRate"),
    };
    const ps = stats.get(round);
    if (ps) {
      row.pairs = ps.length;
      row.overlap = mean(ps.map((p) => p.overlap));
      row.studentWords = mean(ps.map((p) => p.studentWords));
      row.teacherWords = mean(ps.map((p) => p.teacherWords));
    }
    return row;
  });
}

/** Pairs as JSON lines (the shown fields, the rewards when known, plus the statistics). */
export function pairsJsonl(pairs: ReadonlyArray<{ pair: ShownInteraction; stats: PairStats }>): string {
  return pairs.map(({ pair, stats }) => JSON.stringify({ ...pair, ...stats }) + "\n").join("");
}

function csvField(v: string | number | undefined): string {
  const s = v === undefined ? "" : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** Pairs as CSV with a header row; rounds 1-based as the page shows them, empty rewards where unknown. */
export function pairsCsv(pairs: ReadonlyArray<{ pair: ShownInteraction; stats: PairStats }>): string {
  const head = [
    "round",
    "index",
    "source",
    "shared_words",
    "overlap",
    "student_words",
    "teacher_words",
    "chosen_reward",
    "rejected_reward",
    "margin",
    "context",
    "student",
    "teacher",
  ];
  const rows = pairs.map(({ pair: p, stats: s }) =>
    [
      p.round + 1,
      p.index,
      p.source,
      s.shared,
      Number(s.overlap.toFixed(6)),
      s.studentWords,
      s.teacherWords,
      p.reward?.chosen,
      p.reward?.rejected,
      p.reward?.margin,
      p.context,
      p.student,
      p.teacher,
    ].map(csvField).join(",")
  );
  return [head.join(","), ...rows].join("\r\n") + "\r\n";
}
