/**
 * What `score`, `sft` and `simpo` share: JSON-lines records with their line numbers, token sequences
 * from `{"tokens": [...]}` or `{"text": "..."}` fields, a model directory (checkpoint + optional
 * tokenizer.json), and the step loop that writes an HF directory with `metrics.jsonl`. The training
 * itself is the round loop's: its batch packer (`interaction/sequences.ts`), schedule
 * (`interaction/schedule.ts`), step and epoch order (`interaction/step.ts`) and {@link Trainer}.
 * @module
 */
import {
  dropoutOption,
  HALF_SUMS_FLAG,
  halfSumsFlag,
  numberOption,
  OPTIMIZER_FLAGS,
  optimizerFlags,
  type OptionSpec,
  PRECISION_FLAG,
  precisionFlag,
  Progress,
  UsageError,
} from "./common.ts";
import type { Precision } from "../model/precision.ts";
import { GPT2_DROPOUT, uniformDropout } from "../model/config.ts";
import type { Checkpoint } from "../model/checkpoint.ts";
import { type Tokenizer, TOKENIZER_FILE } from "../model/tokenizer.ts";
import { loadCheckpoint, loadTokenizer, readJsonLinesFile, saveCheckpoint } from "./files.ts";
import type { JsonLine } from "../model/jsonl.ts";
import type { Gpu } from "../shaders/gpu.ts";
import { GPU_FLAGS, type GpuFlagValues, openGpu } from "./gpu_options.ts";
import { GPT2 } from "../model/gpt2.ts";
import {
  type AdamWConfig,
  BASELINE_ADAMW,
  type Batch,
  type LossSpec,
  type StepMetrics,
  Trainer,
} from "../model/trainer.ts";
import { BABYLM_INTERACTION } from "../interaction/config.ts";
import type { ScheduleConfig } from "../interaction/schedule.ts";
import { buildLmBatch, buildPairBatch, type SpecialIds } from "../interaction/sequences.ts";
import { epochOrder, scheduledStep } from "../interaction/step.ts";

/** The records of a JSON-lines input file, at least one, with their line numbers for `file:line` errors. */
export async function readRecords(path: string): Promise<JsonLine[]> {
  const out = await readJsonLinesFile(path);
  if (out.length === 0) throw new UsageError(`${path}: no records (expected one JSON object per line)`);
  return out;
}

/** A model directory loaded for the engine commands. */
export interface ModelDir {
  dir: string;
  checkpoint: Checkpoint;
  /** Present when the directory has a tokenizer.json. */
  tokenizer?: Tokenizer;
  /** The tokenizer.json bytes, copied as they are into saved checkpoints. */
  tokenizerBytes?: Uint8Array;
}

/** Load `config.json` + `model.safetensors` and, if present, `tokenizer.json` from `dir`. */
export async function loadModelDir(dir: string): Promise<ModelDir> {
  let checkpoint: Checkpoint;
  try {
    checkpoint = await loadCheckpoint(dir);
  } catch (e) {
    throw new UsageError(`--model ${dir}: ${(e as Error).message}`);
  }
  const path = `${dir.replace(/\/+$/, "")}/${TOKENIZER_FILE}`;
  let tokenizerBytes: Uint8Array;
  try {
    tokenizerBytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { dir, checkpoint };
    throw e;
  }
  const tokenizer = await loadTokenizer(path);
  if (tokenizer.vocabSize > checkpoint.config.vocabSize) {
    throw new UsageError(
      `${path}: the tokenizer has ${tokenizer.vocabSize} ids but the model's vocab_size is ` +
        `${checkpoint.config.vocabSize}`,
    );
  }
  return { dir, checkpoint, tokenizer, tokenizerBytes };
}

/** How a text field becomes ids: BOS before it and/or EOS after it. */
export interface TextRule {
  bos: boolean;
  eos: boolean;
}

/** Where a record came from, for messages: `file:line`. */
export function at(path: string, line: number): string {
  return `${path}:${line}`;
}

