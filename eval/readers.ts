/**
 * Readers for the BabyLM 2025 and 2026 zero-shot data: pure functions from a file's text (and its
 * name, for UIDs and error messages) to scored items, following how the official pipelines
 * (`evaluation_pipeline/sentence_zero_shot/read_files.py` of babylm/evaluation-pipeline-2025 and of
 * babylm-org/babylm-eval `strict/` at 3d57ddc) turn records into alternatives.
 * Malformed input fails with `file:line: expected ..., found ...`.
 * @module
 */
import type { ChoiceItem, Protocol, WugItem } from "./types.ts";
import { parseCsv } from "./csv.ts";
import { parseJsonLines } from "../model/jsonl.ts";

/** An input error that names the file and line. */
export class DataError extends Error {
  constructor(file: string, line: number | undefined, message: string) {
    super(line === undefined ? `${file}: ${message}` : `${file}:${line}: ${message}`);
    this.name = "DataError";
  }
}

/** The file name without folders and without the `.jsonl`/`.csv` extension (the pipeline's `stem`). */
export function fileStem(file: string): string {
  const base = file.split(/[\\/]/).pop() ?? file;
  const dot = base.lastIndexOf(".");
  return dot > 0 ? base.slice(0, dot) : base;
}

/** One parsed JSON-lines record with its 1-based line number. */
interface Rec {
  line: number;
  value: Record<string, unknown>;
}

/** Parse JSON lines ({@link parseJsonLines}): blank lines are skipped, anything else must be a JSON object. */
export function parseObjectLines(text: string, file: string): Rec[] {
  const lines = parseJsonLines(text, file, {
    onBadLine: (line, e) => {
      throw new DataError(file, line, `expected a JSON object, found invalid JSON (${e.message})`);
    },
  });
  return lines.map(({ line, value }) => {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new DataError(file, line, `expected a JSON object, found ${JSON.stringify(value).slice(0, 60)}`);
    }
    return { line, value: value as Record<string, unknown> };
  });
}

function describe(v: unknown): string {
  return v === undefined ? "nothing" : `${JSON.stringify(v)?.slice(0, 60)}`;
}

function str(r: Rec, key: string, file: string): string {
  const v = r.value[key];
  if (typeof v !== "string") {
    throw new DataError(file, r.line, `field "${key}": expected a string, found ${describe(v)}`);
  }
  return v;
}

function int(r: Rec, key: string, file: string): number {
  const v = r.value[key];
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw new DataError(file, r.line, `field "${key}": expected an integer, found ${describe(v)}`);
  }
  return v;
}

/**
 * BLiMP (original or `blimp_filtered`) and the BLiMP supplement: whole-sentence scoring of
 * `sentence_good` against `sentence_bad`. A record with `field` is BLiMP: UID, field (with
 * "syntax_semantics" renamed "syntax/semantics") and linguistics_term come from the record. Without
 * `field` it is the supplement: UID = file stem, field = linguistics_term = "supplement".
 */
export function parseBlimp(text: string, file: string): ChoiceItem[] {
  return parseObjectLines(text, file).map((r) => {
    const good = str(r, "sentence_good", file), bad = str(r, "sentence_bad", file);
    let uid: string, field: string, term: string;
    if ("field" in r.value) {
      field = str(r, "field", file);
      if (field === "syntax_semantics") field = "syntax/semantics";
      uid = str(r, "UID", file);
      term = str(r, "linguistics_term", file);
    } else {
      uid = fileStem(file);
      field = term = "supplement";
    }
    return {
      sentences: [good, bad],
      completions: [good, bad],
      uid,
      groups: { field, linguistics_term: term },
    };
  });
}

/**
 * EWoK; UID = Domain; also grouped by ContextType, ContextDiff, TargetDiff. Protocol 2025: sentences
 * `Context1 + " " + Target{1,2}`, scored on `" " + Target{1,2}` (which target fits Context1). Protocol
 * 2026: sentences `Context{1,2} + " " + Target1`, both scored on `" " + Target1` (which context makes
 * Target1 likelier); Context1 is correct either way.
 */
