/**
 * The training configuration: every setting of an interaction run with its default, the presets
 * (`tiny`, the offline default, and `babylm-interaction`, the model card), and validation that names
 * the bad key. One source of truth: `--print-config` prints exactly this object.
 * @module
 */
import { type DropoutRates, GPT2_DROPOUT, NO_DROPOUT } from "../model/config.ts";
import { type AdamWConfig, BASELINE_ADAMW } from "../model/trainer.ts";
import { checkHalfSums, type Precision } from "../model/precision.ts";
import { SCALER_DEFAULTS } from "../model/scaler.ts";
import type { LineJoin } from "./corpus.ts";
import type { ScheduleConfig } from "./schedule.ts";
import { TEACHER_DEFAULTS } from "./teacher.ts";
import { resolveChatTemplate } from "./chat_template.ts";
import { type BudgetCount, validateBudget } from "./budget.ts";
import { TRACKS } from "./tracks.ts";
import { parseWordMeasure } from "./words.ts";

/** Where the student's contexts come from. */
export type CorpusConfig =
  | { kind: "embedded"; words: number }
  | { kind: "dir"; path: string };

/** Who corrects the student. */
export interface TeacherConfig {
  /** `corpus`: the datapoint's own continuation (a baseline variant); `openai`: an LLM over HTTP. */
  kind: "corpus" | "openai";
  /** Base URLs of OpenAI-compatible servers (several spread the load). */
  urls: string[];
  /** `chat` (vLLM/SGLang prefill) or `completion` (client-rendered chat template: llama.cpp, Ollama). */
  mode: "chat" | "completion";
  model: string;
  /**
   * Completion mode's chat template: `auto` (from `model`) or one of `CHAT_TEMPLATES` (chat_template.ts:
   * llama3, chatml-qwen2.5, qwen3, qwen3-instruct-2507, qwen3.5). Chat mode leaves it to the server.
   */
  chatTemplate: string;
  /** Prompt template file (messages + sampling); empty: the project's default prompt. */
  promptFile: string;
  /** Environment variable holding the API key, if the server needs one. */
  apiKeyEnv: string;
  timeoutMs: number;
  maxInFlightPerServer: number;
  maxAttempts: number;
}