/**
 * The token ids of `key` in a record: a given id array is used exactly as given (ids checked against
 * the vocabulary); a string is tokenized with `tokenizer` and gets BOS/EOS per `rule`. Errors name
 * `where` (file:line) and the field.
 */
export function fieldTokens(
  record: Record<string, unknown>,
  key: string,
  where: string,
  vocabSize: number,
  rule: TextRule,
  model: ModelDir,
): number[] {
  const v = record[key];
  if (typeof v === "string") {
    const tok = model.tokenizer;
    if (!tok) {
      throw new UsageError(
        `${where}: "${key}" is text, but ${model.dir} has no ${TOKENIZER_FILE} to tokenize it ` +
          `(give token ids instead)`,
      );
    }
    const ids = tok.encode(v);
    const bos = model.checkpoint.config.bosTokenId, eos = model.checkpoint.config.eosTokenId;
    return [...(rule.bos ? [bos] : []), ...ids, ...(rule.eos ? [eos] : [])];
  }
  if (!Array.isArray(v)) {
    throw new UsageError(
      `${where}: "${key}" must be an array of token ids or a string, found ${
        v === undefined ? "no such field" : JSON.stringify(v)
      }`,
    );
  }
  v.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new UsageError(
        `${where}: "${key}"[${i}] must be a token id in [0, ${vocabSize}), found ${JSON.stringify(id)}`,
      );
    }
  });
  return v as number[];
}

/** The record as an object, or an error naming where and what was expected. */
export function asObject(record: JsonLine, path: string, expected: string): Record<string, unknown> {
  const v = record.value;
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    throw new UsageError(`${at(path, record.line)}: expected ${expected}, found ${JSON.stringify(v)}`);
  }
  return v as Record<string, unknown>;
}

/** The most tokens a sequence may have, and what the refusal of a longer one says. */
export interface LengthLimit {
  max: number;
  reason: string;
}

/** Training and scoring: inputs are tokens[:-1], so a sequence has at most n_positions + 1 tokens. */
export function positionsLimit(nPositions: number): LengthLimit {
  return {
    max: nPositions + 1,
    reason: `the model's n_positions ${nPositions} allows at most ${nPositions + 1}`,
  };
}

/**
 * One sequence per record: exactly one of `"tokens"` (ids as given) and `"text"` (tokenized per `rule`).
 * Each must have at least `minLength` tokens and at most `limit` (default {@link positionsLimit}).
 */
export function readSequences(
  records: JsonLine[],
  path: string,
  model: ModelDir,
  rule: TextRule,
  minLength: number,
  limit = positionsLimit(model.checkpoint.config.nPositions),
): number[][] {
  const { vocabSize } = model.checkpoint.config;
  return records.map((r) => {
    const o = asObject(r, path, `an object with "tokens" (array of ids) or "text" (string)`);
    const where = at(path, r.line);
    if (("tokens" in o) === ("text" in o)) {
      throw new UsageError(
        `${where}: expected a "tokens" (array of ids) or "text" (string) field, exactly one, found keys ` +
          `${JSON.stringify(Object.keys(o))}`,
      );
    }
    const key = "tokens" in o ? "tokens" : "text";
    const seq = fieldTokens(o, key, where, vocabSize, rule, model);
    checkLength(seq.length, where, key, minLength, limit);
    return seq;
  });
}

/** A sequence of n tokens needs n >= minLength and n <= limit.max. */
export function checkLength(
  n: number,
  where: string,
  what: string,
  minLength: number,
  limit: LengthLimit,
): void {
  if (n < minLength) {
    throw new UsageError(`${where}: "${what}" has ${n} tokens; at least ${minLength} are needed`);
  }
  if (n > limit.max) throw new UsageError(`${where}: "${what}" has ${n} tokens; ${limit.reason}`);
}

/** A preference pair: both sequences share the prompt; completions are as given. */
export interface PreferencePair {
  prompt: number[];
  chosen: number[];
  rejected: number[];
}