export function parseEwok(text: string, file: string, protocol: Protocol = "2025"): ChoiceItem[] {
  return parseObjectLines(text, file).map((r) => {
    const c1 = str(r, "Context1", file), t1 = str(r, "Target1", file);
    const [sentences, completions] = protocol === "2026"
      ? [[`${c1} ${t1}`, `${str(r, "Context2", file)} ${t1}`], [` ${t1}`, ` ${t1}`]]
      : [[`${c1} ${t1}`, `${c1} ${str(r, "Target2", file)}`], [` ${t1}`, ` ${str(r, "Target2", file)}`]];
    return {
      sentences,
      completions,
      uid: str(r, "Domain", file),
      groups: {
        context_type: str(r, "ContextType", file),
        context_contrast: str(r, "ContextDiff", file),
        target_contrast: str(r, "TargetDiff", file),
      },
    };
  });
}

/**
 * Entity tracking: sentences `input_prefix + option`, scored on the option; options[0] is correct;
 * UID = `<file stem>_<numops>_ops`. Protocol 2026 skips every item where any option contains the
 * substring "nothing" (case-sensitive, as the pipeline's `in` test).
 */
export function parseEntityTracking(text: string, file: string, protocol: Protocol = "2025"): ChoiceItem[] {
  const stem = fileStem(file);
  return parseObjectLines(text, file).flatMap((r) => {
    const prefix = str(r, "input_prefix", file);
    const numops = int(r, "numops", file);
    const options = r.value.options;
    if (!Array.isArray(options) || options.length < 2 || options.some((o) => typeof o !== "string")) {
      throw new DataError(
        file,
        r.line,
        `field "options": expected a list of at least 2 strings, found ${describe(options)}`,
      );
    }
    const opts = options as string[];
    if (protocol === "2026" && opts.some((o) => o.includes("nothing"))) return [];
    return [{
      sentences: opts.map((o) => prefix + o),
      completions: opts,
      uid: `${stem}_${numops}_ops`,
      groups: {},
    }];
  });
}

/** COMPS subsets by file stem; any other stem is `wugs_dist_in_between`, as in the pipeline. */
const COMPS_SUBSETS: Record<string, string> = {
  comps_base: "base",
  comps_wugs: "wugs",
  "comps_wugs_dist-before": "wugs_dist_before",
};

/**
 * COMPS (2026): sentences `prefix_acceptable + " " + property_phrase` and `prefix_unacceptable + " " +
 * property_phrase`, both scored on `property_phrase`; the acceptable prefix is correct. UID = the
 * subset named by the file stem (comps_base, comps_wugs, comps_wugs_dist-before, else dist-in-between).
 */
export function parseComps(text: string, file: string): ChoiceItem[] {
  const uid = COMPS_SUBSETS[fileStem(file)] ?? "wugs_dist_in_between";
  return parseObjectLines(text, file).map((r) => {
    const phrase = str(r, "property_phrase", file);
    return {
      sentences: [
        `${str(r, "prefix_acceptable", file)} ${phrase}`,
        `${str(r, "prefix_unacceptable", file)} ${phrase}`,
      ],
      completions: [phrase, phrase],
      uid,
      groups: {},
    };
  });
}

/**
 * GlobalPIQA (2026): `n` alternatives `prompt + " " + solution_k` (4 parallel, 2 non-parallel), each
 * scored on `" " + solution_k`; the correct one is `label`; UID = `example_id`. Length normalisation
 * is the task's, not the reader's (see tasks.ts).
 */
export function parseGlobalPiqa(text: string, file: string, n: number): ChoiceItem[] {
  return parseObjectLines(text, file).map((r) => {
    const prompt = str(r, "prompt", file);
    const solutions = Array.from({ length: n }, (_, k) => str(r, `solution${k}`, file));
    const label = int(r, "label", file);
    if (label < 0 || label >= n) {
      throw new DataError(
        file,
        r.line,
        `field "label": expected an integer in [0, ${n - 1}], found ${label}`,
      );
    }
    return {
      sentences: solutions.map((s) => `${prompt} ${s}`),
      completions: solutions.map((s) => ` ${s}`),
      label,
      uid: str(r, "example_id", file),
      groups: {},
    };
  });
}