/** Every setting of a run. */
export interface TrainConfig {
  preset: string;
  /**
   * Seed of every random draw, an integer in [0, 2^32); {@link RANDOM_SEED} (-1, the baseline's value)
   * draws one when a run starts, which is then written to its config.json and log.
   */
  seed: number;
  /** Run directory (metrics, interactions, checkpoints, state). */
  outDir: string;
  /** Start from this Hugging Face GPT-2 directory; empty: a new model with `architecture`. */
  initModel: string;
  architecture: { nLayer: number; nHead: number; nEmbd: number; nPositions: number };
  /** A tokenizer.json file, or `train` to train a byte-level BPE of `vocabSize` on the corpus. */
  tokenizer: string;
  vocabSize: number;
  corpus: CorpusConfig;
  /**
   * How a corpus file's lines are joined before tokenizing: `baseline` as the baseline's
   * `' '.join(f.readlines())` (a space after every newline), `raw` the file as it is.
   */
  corpusJoin: LineJoin;
  numRounds: number;
  datapointLength: number;
  contextLength: number;
  /** Cap on datapoints per round (0 = all); the tiny preset uses it to finish in minutes. */
  maxDatapointsPerRound: number;
  student: {
    temperature: number;
    topP: number;
    topK: number;
    minTokens: number;
    maxTokens: number;
    batchSize: number;
  };
  teacher: TeacherConfig;
  nSftEpochs: number;
  nPoEpochs: number;
  /**
   * Dropout rates of the training steps (transformers' train mode); scoring, evaluation and the
   * student's sampling never drop. Written to the student's config.json.
   */
  dropout: DropoutRates;
  /**
   * Numeric precision of the matmuls (model/precision.ts): `f32`, or `f16` (f16 operands with f32 sums;
   * master weights, AdamW, LayerNorm, softmax and the losses in f32; dynamic loss scaling). f16 needs
   * an adapter with `shader-f16`.
   */
  precision: Precision;
  /**
   * With precision `f16` only: f16 products and partial sums (over chunks of 32 k, flushed into f32) in
   * the blocks' linear layers, y = x W and dx = dy W^T (model/precision.ts; GPUs run them at twice the
   * f32 rate); the weight gradients and the LM head keep f32 sums. The GPU kernel family's matmul only:
   * the CPU family gives plain f16's bits. Default false.
   */
  halfSums: boolean;
  /**
   * Dynamic loss scaling under f16 (model/scaler.ts), GradScaler's init_scale and growth_interval: the
   * first scale, and the clean steps after which it doubles (it halves on every overflowed step).
   */
  lossScale: { initScale: number; growthInterval: number };
  /** Pairs per optimisation step (SFT steps take this many winning sequences). */
  batchSize: number;
  simpoBeta: number;
  /** gamma = beta * ratio. */
  simpoGammaRatio: number;
  /** Weight of the LM loss in the preference phase. */
  lmWeight: number;
  lr: number;
  schedule: "cosine" | "constant";
  warmupSteps: number;
  totalSteps: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  clipNorm: number;
  /** Checkpoint every `every` words while words seen <= `upTo`, e.g. [[1e7, 1e6], [1e8, 1e7], [1e9, 1e8]]. */
  checkpointWords: Array<[number, number]>;
  /**
   * How words are counted (words.ts): `whitespace` (Python's `str.split()`, the Strict tracks) or
   * `bytes:LANG` (English-equivalent words from UTF-8 bytes and the byte premium; LANG eng, nld, zho).
   * Words seen, the word checkpoints and the budget all count this way.
   */
  wordMeasure: string;
  /** Limit on the budgeted words (budget.ts), 0 = none: 100M for Strict, 10M for Strict-Small. */
  wordBudget: number;
  /** The counts `wordBudget` limits, summed; names of corpusContext, corpusContinuation, student, teacher. */
  budgetCounts: string[];
  /** Most passes over a round's data (nSftEpochs + nPoEpochs), 0 = no limit; 2026: 10 epochs. */
  maxEpochs: number;
}

/** The model card's run: GPT-2 124M, 20 rounds, every hyperparameter as published. */
export const BABYLM_INTERACTION: TrainConfig = {
  preset: "babylm-interaction",
  seed: 0,
  outDir: "runs/babylm-interaction",
  initModel: "",
  architecture: { nLayer: 12, nHead: 12, nEmbd: 768, nPositions: 1024 },
  tokenizer: "",
  vocabSize: 50257,
  corpus: { kind: "dir", path: "data/train_100M" },
  corpusJoin: "baseline",
  numRounds: 20,
  datapointLength: 512,
  contextLength: 256,
  maxDatapointsPerRound: 0,
  student: { temperature: 1, topP: 0.8, topK: 0, minTokens: 255, maxTokens: 256, batchSize: 64 },
  teacher: {
    kind: "openai",
    urls: ["http://127.0.0.1:8000"],
    mode: "chat",
    model: "meta-llama/Llama-3.1-8B-Instruct",
    ...TEACHER_DEFAULTS,
    promptFile: "",
  },
  // The model card's 8 LM epochs per round; the baseline's config.yaml (commit 5bc3303) says 7
  // (`deno task train --sft-epochs 7`).
  nSftEpochs: 8,
  nPoEpochs: 2,
  // A default GPT2Config trained after student.train(): 0.1 at all four sites, LM and SimPO phases alike.
  dropout: GPT2_DROPOUT,
  precision: "f32",
  halfSums: false,
  lossScale: { initScale: SCALER_DEFAULTS.initScale, growthInterval: SCALER_DEFAULTS.growthInterval },
  batchSize: 16,
  simpoBeta: 2,
  simpoGammaRatio: 0.5,
  lmWeight: 0.2,
  lr: 5e-5,
  schedule: "cosine",
  warmupSteps: 2000,
  totalSteps: 200_000,
  ...BASELINE_ADAMW,
  checkpointWords: [[1e7, 1e6], [1e8, 1e7], [1e9, 1e8]],
  wordMeasure: "whitespace",
  wordBudget: 0,
  budgetCounts: ["corpusContext", "teacher"],
  maxEpochs: 0,
};