/**
 * Pairs from records `{"prompt", "chosen", "rejected"}`, each ids or text. Text prompts get BOS in
 * front; text completions get EOS at the end (the baseline's [BOS] + context + completion + [EOS]).
 */
export function readPairs(records: JsonLine[], path: string, model: ModelDir): PreferencePair[] {
  const { vocabSize, nPositions } = model.checkpoint.config;
  return records.map((r) => {
    const o = asObject(r, path, `an object with "prompt", "chosen" and "rejected"`);
    const where = at(path, r.line);
    const prompt = fieldTokens(o, "prompt", where, vocabSize, { bos: true, eos: false }, model);
    if (prompt.length === 0) throw new UsageError(`${where}: "prompt" is empty; it needs at least 1 token`);
    const pair: PreferencePair = { prompt, chosen: [], rejected: [] };
    for (const key of ["chosen", "rejected"] as const) {
      const c = fieldTokens(o, key, where, vocabSize, { bos: false, eos: true }, model);
      if (c.length === 0) throw new UsageError(`${where}: "${key}" is empty; it needs at least 1 token`);
      checkLength(prompt.length + c.length, where, `prompt + ${key}`, 2, positionsLimit(nPositions));
      pair[key] = c;
    }
    return pair;
  });
}

/** Padded length for a batch whose longest sequence has `n` tokens: n - 1 inputs rounded up to 8. */
export function paddedT(n: number, nPositions: number): number {
  return Math.min(nPositions, Math.ceil((n - 1) / 8) * 8);
}

/** The special ids of input files: padding with EOS, as the baseline and GPT-2 do. */
function fileIds(eos: number): SpecialIds {
  return { bos: eos, eos, pad: eos };
}

/**
 * An LM batch of whole sequences, the one packer of the round loop ({@link buildLmBatch}) with the
 * mask of every real position (ids equal to EOS inside a given sequence are trained on), rows padded
 * with EOS to the longest one rounded up to 8 positions.
 */
export function packSequences(seqs: number[][], eos: number, nPositions: number): Batch {
  const T = paddedT(Math.max(...seqs.map((s) => s.length)), nPositions);
  return buildLmBatch(seqs, fileIds(eos), { T, mask: "length" });
}

/**
 * A preference batch ({@link buildPairBatch}): P chosen rows then P rejected rows (pair i = rows i and
 * P + i), each prompt + completion, real-position masks as {@link packSequences}; the completion mask
 * covers the predictions of the completion tokens, input positions len(prompt) - 1 .. n - 2.
 */
export function packPairs(pairs: PreferencePair[], eos: number, nPositions: number): Batch {
  const longest = Math.max(
    ...pairs.map((p) => p.prompt.length + Math.max(p.chosen.length, p.rejected.length)),
  );
  return buildPairBatch(pairs, fileIds(eos), { T: paddedT(longest, nPositions), mask: "length" });
}

/** Options of {@link runTraining}, shared by sft and simpo; the optimiser's take the run config's names. */
export const TRAIN_OPTIONS = {
  model: { type: "string", help: "Hugging Face GPT-2 directory to start from" },
  out: { type: "string", help: "output directory: the trained model (HF format) and metrics.jsonl" },
  steps: { type: "string", help: "optimizer steps to take (overrides --epochs; cycles over the data)" },
  epochs: { type: "string", help: "passes over the data", default: "1" },
  "batch-size": { type: "string", help: "records per step", default: "16" },
  lr: { ...OPTIMIZER_FLAGS.lr, default: String(BABYLM_INTERACTION.lr) },
  schedule: { type: "string", help: "learning-rate schedule: constant or cosine", default: "constant" },
  "warmup-steps": { ...OPTIMIZER_FLAGS["warmup-steps"], default: "0" },
  "total-steps": { type: "string", help: "steps of the cosine schedule (default: the steps run)" },
  "weight-decay": {
    type: "string",
    help: "AdamW weight decay (not on biases and LayerNorm)",
    default: String(BASELINE_ADAMW.weightDecay),
  },
  "clip-norm": { ...OPTIMIZER_FLAGS["clip-norm"], default: String(BASELINE_ADAMW.clipNorm) },
  seed: { type: "string", help: "seed of the shuffle and of the dropout masks", default: "0" },
  dropout: {
    type: "string",
    help: "dropout rate at all four sites (0: none); default: the model's config.json rates, as in " +
      "transformers' train mode",
  },
  shuffle: {
    type: "string",
    help: "shuffle each epoch (false: consecutive lines in file order)",
    default: "true",
  },
  ...PRECISION_FLAG,
  ...HALF_SUMS_FLAG,
  ...GPU_FLAGS,
} satisfies Record<string, OptionSpec>;

