/**
 * The evaluation tasks: where each one's data lives under `--data`, how its items become scored
 * spans, and how the span scores become the pipeline's metrics. {@link evaluateModel} runs a list
 * of tasks against one model; a task that fails reports its error and the others still run.
 *
 * | task | data (full_eval layout; fast_eval in {@link FOLDERS}) | metric |
 * | --- | --- | --- |
 * | blimp | blimp_filtered/*.jsonl | accuracy, mean over UIDs |
 * | supplement | supplement_filtered/*.jsonl | accuracy, mean over UIDs (file stems) |
 * | ewok | ewok_filtered.zip (ZipCrypto) or ewok_filtered/ | accuracy, mean over UIDs (Domain) |
 * | entity_tracking | entity_tracking/*.jsonl | accuracy: mean over splits of the mean over UIDs |
 * | comps | comps/*.jsonl (2026) | accuracy, mean over the 4 subsets |
 * | global_piqa_parallel, global_piqa_nonparallel | the same names, *.jsonl (2026) | length-normalised accuracy |
 * | wug | wug_adj_nominalization/*.jsonl (2025 only) | Spearman rho of p(first form) with `ratio` |
 * | reading | reading/reading_data.csv | ΔR² scores (see reading.ts) |
 * | aoa | aoa/cdi_childes.json (its own option) | per-checkpoint surprisals; the score is over a run (aoa.ts) |
 * | blimp_original | original BLiMP folder (its own option) | as blimp |
 * | perplexity | a text file (its own option) | perplexity, bits per word |
 *
 * Protocols. 2025 (the model card's, babylm/evaluation-pipeline-2025): a tie counts as wrong. 2026
 * (babylm-org/babylm-eval at 3d57ddc): NaN scores become −∞, ties are broken at random (seeded here;
 * the pipeline's draw is unseeded, so the tie count and the accuracy with every tie credited by its
 * share are reported too), EWoK compares contexts and entity tracking skips items with "nothing" in
 * an option (readers.ts).
 * @module
 */
import type { ChoiceItem, Protocol, Scorer, TextCodec, WugItem } from "./types.ts";
import {
  parseBlimp,
  parseComps,
  parseEntityTracking,
  parseEwok,
  parseGlobalPiqa,
  parseReadingCsv,
  parseWug,
} from "./readers.ts";
import { completionSpan, scoreSpans, type Span } from "./score.ts";
import { EWOK_PASSWORD, readZip } from "./zip.ts";
import { readingRegressions, type ReadingResult, readingSpans } from "./reading.ts";
import { type PerplexityResult, perplexityResult, perplexitySpans } from "./perplexity.ts";
import { spearman } from "./stats.ts";
import { aoaSpan, type AoaSurprisalResult, parseCdiChildes, subwordLength } from "./aoa.ts";
import { deriveSeed, Rng } from "../model/random.ts";

/** Tasks run by default under protocol 2025 (the model card's), in order. */
export const DEFAULT_TASKS = ["blimp", "supplement", "ewok", "entity_tracking", "wug", "reading"];
/** Tasks run by default under protocol 2026: the pipeline's zero-shot and GlobalPIQA scripts. */
export const DEFAULT_TASKS_2026 = [
  "blimp",
  "supplement",
  "ewok",
  "entity_tracking",
  "comps",
  "reading",
  "global_piqa_parallel",
  "global_piqa_nonparallel",
];
/** Every task name, including those that need their own option. */
export const ALL_TASKS = [
  ...DEFAULT_TASKS,
  "comps",
  "global_piqa_parallel",
  "global_piqa_nonparallel",
  "aoa",
  "blimp_original",
  "perplexity",
];
/** Tasks read from the data folder (`--data`). */
export const DATA_TASKS = ALL_TASKS.filter((t) => !["aoa", "blimp_original", "perplexity"].includes(t));