/** WUG tasks: `sentences` is two alternatives joined by a TAB; `ratio` is the human rate of the first. */
export function parseWug(text: string, file: string): WugItem[] {
  const uid = fileStem(file);
  return parseObjectLines(text, file).map((r) => {
    const parts = str(r, "sentences", file).split("\t");
    if (parts.length !== 2) {
      throw new DataError(
        file,
        r.line,
        `field "sentences": expected 2 alternatives separated by a TAB, found ${parts.length}`,
      );
    }
    const raw = r.value.ratio;
    const ratio = typeof raw === "number"
      ? raw
      : typeof raw === "string" && raw.trim() !== ""
      ? Number(raw)
      : NaN;
    if (!Number.isFinite(ratio)) {
      throw new DataError(file, r.line, `field "ratio": expected a number, found ${describe(raw)}`);
    }
    return { sentences: [parts[0], parts[1]], ratio, uid };
  });
}

/** One row of the reading data: the target word, its context, and the measures. */
export interface ReadingRow {
  /** 1-based line of the row in the CSV (for messages). */
  line: number;
  /** Context before `word`; a missing value becomes "None" as in the pipeline. */
  item: string;
  word: string;
  /** Context and word of the previous position; null where pandas reads the field as missing. */
  prevItem: string | null;
  prevWord: string | null;
  /** Numeric columns by name (NaN where missing). */
  num: Record<string, number>;
}

/** Numeric columns the regressions use. */
export const READING_NUMERIC = [
  "Subtlex_log10",
  "length",
  "context_length",
  "prev_length",
  "RTfirstfix",
  "RTfirstpass",
  "RTgopast",
  "RTrightbound",
  "self_paced_reading_time",
  "ELAN",
  "LAN",
  "N400",
  "P600",
  "EPNP",
  "PNP",
] as const;

/**
 * Strings pandas' `read_csv` reads as missing by default. The pipeline reads the CSV with pandas, so
 * e.g. a `prev_item` of "None" counts as missing there and its row has no spillover surprisal.
 */
const PANDAS_NA = new Set([
  "",
  "#N/A",
  "#N/A N/A",
  "#NA",
  "-1.#IND",
  "-1.#QNAN",
  "-NaN",
  "-nan",
  "1.#IND",
  "1.#QNAN",
  "<NA>",
  "N/A",
  "NA",
  "NULL",
  "NaN",
  "None",
  "n/a",
  "nan",
  "null",
]);

/** The reading CSV (`reading_data.csv`): header row, quoted fields allowed, columns per SOURCES.md. */
export function parseReadingCsv(text: string, file: string): ReadingRow[] {
  const rows = parseCsv(text, file);
  if (rows.length === 0) throw new DataError(file, 1, "expected a header row, found an empty file");
  const header = rows[0].fields;
  const col = (name: string): number => {
    const i = header.indexOf(name);
    if (i < 0) {
      throw new DataError(file, 1, `expected a column "${name}" in the header, found ${header.join(",")}`);
    }
    return i;
  };
  const [iItem, iWord, iPrevItem, iPrevWord] = ["item", "word", "prev_item", "prev_word"].map(col);
  const numCols = READING_NUMERIC.map((name) => [name, col(name)] as const);
  const out: ReadingRow[] = [];
  for (const { fields, line } of rows.slice(1)) {
    if (fields.length === 1 && fields[0] === "") continue;
    if (fields.length !== header.length) {
      throw new DataError(file, line, `expected ${header.length} fields, found ${fields.length}`);
    }
    const num: Record<string, number> = {};
    for (const [name, i] of numCols) {
      const f = fields[i].trim();
      const v = PANDAS_NA.has(f) ? NaN : Number(f);
      if (!PANDAS_NA.has(f) && !Number.isFinite(v)) {
        throw new DataError(
          file,
          line,
          `column "${name}": expected a number, found ${JSON.stringify(fields[i])}`,
        );
      }
      num[name] = v;
    }
    const word = fields[iWord];
    if (PANDAS_NA.has(word)) {
      throw new DataError(file, line, `column "word": expected a word, found ${JSON.stringify(word)}`);
    }
    const prevMissing = PANDAS_NA.has(fields[iPrevItem]);
    out.push({
      line,
      item: PANDAS_NA.has(fields[iItem]) ? "None" : fields[iItem],
      word,
      prevItem: prevMissing ? null : fields[iPrevItem],
      prevWord: prevMissing ? null : fields[iPrevWord],
      num,
    });
  }
  return out;
}