/**
 * BabyLM 2026 Strict with teacher feedback: the babylm-interaction run (its algorithm and every
 * hyperparameter) on the 100M-word corpus, inside the track's limits: 100M budgeted words (the corpus
 * contexts plus the teacher's text, budget.ts) and 10 passes over each round's data (8 LM + 2 SimPO).
 */
export const STRICT: TrainConfig = {
  ...BABYLM_INTERACTION,
  preset: "strict",
  outDir: "runs/strict",
  corpus: { kind: "dir", path: "data/train_100M" },
  wordBudget: TRACKS.strict.wordBudget,
  maxEpochs: TRACKS.strict.maxEpochs,
};

/**
 * Strict-Small: the same on the 10M-word corpus (`deno task data --size 10M`), 10M budgeted words, the
 * schedule scaled with the data (a tenth of the steps and warm-up) and word checkpoints to 100M words
 * seen (the track's revisions end at chck_100M).
 */
export const STRICT_SMALL: TrainConfig = {
  ...STRICT,
  preset: "strict-small",
  outDir: "runs/strict-small",
  corpus: { kind: "dir", path: "data/train_10M" },
  warmupSteps: BABYLM_INTERACTION.warmupSteps / 10,
  totalSteps: BABYLM_INTERACTION.totalSteps / 10,
  checkpointWords: [[1e7, 1e6], [1e8, 1e7]],
  wordBudget: TRACKS["strict-small"].wordBudget,
  maxEpochs: TRACKS["strict-small"].maxEpochs,
};

/**
 * The offline default: a small GPT-2, the embedded child-directed corpus, a BPE tokenizer trained on it
 * and the corpus teacher. Finishes a few rounds in minutes on a CPU-only WebGPU adapter.
 */
export const TINY: TrainConfig = {
  ...BABYLM_INTERACTION,
  preset: "tiny",
  outDir: "runs/tiny",
  architecture: { nLayer: 2, nHead: 2, nEmbd: 64, nPositions: 128 },
  tokenizer: "train",
  vocabSize: 512,
  corpus: { kind: "embedded", words: 60_000 },
  // The generated corpus has no file lines to join.
  corpusJoin: "raw",
  numRounds: 3,
  datapointLength: 64,
  contextLength: 32,
  maxDatapointsPerRound: 64,
  student: { temperature: 1, topP: 0.8, topK: 0, minTokens: 31, maxTokens: 32, batchSize: 64 },
  teacher: { ...BABYLM_INTERACTION.teacher, kind: "corpus", urls: [] },
  nSftEpochs: 2,
  nPoEpochs: 1,
  // No dropout: a 2-layer student with 3 short rounds has nothing to regularise, and learns faster.
  dropout: NO_DROPOUT,
  batchSize: 8,
  lr: 2e-3,
  warmupSteps: 10,
  totalSteps: 400,
  checkpointWords: [[1e5, 1e4]],
};

/** The optimiser settings of a run. */
export function adamwOf(c: TrainConfig): AdamWConfig {
  return { beta1: c.beta1, beta2: c.beta2, eps: c.eps, weightDecay: c.weightDecay, clipNorm: c.clipNorm };
}

/** The learning-rate schedule of a run. */
export function scheduleOf(c: TrainConfig): ScheduleConfig {
  return { kind: c.schedule, lr: c.lr, warmupSteps: c.warmupSteps, totalSteps: c.totalSteps };
}

/** Presets by name. */
export const PRESETS: Record<string, TrainConfig> = {
  tiny: TINY,
  "babylm-interaction": BABYLM_INTERACTION,
  strict: STRICT,
  "strict-small": STRICT_SMALL,
};

/** The `seed` that asks for a random one (the baseline's `seed: -1`). */
export const RANDOM_SEED = -1;

/**
 * `c` with a {@link RANDOM_SEED} replaced by a seed drawn from `draw` (crypto by default), and the seed
 * drawn, if one was; any other config comes back as it is.
 */