/** The default task list of a protocol. */
export function defaultTasks(protocol: Protocol): string[] {
  return protocol === "2026" ? DEFAULT_TASKS_2026 : DEFAULT_TASKS;
}

/** Which folder names the data folder uses: `full_eval` (final model) or `fast_eval` (checkpoints). */
export type Layout = "full" | "fast";

/**
 * Each task's folder (or, for ewok, the stem of `<stem>.zip` or the folder `<stem>`) in each layout;
 * reading is `reading/reading_data.csv` in both. A task missing from a layout is not part of it.
 */
export const FOLDERS: Record<Layout, Record<string, string>> = {
  full: {
    blimp: "blimp_filtered",
    supplement: "supplement_filtered",
    ewok: "ewok_filtered",
    entity_tracking: "entity_tracking",
    comps: "comps",
    wug: "wug_adj_nominalization",
    global_piqa_parallel: "global_piqa_parallel",
    global_piqa_nonparallel: "global_piqa_nonparallel",
  },
  fast: {
    blimp: "blimp_fast",
    supplement: "supplement_fast",
    ewok: "ewok_fast",
    entity_tracking: "entity_tracking_fast",
    global_piqa_parallel: "global_piqa_parallel",
    global_piqa_nonparallel: "global_piqa_nonparallel",
  },
};

/** Tasks scored by the mean log-probability per completion token (the pipeline's acc_norm). */
const LENGTH_NORMALISED = new Set(["global_piqa_parallel", "global_piqa_nonparallel"]);

/** Correct and total counts and the accuracy (percent) of one subset. */
export interface Tally {
  correct: number;
  total: number;
  accuracy: number;
  /** Protocol 2026: correct items with each tie credited by its share, and that as a percentage. */
  credited?: number;
  creditedAccuracy?: number;
}

/** Results of a multiple-choice task. */
export interface ChoiceResult {
  kind: "choice";
  items: number;
  /** The pipeline's headline: mean accuracy over UIDs (entity tracking: over splits, see below). */
  average: number;
  /** Accuracy over all items. */
  micro: number;
  /** Accuracy by grouping key ("UID", "field", "linguistics_term", ...) and value. */
  groups: Record<string, Record<string, Tally>>;
  /** Entity tracking: mean over each split's UIDs (regular, ambiref, move_contents). */
  splits?: Record<string, number>;
  /** Protocol 2026: items whose best score several alternatives share (one was drawn at random). */
  ties?: number;
  /** Protocol 2026: {@link average} and {@link micro} with each tie credited by its share (1/k if the correct one is among k tied). */
  creditedAverage?: number;
  creditedMicro?: number;
}

/** Results of a WUG task. */
export interface WugResult {
  kind: "wug";
  items: number;
  /** Spearman's rho between the model's p(first form) and the human ratio. */
  spearman: number;
  /** Share of items where the model prefers the first form (percent). */
  preferFirst: number;
}

/** A task that failed: its error message. */
export interface TaskError {
  kind: "error";
  error: string;
}

/** Any task's results. */
export type TaskResult =
  | ChoiceResult
  | WugResult
  | ReadingResult
  | PerplexityResult
  | AoaSurprisalResult
  | TaskError;

/** A task ready to score: its spans and what turns their sums into results. */
export interface PreparedTask {
  name: string;
  /** Items (pairs, reading rows, contexts, windows) behind the spans. */
  items: number;
  spans: Span[];
  /** A span longer than the model holds gets NaN instead of failing the task. */
  scoreUnfit?: boolean;
  finish(sums: Float64Array): TaskResult;
}