/** The parsed optimiser and loop settings. */
export interface TrainOptions {
  steps?: number;
  epochs: number;
  batchSize: number;
  /** The schedule; `totalSteps` 0 means the steps run. */
  schedule: ScheduleConfig;
  adamw: AdamWConfig;
  seed: number;
  shuffle: boolean;
  /** `--dropout`: one rate for the four sites; absent: the model's config.json rates. */
  dropout?: number;
  /** `--precision` of the matmuls (f16: dynamic loss scaling, skipped steps counted in metrics.jsonl). */
  precision: Precision;
  /** `--half-sums`: f16 arithmetic in the blocks' linear layers (precision f16 only). */
  halfSums: boolean;
  /** `--kernels`, `--tune`, `--tune-cache`. */
  gpu: GpuFlagValues;
}

/** Parse {@link TRAIN_OPTIONS} values. */
export function parseTrainOptions(v: Record<string, unknown>): TrainOptions {
  const kind = v.schedule;
  if (kind !== "constant" && kind !== "cosine") {
    throw new UsageError(`--schedule must be constant or cosine, got ${JSON.stringify(kind)}`);
  }
  if (v.shuffle !== "true" && v.shuffle !== "false") {
    throw new UsageError(`--shuffle must be true or false, got ${JSON.stringify(v.shuffle)}`);
  }
  const flags = optimizerFlags(v) as Required<ReturnType<typeof optimizerFlags>>;
  const precision = precisionFlag(v.precision);
  return {
    steps: v.steps === undefined ? undefined : numberOption(v.steps, "steps", { min: 1, integer: true }),
    epochs: numberOption(v.epochs, "epochs", { min: 1, integer: true }),
    batchSize: numberOption(v["batch-size"], "batch-size", { min: 1, integer: true }),
    schedule: {
      kind,
      lr: flags.lr,
      warmupSteps: flags.warmupSteps,
      totalSteps: v["total-steps"] === undefined
        ? 0
        : numberOption(v["total-steps"], "total-steps", { min: 1, integer: true }),
    },
    adamw: {
      ...BASELINE_ADAMW,
      weightDecay: numberOption(v["weight-decay"], "weight-decay", { min: 0 }),
      clipNorm: flags.clipNorm,
    },
    seed: numberOption(v.seed, "seed", { integer: true }),
    shuffle: v.shuffle === "true",
    dropout: v.dropout === undefined ? undefined : dropoutOption(v.dropout),
    precision,
    halfSums: halfSumsFlag(v["half-sums"], precision),
    gpu: { kernels: v.kernels as string, tune: v.tune as string, "tune-cache": v["tune-cache"] as string },
  };
}

/**
 * The record indices of each step: epochs of `n` records cut into batches of `batchSize` (the last of
 * an epoch may be smaller), in the round loop's {@link epochOrder} when `shuffle`, else in file order,
 * until `steps` batches (default: `epochs` epochs).
 */