export function drawSeed(
  c: TrainConfig,
  draw = () => crypto.getRandomValues(new Uint32Array(1))[0],
): { config: TrainConfig; drawn?: number } {
  if (c.seed !== RANDOM_SEED) return { config: c };
  const drawn = draw();
  return { config: { ...c, seed: drawn }, drawn };
}

/**
 * Keys a run's config.json may change between starts: where the teacher is and how it is asked, which
 * changes no step of the training (answers already stored are kept, the next are asked the same way),
 * and the word and epoch limits, which only decide whether the next round starts.
 * Any other change would make the resumed run neither the old one nor a new one.
 */
export const RESUME_MAY_CHANGE = [
  "outDir",
  // The limits are checked before each round: raising one lets a run stopped at it go on.
  "wordBudget",
  "budgetCounts",
  "maxEpochs",
  // The weights and optimiser state are f32 in either precision (only the loss scale restarts), so a
  // run may continue in f32 on an adapter without shader-f16, or in f16 where it has it.
  "precision",
  // f16 arithmetic changes only how the next steps round, like precision, and it needs precision f16,
  // so a change of precision may have to take it along.
  "halfSums",
  "teacher.urls",
  "teacher.apiKeyEnv",
  "teacher.timeoutMs",
  "teacher.maxInFlightPerServer",
  "teacher.maxAttempts",
];