/** Where the data is and how to run. */
export interface EvalOptions {
  /** The BabyLM `full_eval` folder (holding blimp_filtered/, supplement_filtered/, ...). */
  dataDir: string;
  tasks: string[];
  /** Sequences per scorer call. */
  batchSize: number;
  ewokPassword?: string;
  /** Folder of the original BLiMP jsonl files (task blimp_original). */
  blimpOriginalDir?: string;
  /** Held-out text file (task perplexity), the model's context, and the window stride. */
  textFile?: string;
  context?: number;
  stride?: number;
  /** Called before a task's data is read and tokenized (which can take a while for long texts). */
  onPrepare?: (task: string) => void;
  /** Called as sequences are scored: done and total over all tasks, and the current task. */
  onProgress?: (done: number, total: number, task: string) => void;
  /** Scoring rules (default 2025, the model card's). */
  protocol?: Protocol;
  /** Seed of the 2026 tie draws (each task draws from its own stream). */
  seed?: number;
  /** Folder names under {@link dataDir} (default full). */
  layout?: Layout;
  /** `cdi_childes.json` for the aoa task (default `<dataDir>/aoa/cdi_childes.json`). */
  aoaFile?: string;
  /** Keep only the first `limit` items of each choice and WUG task and rows of reading (for profiling). */
  limit?: number;
  /** Called when a task has been scored, with its sizes and times (for `--profile`). */
  onTaskTiming?: (timing: TaskTiming) => void;
}

/** Sizes and times of one task. */
export interface TaskTiming {
  task: string;
  items: number;
  sequences: number;
  tokens: number;
  /** Reading and tokenizing the data. */
  prepareSeconds: number;
  /** Model calls and metrics. */
  scoreSeconds: number;
}

const ENTITY_SPLITS = ["regular", "ambiref", "move_contents"];

/** Whether the ranking is right under protocol 2025: the correct alternative strictly above every other. */
export function isCorrect(scores: ArrayLike<number>, label = 0): boolean {
  for (let k = 0; k < scores.length; k++) if (k !== label && !(scores[label] > scores[k])) return false;
  return true;
}

/**
 * Protocol 2026's pick: the best alternative (NaN counts as −∞), a tie broken by `rng`. Also the
 * share of the tie the correct one holds: 1 if it is the unique best, 1/k if it is among k tied, else 0.
 */
export function drawChoice(
  scores: ArrayLike<number>,
  label: number,
  rng: Rng,
): { chosen: number; tied: number; share: number } {
  const s = Array.from(scores, (v) => (Number.isNaN(v) ? -Infinity : v));
  const best = Math.max(...s);
  const tied = s.flatMap((v, k) => (v === best ? [k] : []));
  const chosen = tied.length > 1 ? tied[rng.int(tied.length)] : tied[0];
  return { chosen, tied: tied.length, share: tied.includes(label) ? 1 / tied.length : 0 };
}

/** Options of {@link choiceResult}. */
export interface ChoiceOptions {
  protocol?: Protocol;
  /** Seed of the 2026 tie draws; the task name selects the stream. */
  seed?: number;
}

