/**
 * The evaluation tasks: where each one's data lives under `--data`, how its items become scored
 * spans, and how the span scores become the pipeline's metrics. {@link evaluateModel} runs a list
 * of tasks against one model.
 *
 * | task | data (under the data folder) | metric |
 * | --- | --- | --- |
 * | blimp | blimp_filtered/*.jsonl | accuracy, mean over UIDs |
 * | supplement | supplement_filtered/*.jsonl | accuracy, mean over UIDs (file stems) |
 * | ewok | ewok_filtered.zip (ZipCrypto) or ewok_filtered/ | accuracy, mean over UIDs (Domain) |
 * | entity_tracking | entity_tracking/*.jsonl | accuracy: mean over splits of the mean over UIDs |
 * | wug | wug_adj_nominalization/*.jsonl | Spearman rho of p(first form) with `ratio` |
 * | reading | reading/reading_data.csv | ΔR² scores (see reading.ts) |
 * | blimp_original | original BLiMP folder (its own option) | as blimp |
 * | perplexity | a text file (its own option) | perplexity, bits per word |
 * @module
 */
import { type ChoiceItem, type Scorer, type TextEncoder_, type WugItem } from "./types.ts";
import { parseBlimp, parseEntityTracking, parseEwok, parseReadingCsv, parseWug } from "./readers.ts";
import { completionSpan, scoreSpans, type Span } from "./score.ts";
import { EWOK_PASSWORD, readZip } from "./zip.ts";
import { readingRegressions, type ReadingResult, readingSpans } from "./reading.ts";
import { type PerplexityResult, perplexityResult, perplexitySpans } from "./perplexity.ts";
import { spearman } from "./stats.ts";

/** Tasks run by default, in order. */
export const DEFAULT_TASKS = ["blimp", "supplement", "ewok", "entity_tracking", "wug", "reading"];
/** Every task name, including those that need their own option. */
export const ALL_TASKS = [...DEFAULT_TASKS, "blimp_original", "perplexity"];

