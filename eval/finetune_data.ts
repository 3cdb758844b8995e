/**
 * The (Super)GLUE tasks of the BabyLM fine-tuning evaluation as the pipeline reads them
 * (evaluation_pipeline/finetune/dataset.py, eval_finetuning.sh): each example is a text pair (A, B)
 * tokenized as two sequences and joined with nothing between them (GPT-2's tokenizer adds no special
 * tokens), truncated longest-first to the sequence length as Hugging Face's tokenizers do, and padded to
 * the longest example of its batch, on the left or the right.
 * @module
 */
import { parseJsonLines } from "../model/jsonl.ts";
import type { ClassifierBatch } from "./finetune_model.ts";

/** A metric of the fine-tuning (sklearn's accuracy_score, f1_score (binary), matthews_corrcoef). */
export type FinetuneMetric = "accuracy" | "f1" | "mcc";

/** One task: its fields, labels and the pipeline's per-task settings. */
export interface FinetuneTask {
  name: string;
  /** Fields of A, formatted by `template` ("{}" slots in order) or joined with spaces. */
  a: string[];
  template?: string;
  /** Fields of B, joined with spaces. */
  b: string[];
  numLabels: number;
  metrics: FinetuneMetric[];
  /** The validation metric that picks the best epoch. */
  select: FinetuneMetric;
  batchSize: number;
  epochs: number;
}

const BINARY: FinetuneMetric[] = ["accuracy", "f1", "mcc"];

/** The seven tasks of eval_finetuning.sh, in its order. */
export const FINETUNE_TASKS: readonly FinetuneTask[] = [
  {
    name: "boolq",
    a: ["question"],
    b: ["passage"],
    numLabels: 2,
    metrics: BINARY,
    select: "accuracy",
    batchSize: 16,
    epochs: 10,
  },
  {
    name: "multirc",
    a: ["question", "answer"],
    template: "Question: {} Answer: {}",
    b: ["paragraph"],
    numLabels: 2,
    metrics: BINARY,
    select: "accuracy",
    batchSize: 16,
    epochs: 10,
  },
  {
    name: "rte",
    a: ["sentence1"],
    b: ["sentence2"],
    numLabels: 2,
    metrics: BINARY,
    select: "accuracy",
    batchSize: 32,
    epochs: 10,
  },
  {
    name: "wsc",
    a: ["span2_text", "span1_text"],
    template: 'Does "{}" refer to "{}" in this passage?',
    b: ["text"],
    numLabels: 2,
    metrics: BINARY,
    select: "accuracy",
    batchSize: 32,
    epochs: 30,
  },
  {
    name: "mrpc",
    a: ["sentence1"],
    b: ["sentence2"],
    numLabels: 2,
    metrics: BINARY,
    select: "f1",
    batchSize: 32,
    epochs: 10,
  },
  {
    name: "qqp",
    a: ["question1"],
    b: ["question2"],
    numLabels: 2,
    metrics: BINARY,
    select: "f1",
    batchSize: 32,
    epochs: 10,
  },
  {
    name: "mnli",
    a: ["premise"],
    b: ["hypothesis"],
    numLabels: 3,
    metrics: ["accuracy"],
    select: "accuracy",
    batchSize: 32,
    epochs: 10,
  },
];

/** The task named `name`; the error lists the known ones. */
export function taskByName(name: string): FinetuneTask {
  const t = FINETUNE_TASKS.find((x) => x.name === name);
  if (!t) {
    throw new Error(
      `unknown fine-tuning task "${name}" (known: ${FINETUNE_TASKS.map((x) => x.name).join(", ")})`,
    );
  }
  return t;
}

/** One example as text: A, B and the label. */
export interface PairExample {
  a: string;
  b: string;
  label: number;
}

/** Python's `str.format` with positional "{}" slots only (the pipeline's templates). */
function format(template: string, values: string[]): string {
  let i = 0;
  return template.replace(/\{\}/g, () => values[i++]);
}

/** Parse a task's JSON-lines file; errors name the file, line and field. */
export function readTaskFile(text: string, file: string, task: FinetuneTask): PairExample[] {
  return parseJsonLines(text, file).map(({ line, value }) => {
    const where = `${file}:${line}`;
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new Error(`${where}: expected a JSON object`);
    }
    const o = value as Record<string, unknown>;
    const field = (k: string) => {
      if (typeof o[k] !== "string") {
        throw new Error(`${where}: field "${k}" must be a string (task ${task.name})`);
      }
      return o[k] as string;
    };
    const as = task.a.map(field), bs = task.b.map(field);
    const label = o.label;
    if (!(typeof label === "number" && Number.isInteger(label) && label >= 0 && label < task.numLabels)) {
      throw new Error(
        `${where}: "label" must be an integer in 0..${task.numLabels - 1}, got ${JSON.stringify(label)}`,
      );
    }
    return { a: task.template ? format(task.template, as) : as.join(" "), b: bs.join(" "), label };
  });
}

/**
 * The lengths Hugging Face's tokenizers keep of a pair of n1 and n2 tokens under `longest_first`
 * truncation to `max` (tokenizers' `truncate_encodings`): nothing is cut when the pair fits; otherwise
 * the shorter keeps all of itself if the longer can take the rest, else the two share `max` (the second
 * of the shorter-longer order getting the odd token).
 */
export function longestFirst(n1: number, n2: number, max: number): [number, number] {
  if (n1 + n2 <= max) return [n1, n2];
  const swap = n1 > n2;
  let short = Math.min(n1, n2), long = Math.max(n1, n2);
  long = short > max ? short : Math.max(short, max - short);
  if (short + long > max) {
    short = Math.floor(max / 2);
    long = short + (max % 2);
  }
  return swap ? [long, short] : [short, long];
}

/** A tokenized example: A's kept tokens then B's, and the label. */
export interface EncodedExample {
  ids: number[];
  label: number;
}

/** Tokenize A and B separately, cut the pair to `maxLength` longest-first, and join them. */
export function encodeExamples(
  examples: PairExample[],
  encode: (text: string) => number[],
  maxLength: number,
): EncodedExample[] {
  return examples.map(({ a, b, label }, i) => {
    const ia = encode(a), ib = encode(b);
    const [na, nb] = longestFirst(ia.length, ib.length, maxLength);
    const ids = [...ia.slice(0, na), ...ib.slice(0, nb)];
    if (ids.length === 0) throw new Error(`example ${i}: both texts are empty after tokenization`);
    return { ids, label };
  });
}

/** Which side padding goes on: right for the first-token head (2025), left for the last token (2026). */
export type PaddingSide = "left" | "right";

/** A batch of examples padded with `padId` to the longest of them. */
export function padBatch(items: EncodedExample[], padId: number, side: PaddingSide): ClassifierBatch {
  const B = items.length;
  const T = Math.max(...items.map((x) => x.ids.length));
  const tokens = new Uint32Array(B * T).fill(padId);
  const keyStart = new Uint32Array(B);
  items.forEach((x, b) => {
    const start = side === "left" ? T - x.ids.length : 0;
    tokens.set(x.ids, b * T + start);
    if (side === "left") keyStart[b] = start;
  });
  return { B, T, tokens, keyStart, labels: Uint32Array.from(items, (x) => x.label) };
}