/** Accuracy tables of a multiple-choice task from each item's alternative scores. */
export function choiceResult(
  task: string,
  items: ChoiceItem[],
  scores: ArrayLike<number>[],
  opts: ChoiceOptions = {},
): ChoiceResult {
  const p2026 = opts.protocol === "2026";
  const rng = new Rng(deriveSeed(opts.seed ?? 0, "ties", task));
  const groups: Record<string, Record<string, Tally>> = { UID: {} };
  let correct = 0, credited = 0, ties = 0;
  items.forEach((item, i) => {
    const label = item.label ?? 0;
    let ok: boolean, share = 0;
    if (p2026) {
      const d = drawChoice(scores[i], label, rng);
      ok = d.chosen === label;
      share = d.share;
      if (d.tied > 1) ties++;
    } else ok = isCorrect(scores[i], label);
    if (ok) correct++;
    credited += share;
    for (const [key, value] of [["UID", item.uid], ...Object.entries(item.groups)]) {
      const table = (groups[key] ??= {});
      const t = (table[value] ??= p2026
        ? { correct: 0, total: 0, accuracy: 0, credited: 0, creditedAccuracy: 0 }
        : { correct: 0, total: 0, accuracy: 0 });
      t.total++;
      if (ok) {
        t.correct++;
      }
      if (p2026) {
        t.credited! += share;
      }
    }
  });
  for (const table of Object.values(groups)) {
    for (const t of Object.values(table)) {
      t.accuracy = (100 * t.correct) / t.total;
      if (p2026) t.creditedAccuracy = (100 * t.credited!) / t.total;
    }
  }
  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  // The pipeline averages over UIDs; entity tracking averages the UIDs of each split, then the splits.
  const headline = (acc: (t: Tally) => number) => {
    const uids = Object.entries(groups.UID);
    if (task !== "entity_tracking") return { average: mean(uids.map(([, t]) => acc(t))) };
    const splits: Record<string, number> = {};
    for (const s of ENTITY_SPLITS) {
      const accs = uids.filter(([k]) => k.startsWith(s)).map(([, t]) => acc(t));
      if (accs.length > 0) splits[s] = mean(accs);
    }
    return { average: mean(Object.values(splits)), splits };
  };
  const { average, splits } = headline((t) => t.accuracy);
  const result: ChoiceResult = {
    kind: "choice",
    items: items.length,
    average,
    micro: (100 * correct) / items.length,
    groups,
    ...(splits ? { splits } : {}),
  };
  if (p2026) {
    result.ties = ties;
    result.creditedAverage = headline((t) => t.creditedAccuracy!).average;
    result.creditedMicro = (100 * credited) / items.length;
  }
  return result;
}

/**
 * WUG metrics: p(first) = softmax of the two sentence log-probabilities; Spearman with `ratio`. As in
 * the pipeline (torch, float32), the sums are float32 and the softmax is computed in float32, so a pair
 * whose first form is ahead by more than about 16.6 nats gets p = 1 exactly and ties with the others
 * there (Spearman gives ties their average rank). Our sums are float64 rounded to float32; torch's
 * float32 reductions can differ from them in the last bits.
 */