export function stepBatches(
  n: number,
  o: Pick<TrainOptions, "steps" | "epochs" | "batchSize" | "seed" | "shuffle">,
): { epoch: number; items: number[] }[] {
  const total = o.steps ?? o.epochs * Math.ceil(n / o.batchSize);
  const out: { epoch: number; items: number[] }[] = [];
  for (let epoch = 0; out.length < total; epoch++) {
    const order = o.shuffle ? epochOrder(o.seed, n, epoch) : Array.from({ length: n }, (_, i) => i);
    for (let i = 0; i < n && out.length < total; i += o.batchSize) {
      out.push({ epoch, items: order.slice(i, i + o.batchSize) });
    }
  }
  return out;
}

/** One line of metrics.jsonl. */
export type MetricsRow = Record<string, number>;

/** What {@link runTraining} needs beyond the options. */
export interface TrainingJob<I> {
  command: string;
  model: ModelDir;
  items: I[];
  out: string;
  options: TrainOptions;
  loss: LossSpec;
  /** The device batch of these items. */
  pack: (items: I[]) => Batch;
  /** Extra metric fields of a step (SimPO rewards). */
  extra?: (m: StepMetrics) => MetricsRow;
  /** Reuse this device (tests); default: a new one. */
  gpu?: Gpu;
}

/** Refuse an --out that exists and is not a directory, before any long work. */
export async function checkOutDir(out: string): Promise<void> {
  try {
    const info = await Deno.stat(out);
    if (!info.isDirectory) throw new UsageError(`--out ${out}: exists and is not a directory`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/**
 * Train and save: each step packs its records and takes the round loop's {@link scheduledStep}, then
 * records step, epoch, loss, lr, grad_norm, tokens_per_s (real predicted positions per second of the
 * step) and `extra`. Then the model, the model dir's tokenizer.json and metrics.jsonl are written to
 * `out` in one atomic directory save. Returns the metrics rows.
 */
export async function runTraining<I>(job: TrainingJob<I>): Promise<MetricsRow[]> {
  const { options: o, model } = job;
  await checkOutDir(job.out);
  const steps = stepBatches(job.items.length, o);
  const schedule = { ...o.schedule, totalSteps: o.schedule.totalSteps || steps.length };
  const gpu = job.gpu ?? await openGpu(o.gpu);
  // Train mode as transformers': the config.json rates unless --dropout sets them; the saved config says which.
  const rates = o.dropout === undefined
    ? model.checkpoint.config.dropout ?? GPT2_DROPOUT
    : uniformDropout(o.dropout);
  const config = { ...model.checkpoint.config, dropout: rates };
  const gpt2 = GPT2.create(gpu, config, model.checkpoint.weights).usePrecision(o.precision, {
    halfSums: o.halfSums,
  });
  const trainer = new Trainer(gpt2, o.adamw, { dropout: { seed: o.seed, rates } });
  const rows: MetricsRow[] = [];
  const progress = new Progress(job.command, steps.length, "step");
  for (const [k, s] of steps.entries()) {
    const batch = job.pack(s.items.map((i) => job.items[i]));
    const where = `${job.command}: step ${k + 1} (nothing was saved)`;
    const { metrics: m, lr, tokensPerSec } = await scheduledStep(trainer, schedule, batch, job.loss, where);
    rows.push({
      step: k + 1,
      epoch: s.epoch,
      loss: m.loss,
      lr,
      grad_norm: m.gradNorm,
      tokens_per_s: tokensPerSec,
      ...(trainer.scaler ? { loss_scale: m.lossScale!, skipped_steps: trainer.scaler.skipped } : {}),
      ...job.extra?.(m),
    });
    progress.tick(1, `loss ${m.loss.toFixed(4)}`);
  }
  progress.end();
  const extraFiles: Record<string, string | Uint8Array> = {
    "metrics.jsonl": rows.map((r) => JSON.stringify(r)).join("\n") + "\n",
  };
  if (model.tokenizerBytes) extraFiles[TOKENIZER_FILE] = model.tokenizerBytes;
  await saveCheckpoint(job.out, config, await gpt2.getWeights(), extraFiles);
  return rows;
}