/** Correct and total counts and the accuracy (percent) of one subset. */
export interface Tally {
  correct: number;
  total: number;
  accuracy: number;
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

/** Any task's results. */
export type TaskResult = ChoiceResult | WugResult | ReadingResult | PerplexityResult;

/** A task ready to score: its spans and what turns their sums into results. */
export interface PreparedTask {
  name: string;
  spans: Span[];
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
}

const ENTITY_SPLITS = ["regular", "ambiref", "move_contents"];

/** Whether the ranking is right: alternative 0 strictly above every other (ties count as wrong). */
export function isCorrect(scores: ArrayLike<number>): boolean {
  for (let k = 1; k < scores.length; k++) if (!(scores[0] > scores[k])) return false;
  return true;
}

/** Accuracy tables of a multiple-choice task from each item's alternative scores. */
export function choiceResult(task: string, items: ChoiceItem[], scores: ArrayLike<number>[]): ChoiceResult {
  const groups: Record<string, Record<string, Tally>> = { UID: {} };
  let correct = 0;
  items.forEach((item, i) => {
    const ok = isCorrect(scores[i]);
    if (ok) correct++;
    for (const [key, value] of [["UID", item.uid], ...Object.entries(item.groups)]) {
      const table = (groups[key] ??= {});
      const t = (table[value] ??= { correct: 0, total: 0, accuracy: 0 });
      t.total++;
      if (ok) t.correct++;
    }
  });
  for (const table of Object.values(groups)) {
    for (const t of Object.values(table)) t.accuracy = (100 * t.correct) / t.total;
  }
  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  const uidAcc = Object.entries(groups.UID).map(([k, t]) => [k, t.accuracy] as const);
  const result: ChoiceResult = {
    kind: "choice",
    items: items.length,
    average: mean(uidAcc.map(([, a]) => a)),
    micro: (100 * correct) / items.length,
    groups,
  };
  if (task === "entity_tracking") {
    // The pipeline averages the UIDs of each split, then the splits.
    const splits: Record<string, number> = {};
    for (const s of ENTITY_SPLITS) {
      const accs = uidAcc.filter(([k]) => k.startsWith(s)).map(([, a]) => a);
      if (accs.length > 0) splits[s] = mean(accs);
    }
    result.splits = splits;
    result.average = mean(Object.values(splits));
  }
  return result;
}

/** WUG metrics: p(first) = softmax of the two sentence log-probabilities; Spearman with `ratio`. */
export function wugResult(items: WugItem[], first: ArrayLike<number>, second: ArrayLike<number>): WugResult {
  const p = items.map((_, i) => 1 / (1 + Math.exp(second[i] - first[i])));
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

/** EWoK files: from the password-protected zip (decrypted in memory) or an unpacked folder. */
async function ewokFiles(dataDir: string, password: string): Promise<Array<[string, string]>> {
  const zipPath = `${dataDir}/ewok_filtered.zip`;
  if (await exists(zipPath)) {
    const files = await readZip(await Deno.readFile(zipPath), password, zipPath);
    const dec = new TextDecoder();
    const out = [...files].filter(([n]) => n.endsWith(".jsonl")).sort(([a], [b]) => (a < b ? -1 : 1));
    if (out.length === 0) throw new Error(`task ewok: ${zipPath} holds no .jsonl files`);
    return out.map(([n, d]) => [`${zipPath}:${n}`, dec.decode(d)]);
  }
  const dir = `${dataDir}/ewok_filtered`;
  if (await exists(dir)) return await jsonlFiles("ewok", dir);
  throw new Error(`task ewok: expected ${zipPath} or the folder ${dir}, found neither`);
}

function choiceTask(name: string, enc: TextEncoder_, items: ChoiceItem[]): PreparedTask {
  const spans: Span[] = [];
  const at: number[] = [];
  for (const it of items) {
    at.push(spans.length);
    it.sentences.forEach((s, k) => spans.push(completionSpan(enc, s, it.completions[k])));
  }
  return {
    name,
    spans,
    finish: (sums) =>
      choiceResult(name, items, items.map((it, i) => sums.subarray(at[i], at[i] + it.sentences.length))),
  };
}

/**
 * Check that a task's data is where it should be, without reading it (so a missing folder is
 * reported before a model is loaded). Throws the same errors as {@link prepareTask}.
 */
export async function checkTaskData(name: string, opts: EvalOptions): Promise<void> {
  const d = opts.dataDir;
  const need = async (task: string, paths: string[], what: string) => {
    for (const p of paths) if (await exists(p)) return;
    throw new Error(`task ${task}: expected ${what}, found none`);
  };
  const folders: Record<string, string> = {
    blimp: "blimp_filtered",
    supplement: "supplement_filtered",
    entity_tracking: "entity_tracking",
    wug: "wug_adj_nominalization",
  };
  if (name in folders) await need(name, [`${d}/${folders[name]}`], `the folder ${d}/${folders[name]}`);
  else if (name === "ewok") {
    await need(
      name,
      [`${d}/ewok_filtered.zip`, `${d}/ewok_filtered`],
      `${d}/ewok_filtered.zip or the folder ${d}/ewok_filtered`,
    );
  } else if (name === "reading") {
    await need(name, [`${d}/reading/reading_data.csv`], `the file ${d}/reading/reading_data.csv`);
  } else if (name === "blimp_original") {
    if (!opts.blimpOriginalDir) {
      throw new Error("task blimp_original: give the folder of the original BLiMP files");
    }
    await need(name, [opts.blimpOriginalDir], `the folder ${opts.blimpOriginalDir}`);
  } else if (name === "perplexity") {
    if (!opts.textFile) throw new Error("task perplexity: give a held-out text file");
    await need(name, [opts.textFile], `the file ${opts.textFile}`);
  } else throw new Error(`unknown task ${JSON.stringify(name)}; expected one of ${ALL_TASKS.join(", ")}`);
}

/** Read a task's data and build its spans. */
export async function prepareTask(name: string, enc: TextEncoder_, opts: EvalOptions): Promise<PreparedTask> {
  const d = opts.dataDir;
  const parseAll = <T>(files: Array<[string, string]>, parse: (text: string, file: string) => T[]) =>
    files.flatMap(([f, text]) => parse(text, f));
  switch (name) {
    case "blimp":
      return choiceTask(name, enc, parseAll(await jsonlFiles(name, `${d}/blimp_filtered`), parseBlimp));
    case "supplement":
      return choiceTask(name, enc, parseAll(await jsonlFiles(name, `${d}/supplement_filtered`), parseBlimp));
    case "blimp_original": {
      if (!opts.blimpOriginalDir) {
        throw new Error("task blimp_original: give the folder of the original BLiMP files");
      }
      return choiceTask(name, enc, parseAll(await jsonlFiles(name, opts.blimpOriginalDir), parseBlimp));
    }
    case "ewok":
      return choiceTask(
        name,
        enc,
        parseAll(await ewokFiles(d, opts.ewokPassword ?? EWOK_PASSWORD), parseEwok),
      );
    case "entity_tracking":
      return choiceTask(
        name,
        enc,
        parseAll(await jsonlFiles(name, `${d}/entity_tracking`), parseEntityTracking),
      );
    case "wug": {
      const items = parseAll(await jsonlFiles(name, `${d}/wug_adj_nominalization`), parseWug);
      const spans = items.flatMap((it) => it.sentences.map((s) => completionSpan(enc, s, s)));
      return {
        name,
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
      const rows = parseReadingCsv(text, file);
      const { spans, finish } = readingSpans(enc, rows, file);
      return {
        name,
        spans,
        finish: (sums) => {
          const { pred, prevPred } = finish(sums);
          return readingRegressions(rows, pred, prevPred);
        },
      };
    }
    case "perplexity": {
      if (!opts.textFile) throw new Error("task perplexity: give a held-out text file");
      let text: string;
      try {
        text = await Deno.readTextFile(opts.textFile);
      } catch (e) {
        throw new Error(`task perplexity: cannot read ${opts.textFile} (${(e as Error).message})`);
      }
      const { spans, predicted } = perplexitySpans(enc, text, opts.context ?? 1024, opts.stride);
      return { name, spans, finish: (sums) => perplexityResult(opts.textFile!, text, predicted, sums) };
    }
    default:
      throw new Error(`unknown task ${JSON.stringify(name)}; expected one of ${ALL_TASKS.join(", ")}`);
  }
}

/**
 * Run `opts.tasks` against one model: read and tokenize every task first (so progress covers all
 * sequences), then score task by task.
 */
export async function evaluateModel(
  scorer: Scorer,
  enc: TextEncoder_,
  opts: EvalOptions,
): Promise<Record<string, TaskResult>> {
  const context = opts.context ?? scorer.contextLength;
  const prepared: PreparedTask[] = [];
  for (const t of opts.tasks) {
    opts.onPrepare?.(t);
    prepared.push(await prepareTask(t, enc, { ...opts, context }));
  }
  const total = prepared.reduce((s, p) => s + p.spans.length, 0);
  let done = 0;
  const out: Record<string, TaskResult> = {};
  for (const p of prepared) {
    const sums = await scoreSpans(scorer, p.spans, {
      batchSize: opts.batchSize,
      label: `task ${p.name}`,
      onProgress: (n) => {
        done += n;
        opts.onProgress?.(done, total, p.name);
      },
    });
    out[p.name] = p.finish(sums);
  }
  return out;
}

/** The headline numbers of each task, keyed `task` or `task/metric`. */
export function headline(results: Record<string, TaskResult>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, r] of Object.entries(results)) {
    if (r.kind === "choice") out[name] = r.average;
    else if (r.kind === "wug") out[name] = r.spearman;
    else if (r.kind === "reading") {
      out[`${name}/eye_tracking`] = r.eyeTracking;
      out[`${name}/self_paced`] = r.selfPaced;
    } else out[`${name}/bits_per_word`] = r.bitsPerWord;
  }
  return out;
}