/** Dotted keys whose values differ between two configs (leaves; arrays compared whole), sorted. */
export function changedConfigKeys(a: unknown, b: unknown, path = ""): string[] {
  const isObject = (v: unknown): v is Record<string, unknown> =>
    v !== null && typeof v === "object" && !Array.isArray(v);
  if (isObject(a) && isObject(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => changedConfigKeys(a[k], b[k], path ? `${path}.${k}` : k));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [path];
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/**
 * Overlay `overrides` (parsed JSON) on `base`, rejecting keys `base` does not have and values of the
 * wrong type; `where` names the source in errors.
 */
export function mergeConfig<T>(base: T, overrides: Json, where: string, path = ""): T {
  if (overrides === null || typeof overrides !== "object" || Array.isArray(overrides)) {
    throw new Error(`${where}: ${path || "config"} must be a JSON object`);
  }
  const out = structuredClone(base) as Record<string, unknown>;
  for (const [k, v] of Object.entries(overrides)) {
    const key = path ? `${path}.${k}` : k;
    if (!(k in out)) throw new Error(`${where}: unknown config key "${key}"`);
    const cur = out[k];
    if (cur !== null && typeof cur === "object" && !Array.isArray(cur) && k !== "corpus") {
      out[k] = mergeConfig(cur, v, where, key);
    } else if (k === "corpus") {
      out[k] = corpusConfig(v, where, key);
    } else {
      if (typeof v !== typeof cur || Array.isArray(v) !== Array.isArray(cur)) {
        throw new Error(
          `${where}: "${key}" must be ${Array.isArray(cur) ? "an array" : `a ${typeof cur}`}, got ${
            JSON.stringify(v)
          }`,
        );
      }
      out[k] = v;
    }
  }
  return out as T;
}

/** A whole `corpus` value (it replaces the preset's): `{kind: "embedded", words}` or `{kind: "dir", path}`. */
function corpusConfig(v: Json, where: string, key: string): CorpusConfig {
  const o = v !== null && typeof v === "object" && !Array.isArray(v) ? v : undefined;
  const keys = o ? Object.keys(o).sort().join(",") : "";
  if (o?.kind === "embedded" && keys === "kind,words" && typeof o.words === "number") {
    return { kind: "embedded", words: o.words };
  }
  if (o?.kind === "dir" && keys === "kind,path" && typeof o.path === "string") {
    return { kind: "dir", path: o.path };
  }
  throw new Error(
    `${where}: "${key}" must be {"kind": "embedded", "words": N} or {"kind": "dir", "path": "DIR"}, got ${
      JSON.stringify(v)
    }`,
  );
}

/**
 * Check every value of a config, before any work is done with it; throws naming `where` (the config
 * file), the key and the expected range. `randomSeed` allows {@link RANDOM_SEED} (a run not started yet).
 */
export function validateTrainConfig(
  c: TrainConfig,
  { where = "config", randomSeed = false }: { where?: string; randomSeed?: boolean } = {},
): TrainConfig {
  const fail = (key: string, expected: string, got: unknown) => {
    throw new Error(`${where}: "${key}" must be ${expected}, got ${JSON.stringify(got)}`);
  };
  // JSON's 1e999 parses to Infinity, which every range check below would let through.
  const finite = (v: unknown, key: string): void => {
    if (typeof v === "number" && !Number.isFinite(v)) fail(key, "a finite number", v);
    else if (Array.isArray(v)) v.forEach((x, i) => finite(x, `${key}[${i}]`));
    else if (v !== null && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) finite(x, key ? `${key}.${k}` : k);
    }
  };
  finite(c, "");
  if (!Object.hasOwn(PRESETS, c.preset)) {
    fail("preset", `one of ${Object.keys(PRESETS).join(", ")}`, c.preset);
  }
  const seedOk = Number.isInteger(c.seed) && c.seed >= 0 && c.seed < 2 ** 32;
  if (!seedOk && !(randomSeed && c.seed === RANDOM_SEED)) {
    fail(
      "seed",
      randomSeed
        ? `an integer in [0, 2^32), or ${RANDOM_SEED} for a random one`
        : `an integer in [0, 2^32) (a run's seed is drawn when it starts and recorded)`,
      c.seed,
    );
  }
  if (!c.outDir) fail("outDir", "a directory", c.outDir);
  const posInt = (key: string, v: number) => {
    if (!Number.isInteger(v) || v < 1) fail(key, "a positive integer", v);
  };
  const nonNegInt = (key: string, v: number) => {
    if (!Number.isInteger(v) || v < 0) fail(key, "an integer >= 0", v);
  };
  posInt("numRounds", c.numRounds);
  posInt("datapointLength", c.datapointLength);
  posInt("contextLength", c.contextLength);
  if (c.contextLength >= c.datapointLength) {
    fail("contextLength", `smaller than datapointLength (${c.datapointLength})`, c.contextLength);
  }
  nonNegInt("maxDatapointsPerRound", c.maxDatapointsPerRound);
  posInt("batchSize", c.batchSize);
  nonNegInt("nSftEpochs", c.nSftEpochs);
  nonNegInt("nPoEpochs", c.nPoEpochs);
  posInt("architecture.nLayer", c.architecture.nLayer);
  posInt("architecture.nHead", c.architecture.nHead);
  posInt("architecture.nEmbd", c.architecture.nEmbd);
  if (c.architecture.nEmbd % c.architecture.nHead !== 0) {
    fail("architecture.nEmbd", `divisible by nHead (${c.architecture.nHead})`, c.architecture.nEmbd);
  }
  posInt("architecture.nPositions", c.architecture.nPositions);
  const seqLen = 1 + c.contextLength + c.student.maxTokens + 1;
  if (!c.initModel && seqLen - 1 > c.architecture.nPositions) {
    fail(
      "architecture.nPositions",
      `at least ${seqLen - 1} (1 + context + maxTokens)`,
      c.architecture.nPositions,
    );
  }
  posInt("student.maxTokens", c.student.maxTokens);
  if (
    !Number.isInteger(c.student.minTokens) || c.student.minTokens < 0 ||
    c.student.minTokens > c.student.maxTokens
  ) {
    fail(
      "student.minTokens",
      `an integer in [0, student.maxTokens=${c.student.maxTokens}]`,
      c.student.minTokens,
    );
  }
  if (!(c.student.temperature >= 0)) fail("student.temperature", ">= 0", c.student.temperature);
  if (!(c.student.topP > 0 && c.student.topP <= 1)) fail("student.topP", "in (0, 1]", c.student.topP);
  nonNegInt("student.topK", c.student.topK);
  posInt("student.batchSize", c.student.batchSize);
  if (!(c.lr > 0)) fail("lr", "> 0", c.lr);
  if (c.schedule !== "cosine" && c.schedule !== "constant") {
    fail("schedule", `"cosine" or "constant"`, c.schedule);
  }
  nonNegInt("warmupSteps", c.warmupSteps);
  posInt("totalSteps", c.totalSteps);
  if (!(c.weightDecay >= 0)) fail("weightDecay", ">= 0", c.weightDecay);
  if (!(c.beta1 >= 0 && c.beta1 < 1)) fail("beta1", "in [0, 1)", c.beta1);
  if (!(c.beta2 >= 0 && c.beta2 < 1)) fail("beta2", "in [0, 1)", c.beta2);
  if (!(c.eps > 0)) fail("eps", "> 0", c.eps);
  if (!(c.clipNorm >= 0)) fail("clipNorm", ">= 0 (0 disables clipping)", c.clipNorm);
  if (!(c.simpoBeta > 0)) fail("simpoBeta", "> 0", c.simpoBeta);
  if (!(c.simpoGammaRatio >= 0)) fail("simpoGammaRatio", ">= 0", c.simpoGammaRatio);
  if (!(c.lmWeight >= 0)) fail("lmWeight", ">= 0", c.lmWeight);
  if (c.precision !== "f32" && c.precision !== "f16") fail("precision", `"f32" or "f16"`, c.precision);
  if (typeof c.halfSums !== "boolean") fail("halfSums", "true or false", c.halfSums);
  checkHalfSums(c.precision, c.halfSums, where, { precision: `"precision"`, halfSums: `"halfSums": true` });
  if (!(c.lossScale.initScale > 0 && Number.isFinite(c.lossScale.initScale))) {
    fail("lossScale.initScale", "a positive number", c.lossScale.initScale);
  }
  posInt("lossScale.growthInterval", c.lossScale.growthInterval);
  if (c.corpusJoin !== "baseline" && c.corpusJoin !== "raw") {
    fail("corpusJoin", `"baseline" or "raw"`, c.corpusJoin);
  }
  for (const k of ["embdPdrop", "attnPdrop", "residPdrop"] as const) {
    const v = c.dropout[k];
    if (!(v >= 0 && v < 1)) fail(`dropout.${k}`, "a rate in [0, 1)", v);
  }
  if (c.corpus.kind === "embedded") posInt("corpus.words", c.corpus.words);
  else if (c.corpus.kind === "dir") {
    if (typeof c.corpus.path !== "string" || !c.corpus.path) {
      fail("corpus.path", "a directory", c.corpus.path);
    }
  } else fail("corpus.kind", `"embedded" or "dir"`, (c.corpus as { kind: unknown }).kind);
  if (c.teacher.kind !== "corpus" && c.teacher.kind !== "openai") {
    fail("teacher.kind", `"corpus" or "openai"`, c.teacher.kind);
  }
  if (c.teacher.kind === "openai") {
    if (c.teacher.urls.length === 0) fail("teacher.urls", "at least one URL (--teacher-url)", c.teacher.urls);
    for (const u of c.teacher.urls) {
      try {
        new URL(u);
      } catch {
        fail("teacher.urls", "valid http(s) URLs", u);
      }
    }
    if (c.teacher.mode !== "chat" && c.teacher.mode !== "completion") {
      fail("teacher.mode", `"chat" or "completion"`, c.teacher.mode);
    }
    if (c.teacher.mode === "completion") {
      try {
        resolveChatTemplate(c.teacher.chatTemplate, c.teacher.model, "teacher.chatTemplate");
      } catch (e) {
        throw new Error(`${where}: ${(e as Error).message}`);
      }
    }
  }
  posInt("teacher.timeoutMs", c.teacher.timeoutMs);
  posInt("teacher.maxInFlightPerServer", c.teacher.maxInFlightPerServer);
  posInt("teacher.maxAttempts", c.teacher.maxAttempts);
  posInt("vocabSize", c.vocabSize);
  for (const [i, pair] of c.checkpointWords.entries()) {
    if (!Array.isArray(pair) || pair.length !== 2 || !(pair[0] > 0) || !(pair[1] > 0)) {
      fail(`checkpointWords[${i}]`, "a pair [upToWords, everyWords] of positive numbers", pair);
    }
  }
  try {
    parseWordMeasure(c.wordMeasure, '"wordMeasure"');
    validateBudget({
      wordBudget: c.wordBudget,
      budgetCounts: c.budgetCounts as BudgetCount[],
      maxEpochs: c.maxEpochs,
    });
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`);
  }
  return c;
}