export function wugResult(items: WugItem[], first: ArrayLike<number>, second: ArrayLike<number>): WugResult {
  const f = Math.fround;
  const p = items.map((_, i) => {
    const a = f(first[i]), b = f(second[i]), m = Math.max(a, b);
    const ea = f(Math.exp(f(a - m))), eb = f(Math.exp(f(b - m)));
    return f(ea / f(ea + eb));
  });
  return {
    kind: "wug",
    items: items.length,
    spearman: spearman(p, items.map((it) => it.ratio)),
    preferFirst: (100 * p.filter((x) => x > 0.5).length) / items.length,
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The `*.jsonl` files of a task folder, sorted, as [path, text]; errors name the task and folder. */
async function jsonlFiles(task: string, dir: string): Promise<Array<[string, string]>> {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    throw new Error(`task ${task}: expected the folder ${dir}, found none`);
  }
  const names = entries.filter((e) => e.isFile && e.name.endsWith(".jsonl")).map((e) => e.name).sort();
  if (names.length === 0) throw new Error(`task ${task}: expected *.jsonl files in ${dir}, found none`);
  return await Promise.all(
    names.map(async (n) => [`${dir}/${n}`, await Deno.readTextFile(`${dir}/${n}`)] as [string, string]),
  );
}

/** EWoK files: from the password-protected `<stem>.zip` (decrypted in memory) or the folder `<stem>`. */
async function ewokFiles(base: string, password: string): Promise<Array<[string, string]>> {
  const zipPath = `${base}.zip`;
  if (await exists(zipPath)) {
    const files = await readZip(await Deno.readFile(zipPath), password, zipPath);
    const dec = new TextDecoder();
    const out = [...files].filter(([n]) => n.endsWith(".jsonl")).sort(([a], [b]) => (a < b ? -1 : 1));
    if (out.length === 0) throw new Error(`task ewok: ${zipPath} holds no .jsonl files`);
    return out.map(([n, d]) => [`${zipPath}:${n}`, dec.decode(d)]);
  }
  if (await exists(base)) return await jsonlFiles("ewok", base);
  throw new Error(`task ewok: expected ${zipPath} or the folder ${base}, found neither`);
}

function choiceTask(name: string, enc: TextCodec, all: ChoiceItem[], opts: EvalOptions): PreparedTask {
  const items = opts.limit === undefined ? all : all.slice(0, opts.limit);
  if (items.length === 0) throw new Error(`task ${name}: no items to score`);
  const spans: Span[] = [];
  const at: number[] = [];
  for (const it of items) {
    at.push(spans.length);
    it.sentences.forEach((s, k) => spans.push(completionSpan(enc, s, it.completions[k])));
  }
  // GlobalPIQA: the summed log-probability over the number of scored tokens (at least 1).
  const norm = LENGTH_NORMALISED.has(name);
  return {
    name,
    items: items.length,
    spans,
    finish: (sums) => {
      const scores = items.map((it, i) => {
        const s = Float64Array.from(sums.subarray(at[i], at[i] + it.sentences.length));
        if (norm) {
          s.forEach((v, k) => (s[k] = v / Math.max(1, spans[at[i] + k].ids.length - spans[at[i] + k].from)));
        }
        return s;
      });
      return choiceResult(name, items, scores, { protocol: opts.protocol, seed: opts.seed });
    },
  };
}

/** Where the aoa task's `cdi_childes.json` is. */
export function aoaFile(opts: EvalOptions): string {
  return opts.aoaFile ?? `${opts.dataDir}/aoa/cdi_childes.json`;
}

/** The folder of task `name` in the options' layout; an error if the layout has no such task. */
function folder(name: string, opts: EvalOptions): string {
  const layout = opts.layout ?? "full";
  const f = FOLDERS[layout][name];
  if (f === undefined) {
    throw new Error(
      `task ${name}: not part of the ${layout}_eval layout (tasks there: ${
        [...Object.keys(FOLDERS[layout]), "reading"].join(", ")
      })`,
    );
  }
  return `${opts.dataDir}/${f}`;
}

/**
 * Check that a task's data is where it should be, without reading it (so a missing folder is
 * reported before a model is loaded). Throws the same errors as {@link prepareTask}.
 */
export async function checkTaskData(name: string, opts: EvalOptions): Promise<void> {
  const need = async (task: string, paths: string[], what: string) => {
    for (const p of paths) if (await exists(p)) return;
    throw new Error(`task ${task}: expected ${what}, found none`);
  };
  if (name === "ewok") {
    const base = folder(name, opts);
    await need(name, [`${base}.zip`, base], `${base}.zip or the folder ${base}`);
  } else if (name === "reading") {
    const f = `${opts.dataDir}/reading/reading_data.csv`;
    await need(name, [f], `the file ${f}`);
  } else if (name === "aoa") {
    await need(name, [aoaFile(opts)], `the file ${aoaFile(opts)}`);
  } else if (name === "blimp_original") {
    if (!opts.blimpOriginalDir) {
      throw new Error("task blimp_original: give the folder of the original BLiMP files");
    }
    await need(name, [opts.blimpOriginalDir], `the folder ${opts.blimpOriginalDir}`);
  } else if (name === "perplexity") {
    if (!opts.textFile) throw new Error("task perplexity: give a held-out text file");
    await need(name, [opts.textFile], `the file ${opts.textFile}`);
  } else if (DATA_TASKS.includes(name)) {
    const dir = folder(name, opts);
    await need(name, [dir], `the folder ${dir}`);
  } else throw new Error(`unknown task ${JSON.stringify(name)}; expected one of ${ALL_TASKS.join(", ")}`);
}

/** Read a task's data and build its spans. */
export async function prepareTask(name: string, enc: TextCodec, opts: EvalOptions): Promise<PreparedTask> {
  const d = opts.dataDir;
  const protocol = opts.protocol ?? "2025";
  const parseAll = <T>(files: Array<[string, string]>, parse: (text: string, file: string) => T[]) =>
    files.flatMap(([f, text]) => parse(text, f));
  const choice = async (parse: (text: string, file: string) => ChoiceItem[]) =>
    choiceTask(name, enc, parseAll(await jsonlFiles(name, folder(name, opts)), parse), opts);
  switch (name) {
    case "blimp":
    case "supplement":
      return await choice(parseBlimp);
    case "blimp_original": {
      if (!opts.blimpOriginalDir) {
        throw new Error("task blimp_original: give the folder of the original BLiMP files");
      }
      return choiceTask(name, enc, parseAll(await jsonlFiles(name, opts.blimpOriginalDir), parseBlimp), opts);
    }
    case "ewok": {
      const files = await ewokFiles(folder(name, opts), opts.ewokPassword ?? EWOK_PASSWORD);
      return choiceTask(name, enc, parseAll(files, (t, f) => parseEwok(t, f, protocol)), opts);
    }
    case "entity_tracking":
      return await choice((t, f) => parseEntityTracking(t, f, protocol));
    case "comps":
      return await choice(parseComps);
    case "global_piqa_parallel":
      return await choice((t, f) => parseGlobalPiqa(t, f, 4));
    case "global_piqa_nonparallel":
      return await choice((t, f) => parseGlobalPiqa(t, f, 2));
    case "wug": {
      const all = parseAll(await jsonlFiles(name, folder(name, opts)), parseWug);
      const items = opts.limit === undefined ? all : all.slice(0, opts.limit);
      const spans = items.flatMap((it) => it.sentences.map((s) => completionSpan(enc, s, s)));
      return {
        name,
        items: items.length,
        spans,
        finish: (sums) =>
          wugResult(items, items.map((_, i) => sums[2 * i]), items.map((_, i) => sums[2 * i + 1])),
      };
    }
    case "reading": {
      const file = `${d}/reading/reading_data.csv`;
      let text: string;
      try {
        text = await Deno.readTextFile(file);
      } catch {
        throw new Error(`task reading: expected the file ${file}, found none`);
      }
      const all = parseReadingCsv(text, file);
      const rows = opts.limit === undefined ? all : all.slice(0, opts.limit);
      const { spans, finish } = readingSpans(enc, rows, file);
      return {
        name,
        items: rows.length,
        spans,
        finish: (sums) => {
          const { pred, prevPred } = finish(sums);
          return readingRegressions(rows, pred, prevPred);
        },
      };
    }
    case "aoa":
      return await aoaTask(enc, opts);
    case "perplexity": {
      if (!opts.textFile) throw new Error("task perplexity: give a held-out text file");
      let text: string;
      try {
        text = await Deno.readTextFile(opts.textFile);
      } catch (e) {
        throw new Error(`task perplexity: cannot read ${opts.textFile} (${(e as Error).message})`);
      }
      const { spans, predicted } = perplexitySpans(enc, text, opts.context ?? 1024, opts.stride);
      return {
        name,
        items: spans.length,
        spans,
        finish: (sums) => perplexityResult(opts.textFile!, text, predicted, sums),
      };
    }
    default:
      throw new Error(`unknown task ${JSON.stringify(name)}; expected one of ${ALL_TASKS.join(", ")}`);
  }
}

/** The aoa task for one checkpoint: every (word, context) surprisal. */
async function aoaTask(enc: TextCodec, opts: EvalOptions): Promise<PreparedTask> {
  const file = aoaFile(opts);
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch {
    throw new Error(`task aoa: expected the file ${file}, found none`);
  }
  const { words, contexts } = parseCdiChildes(text, file);
  const spans: Span[] = [];
  for (const [w, word] of words.entries()) for (const c of contexts[w]) spans.push(aoaSpan(enc, c, word));
  return {
    name: "aoa",
    items: spans.length,
    spans,
    // Like the pipeline's failed calls, a context the model cannot hold gives NaN, not an error.
    scoreUnfit: true,
    finish: (sums) => {
      let k = 0, total = 0, n = 0;
      const surprisal = contexts.map((cs) =>
        cs.map(() => {
          const s = -sums[k++];
          if (Number.isFinite(s)) {
            total += s;
            n++;
          }
          return s;
        })
      );
      return {
        kind: "aoa_surprisal",
        words,
        contexts,
        surprisal,
        subwordTokens: words.map((w) => subwordLength(enc, w)),
        vocabSize: enc.vocabSize ?? NaN,
        meanSurprisal: n > 0 ? total / n : NaN,
      };
    },
  };
}

/**
 * Run `opts.tasks` against one model: read and tokenize every task first (so progress covers all
 * sequences), then score task by task. A task that fails (missing data, a sequence longer than the
 * model holds) gets a {@link TaskError} and the others still run.
 */
export async function evaluateModel(
  scorer: Scorer,
  enc: TextCodec,
  opts: EvalOptions,
): Promise<Record<string, TaskResult>> {
  const context = opts.context ?? scorer.contextLength;
  const out: Record<string, TaskResult> = {};
  const prepared: Array<{ task: PreparedTask; seconds: number }> = [];
  for (const t of opts.tasks) {
    opts.onPrepare?.(t);
    const t0 = performance.now();
    try {
      prepared.push({
        task: await prepareTask(t, enc, { ...opts, context }),
        seconds: (performance.now() - t0) / 1000,
      });
    } catch (e) {
      out[t] = { kind: "error", error: (e as Error).message };
    }
  }
  const total = prepared.reduce((s, p) => s + p.task.spans.length, 0);
  let done = 0;
  // Progress starts when scoring does (rates then exclude reading and tokenizing).
  if (prepared.length > 0) opts.onProgress?.(0, total, prepared[0].task.name);
  for (const { task: p, seconds } of prepared) {
    const t0 = performance.now();
    const before = done;
    try {
      const sums = await scoreSpans(scorer, p.spans, {
        batchSize: opts.batchSize,
        label: `task ${p.name}`,
        unfit: p.scoreUnfit ? "nan" : "error",
        onProgress: (n) => {
          done += n;
          opts.onProgress?.(done, total, p.name);
        },
      });
      out[p.name] = p.finish(sums);
    } catch (e) {
      out[p.name] = { kind: "error", error: (e as Error).message };
      // Keep the progress total consistent for the tasks that follow.
      done = before + p.spans.length;
      opts.onProgress?.(done, total, p.name);
    }
    opts.onTaskTiming?.({
      task: p.name,
      items: p.items,
      sequences: p.spans.length,
      tokens: p.spans.reduce((s, x) => s + x.ids.length, 0),
      prepareSeconds: seconds,
      scoreSeconds: (performance.now() - t0) / 1000,
    });
  }
  return Object.fromEntries(opts.tasks.filter((t) => t in out).map((t) => [t, out[t]]));
}

/** The headline numbers of each task, keyed `task` or `task/metric` (failed tasks have none). */
export function headline(results: Record<string, TaskResult>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, r] of Object.entries(results)) {
    if (r.kind === "choice") out[name] = r.average;
    else if (r.kind === "wug") out[name] = r.spearman;
    else if (r.kind === "reading") {
      out[`${name}/eye_tracking`] = r.eyeTracking;
      out[`${name}/self_paced`] = r.selfPaced;
    } else if (r.kind === "perplexity") out[`${name}/bits_per_word`] = r.bitsPerWord;
    else if (r.kind === "aoa_surprisal") out[`${name}/mean_surprisal`] = r.meanSurprisal;
  }
  return out;
}
