/**
 * The interaction rounds, as the baseline runs them. For each round r:
 *
 *   1. data     take round r's chunk of every source; datapoints of `datapointLength` tokens, the first
 *               `contextLength` of each is a context (the rest is the corpus continuation)
 *   2. student  the student samples a continuation of every context on the GPU
 *   3. teacher  the teacher corrects every continuation (answers stored as they arrive)
 *   4. sft      `nSftEpochs` epochs of LM loss on the winning sequences [BOS] + context + teacher + [EOS]
 *   5. po       `nPoEpochs` epochs of SimPO(winning, losing) + lambda * LM(winning)
 *
 * with checkpoints by words seen and at the end of every phase, and the full training state saved so a
 * killed run resumes to the same weights. Everything random is a pure function of (seed, round, phase,
 * epoch, sequence), so resuming replays exactly. Words are counted per round (budget.ts): before a round
 * starts and again before it trains, a round that would pass `wordBudget` or `maxEpochs` stops the run
 * (resumable), and every round ends with a budget summary in `budget.jsonl`.
 *
 * Runs in Deno and in the browser: files go through {@link RunStorage}.
 * @module
 */
import type { Gpu } from "../shaders/gpu.ts";
import { GPT2, initWeights } from "../model/gpt2.ts";
import { type Batch, type StepMetrics, Trainer } from "../model/trainer.ts";
import { generate } from "../model/generate.ts";
import type { GPT2Config } from "../model/config.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { type JsonLine, parseJsonLines } from "../model/jsonl.ts";
import { parseSafetensors, serializeSafetensors } from "../model/safetensors.ts";
import { type Corpus, type Datapoint } from "./corpus.ts";
import { countWords, parseWordMeasure, type WordMeasure } from "./words.ts";
import {
  addTally,
  type BudgetCount,
  budgetProblem,
  type BudgetRules,
  BudgetStop,
  type BudgetSummary,
  budgetSummary,
  corpusTally,
  roundTally,
  type WordTally,
  zeroTally,
} from "./budget.ts";
import { deriveSeed } from "../model/random.ts";
import { adamwOf, changedConfigKeys, RESUME_MAY_CHANGE, scheduleOf, type TrainConfig } from "./config.ts";
import type { Teacher } from "./teacher.ts";
import type { ScalerState } from "../model/scaler.ts";
import { epochOrder, scheduledStep } from "./step.ts";
import {
  buildLmBatch,
  buildPreferenceBatch,
  type PreferenceItem,
  type SpecialIds,
  winningTokens,
} from "./sequences.ts";

/** One student/teacher exchange, as stored in `interactions/round_N.jsonl`. */
export interface InteractionRecord {
  round: number;
  index: number;
  source: string;
  context: string;
  student: string;
  teacher: string;
  contextTokens: number[];
  studentTokens: number[];
  teacherTokens: number[];
  studentFinish: "length" | "stop";
}

/**
 * One pair's SimPO rewards at the step that trained on it in the last SimPO epoch of its round, as stored
 * in `interactions/round_N.rewards.jsonl`: r = beta * (mean log-prob of the completion), as the loss
 * computed them (f32), for the winning (teacher) and the losing (student) sequence.
 */
export interface PairRewardRecord {
  round: number;
  /** The datapoint (as in `round_N.jsonl`). */
  index: number;
  chosen: number;
  rejected: number;
  /** chosen - rejected (without gamma). */
  margin: number;
  /** Where the step was: the epoch, its batch and the optimizer steps taken with it. */
  epoch: number;
  batch: number;
  step: number;
}

/** One optimisation step, as stored in `metrics.jsonl`. */
export interface MetricsRecord {
  phase: "sft" | "po";
  round: number;
  epoch: number;
  step: number;
  lmLoss: number;
  simpoLoss?: number;
  chosenReward?: number;
  rejectedReward?: number;
  margin?: number;
  winRate?: number;
  lr: number;
  gradNorm: number;
  /** Precision f16: the step's loss scale, and the steps skipped for overflowed gradients so far. */
  lossScale?: number;
  skippedSteps?: number;
  wordsSeen: number;
  /** The round's word counts (budget.ts) and the run's totals with it. */
  words?: { round: WordTally; total: WordTally };
  tokensPerSec: number;
  time: string;
}

/** Progress callbacks (the CLI draws bars from them; the demo streams them to the page). */
export interface LoopEvents {
  onRound?(round: number, numRounds: number): void;
  onPhase?(phase: Phase, round: number, done: number, total: number): void;
  onInteraction?(r: InteractionRecord): void;
  onMetrics?(m: MetricsRecord): void;
  onCheckpoint?(name: string, wordsSeen: number): void;
  onLog?(line: string): void;
}

/** The files of a run directory. Paths are relative to the run directory, with `/` separators. */
export interface RunStorage {
  readText(path: string): Promise<string | undefined>;
  /** Replace a file atomically. */
  writeText(path: string, text: string): Promise<void>;
  appendText(path: string, text: string): Promise<void>;
  /** Write a Hugging Face GPT-2 directory (plus extra files) atomically at `path`. */
  saveModel(
    path: string,
    config: GPT2Config,
    weights: Map<string, Float32Array>,
    extra: Record<string, string | Uint8Array>,
  ): Promise<void>;
  /** Read a file of a saved model directory. */
  readBytes(path: string): Promise<Uint8Array | undefined>;
}

/** The phases of a round, in order. */
export type Phase = "student" | "teacher" | "sft" | "po";
const PHASES: Phase[] = ["student", "teacher", "sft", "po"];

/** Where a run stands; saved as `state/state.json` with the weights and optimizer moments. */
export interface RunState {
  version: 1;
  /** The next work: round, phase, epoch and batch within the phase. */
  round: number;
  phase: Phase;
  epoch: number;
  batch: number;
  /** Optimizer steps taken. */
  step: number;
  wordsSeen: number;
  /** Index into the word-checkpoint schedule of the next checkpoint. */
  nextCheckpoint: number;
  done: boolean;
  /**
   * The config the run trains with, less `outDir` (the folder may move); a resume compares the run's
   * config.json with it (see {@link checkResumeConfig}). Absent in states saved before it was recorded.
   */
  config?: Omit<TrainConfig, "outDir">;
  /** Word counts of the finished rounds (budget.ts); absent in states written before they were kept. */
  words?: WordTally;
  /** Precision f16: the loss scaler's state (model/scaler.ts), so a resume continues with its scale. */
  scaler?: ScalerState;
}

/** What a run needs besides its config: the tokenizer, the tokenized corpus and the teacher. */
export interface RunInputs {
  tokenizer: Tokenizer;
  corpus: Corpus;
  teacher: Teacher;
  /** Architecture of the student (from `initModel` or `architecture` + the tokenizer's vocabulary). */
  modelConfig: GPT2Config;
  /** Initial weights (from `initModel`); absent: a seeded initialisation. */
  initWeights?: Map<string, Float32Array>;
}

/** Options of {@link runInteraction}. */
export interface RunOptions {
  gpu: Gpu;
  storage: RunStorage;
  events?: LoopEvents;
  signal?: AbortSignal;
  /**
   * Awaited before every optimisation step and every student sampling batch: resolves when the run may
   * go on (the demo's pause button; it may throw to stop the run there).
   */
  pause?: () => Promise<void>;
}

/** Word counts at which to checkpoint, from `[[upTo, every], ...]`, ascending. */
export function checkpointSchedule(spec: Array<[number, number]>): number[] {
  const out: number[] = [];
  let from = 0;
  for (const [upTo, every] of spec) {
    for (let w = Math.ceil((from + 1) / every) * every; w <= upTo; w += every) out.push(w);
    from = Math.max(from, upTo);
  }
  return [...new Set(out)].sort((a, b) => a - b);
}

/**
 * The word checkpoints a step crosses: from schedule index `next` while `schedule[i] <= wordsSeen`.
 * Returns the new index and the largest threshold crossed (the checkpoint's name: the weights have seen at
 * least that many words), or undefined when none is crossed.
 */
export function crossedCheckpoint(
  schedule: readonly number[],
  next: number,
  wordsSeen: number,
): { next: number; words?: number } {
  let words: number | undefined;
  while (next < schedule.length && wordsSeen >= schedule[next]) words = schedule[next++];
  return { next, words };
}

/** A round's training data: the pairs, the words of each sequence, and the padded length of every row. */
export interface RoundData {
  items: PreferenceItem[];
  /** Words of each winning sequence (context + teacher text) and of each losing one (context + student). */
  winWords: number[];
  loseWords: number[];
  /** Positions per row (inputs = tokens[:-1]), the same for every step so GPU plans are reused. */
  T: number;
}

/**
 * The training data of a round's interactions. `minT` (1 + context + the most new tokens) fixes the row
 * length for the whole run, so every round reuses the same workspace; rows longer than it widen it.
 */
export function roundData(
  records: readonly InteractionRecord[],
  minT = 0,
  measure?: WordMeasure,
): RoundData {
  const items = records.map((rec) => ({
    context: rec.contextTokens,
    teacher: rec.teacherTokens,
    student: rec.studentTokens,
  }));
  // The longest row is [BOS] + context + student + [EOS]: 1 + context + student positions.
  const longest = records.reduce(
    (m, rec) => Math.max(m, 1 + rec.contextTokens.length + rec.studentTokens.length),
    0,
  );
  return {
    items,
    winWords: records.map((rec) => sequenceWords(rec.context, rec.teacher, measure)),
    loseWords: records.map((rec) => sequenceWords(rec.context, rec.student, measure)),
    T: Math.max(minT, longest),
  };
}

/** Words of a training sequence, whole (English-equivalent ones rounded): wordsSeen stays an integer. */
function sequenceWords(context: string, completion: string, measure?: WordMeasure): number {
  return Math.round(countWords(context, measure) + countWords(completion, measure));
}

/** One optimisation step's batch and the words it trains on. */
export interface StepBatch {
  batch: Batch;
  words: number;
}

/**
 * The batch of one step over the pairs `idx` of `data`.
 *
 * - `sft`: the winning sequences of `idx`, padded to `batchSize` rows with all-padding rows
 *   ([pad, pad]: every position masked), so a short last batch keeps the workspace's shape and its LM loss
 *   -(sum of masked log-probs) / (masked positions) is the same as without the padding rows.
 * - `po`: `idx.length` winning rows then the same pairs' losing rows (pair i is rows i and P + i) with
 *   the completion mask; a short last batch stays short (padding pairs would change SimPO's mean).
 *
 * Words: the winning sequences' words (sft), winning plus losing (po).
 */
export function stepBatch(
  phase: "sft" | "po",
  data: RoundData,
  idx: readonly number[],
  ids: SpecialIds,
  batchSize: number,
): StepBatch {
  const pad = ids.pad ?? ids.eos;
  if (phase === "sft") {
    const rows = idx.map((i) => winningTokens(data.items[i], ids));
    while (rows.length < batchSize) rows.push([pad, pad]);
    return {
      batch: buildLmBatch(rows, ids, { T: data.T }),
      words: idx.reduce((a, i) => a + data.winWords[i], 0),
    };
  }
  return {
    batch: buildPreferenceBatch(idx.map((i) => data.items[i]), ids, { T: data.T }),
    words: idx.reduce((a, i) => a + data.winWords[i] + data.loseWords[i], 0),
  };
}

/** `checkpoint_10M`, `checkpoint_2.5M`, `checkpoint_20K`. */
export function checkpointName(words: number): string {
  const fmt = (v: number) => String(Number(v.toPrecision(6)));
  return words >= 1e6 ? `checkpoint_${fmt(words / 1e6)}M` : `checkpoint_${fmt(words / 1e3)}K`;
}

/** Run (or resume) the interaction rounds of `config` with `inputs`. */
export async function runInteraction(
  config: TrainConfig,
  inputs: RunInputs,
  opts: RunOptions,
): Promise<RunState> {
  const { gpu, storage, events = {}, signal } = opts;
  const { tokenizer, corpus, teacher, modelConfig } = inputs;
  const log = (line: string) => events.onLog?.(line);
  const checkpoints = checkpointSchedule(config.checkpointWords);

  // Model, optimizer and where to start.
  const model = GPT2.create(gpu, modelConfig, inputs.initWeights ?? initWeights(modelConfig, config.seed))
    .usePrecision(config.precision, { halfSums: config.halfSums });
  // Train mode: the LM and SimPO steps drop at the config's rates; the student turn samples without.
  const trainer = new Trainer(model, adamwOf(config), {
    dropout: { seed: config.seed, rates: config.dropout },
    scaler: config.lossScale,
  });
  let state: RunState = {
    version: 1,
    round: 0,
    phase: "student",
    epoch: 0,
    batch: 0,
    step: 0,
    wordsSeen: 0,
    nextCheckpoint: 0,
    done: false,
    words: zeroTally(),
  };
  const measure = parseWordMeasure(config.wordMeasure);
  const rules: BudgetRules = {
    wordBudget: config.wordBudget,
    budgetCounts: config.budgetCounts as BudgetCount[],
    maxEpochs: config.maxEpochs,
  };
  const passes = { sft: config.nSftEpochs, po: config.nPoEpochs };
  const saved = await checkResume(storage, config);
  if (saved !== undefined) {
    state = saved;
    if (state.words === undefined) {
      log("note: state/state.json has no word counts (an older run): counting from this round on");
      state.words = zeroTally();
    }
    if (state.done) {
      log(`the run is complete (${state.step} steps, ${state.wordsSeen} words seen): nothing to resume`);
      return state;
    }
    // Everything the resume reads is checked before it writes anything: a bad file stops it unchanged.
    await checkRunFiles(storage, config, corpus, state.round);
    await restoreState(storage, model, trainer, state);
    // Steps after the saved state will be replayed: drop their metrics lines (and a line cut by a kill).
    // A skipped f16 step keeps the step count, so steps taken plus skipped orders the lines.
    const metrics = await readLog<MetricsRecord>(storage, "metrics.jsonl");
    const attempts = (step: number, skipped?: number) => step + (skipped ?? 0);
    const kept = metrics.filter((m) =>
      attempts(m.value.step, m.value.skippedSteps) <= attempts(state.step, state.scaler?.skipped)
    );
    if (kept.length !== metrics.length) {
      await storage.writeText("metrics.jsonl", kept.map((m) => m.text + "\n").join(""));
    }
    // Rounds after the saved state end again: drop their summaries.
    const summaries = await readLog<BudgetSummary>(storage, "budget.jsonl");
    const done = summaries.filter((b) => b.value.round < state.round);
    if (done.length !== summaries.length) {
      await storage.writeText("budget.jsonl", done.map((b) => b.text + "\n").join(""));
    }
    const at = `round ${state.round + 1}, phase ${state.phase}, epoch ${state.epoch}, batch ${state.batch}`;
    const redo = metrics.length - kept.length;
    log(`resumed at ${at}, step ${state.step} (${redo} logged steps after it will be redone)`);
  } else {
    // A fresh start: steps logged by an earlier start that never saved a state are redone.
    await checkRunFiles(storage, config, corpus, 0);
    await recordStartConfig(storage, config);
    const metrics = await readLog<MetricsRecord>(storage, "metrics.jsonl");
    if (metrics.length > 0) await storage.writeText("metrics.jsonl", "");
    if (await storage.readText("budget.jsonl")) await storage.writeText("budget.jsonl", "");
  }
  await keepRewardsBefore(storage, config.numRounds, state);
  const totalWords = () => state.words ?? zeroTally();
  /** Stop before round `r` trains, when it would pass a limit: nothing of it is trained on or saved. */
  const checkBudget = (r: number, round: WordTally, what: "projected" | "exact") => {
    const problem = budgetProblem(rules, r, totalWords(), round, passes, what);
    if (problem !== undefined) {
      throw new BudgetStop(
        `${problem}. The run stopped before training round ${r + 1} and can be resumed: raise the limit ` +
          `(wordBudget, budgetCounts or maxEpochs) in the run's config.json, then --resume it`,
      );
    }
  };

  const tokenizerJson = tokenizer.toJSON();
  const saveState = async () => {
    const weights = await model.getWeights();
    const { m, v } = await trainer.getState();
    const tensor = (name: string, d: Float32Array) =>
      [name, { shape: [d.length], data: d }] as [string, { shape: number[]; data: Float32Array }];
    const optim = serializeSafetensors([
      ...[...m].map(([k, d]) => tensor(`m.${k}`, d)),
      ...[...v].map(([k, d]) => tensor(`v.${k}`, d)),
    ]);
    await storage.saveModel("state", modelConfig, weights, {
      "tokenizer.json": tokenizerJson,
      "optimizer.safetensors": optim,
      "state.json": JSON.stringify(
        { ...state, scaler: trainer.scaler?.getState(), config: recorded(config) },
        null,
        2,
      ) + "\n",
    });
  };
  /** A checkpoint of the current weights; `at` says what training it follows. */
  const saveCheckpoint = async (name: string, at: { round: number; phase: Phase; epoch: number }) => {
    const weights = await model.getWeights();
    // Rounds are 0-based here as in state.json, metrics.jsonl and interactions/ (names are 1-based).
    const info = { name, wordsSeen: state.wordsSeen, step: state.step, ...at };
    await storage.saveModel(`checkpoints/${name}`, modelConfig, weights, {
      "tokenizer.json": tokenizerJson,
      "training_state.json": JSON.stringify(info, null, 2) + "\n",
    });
    events.onCheckpoint?.(name, state.wordsSeen);
    log(`checkpoint ${name} at ${state.wordsSeen} words`);
  };
  const ids: SpecialIds = { bos: tokenizer.bosId, eos: tokenizer.eosId, pad: tokenizer.padId };
  const minT = 1 + config.contextLength + config.student.maxTokens;
  const schedule = scheduleOf(config);

  for (; state.round < config.numRounds; state.round++) {
    const r = state.round;
    events.onRound?.(r, config.numRounds);
    const points = corpus.roundDatapoints(r, { max: config.maxDatapointsPerRound });
    if (points.length === 0) {
      throw new Error(
        `round ${r + 1}: the corpus gives no datapoints (sources shorter than datapointLength?)`,
      );
    }
    log(`round ${r + 1}/${config.numRounds}: ${points.length} datapoints`);
    // The round's corpus words are known now; its student and teacher words are projected as the
    // continuations' (both continue the same contexts to about the same length).
    const corpusWords = corpusTally(points, (ids) => tokenizer.decode(ids), measure);
    const untrained = state.phase === "student" || state.phase === "teacher";
    if (untrained) {
      const c = corpusWords.corpusContinuation;
      checkBudget(r, { ...zeroTally(), ...corpusWords, student: c, teacher: c }, "projected");
    }

    // Student and teacher turns (resumable from their files), then the training sequences.
    const records = await interactions(config, r, points, {
      model,
      tokenizer,
      teacher,
      storage,
      events,
      signal,
      pause: opts.pause,
    });
    const data = roundData(records, minT, measure);
    const roundWords = roundTally(
      corpusWords,
      records,
      { win: data.winWords, lose: data.loseWords },
      passes,
      measure,
    );
    if (untrained) checkBudget(r, roundWords, "exact");
    if (state.phase === "student" || state.phase === "teacher") {
      state.phase = "sft";
      state.epoch = 0;
      state.batch = 0;
    }

    // Training phases.
    const B = config.batchSize;
    const n = data.items.length;
    const nBatches = Math.ceil(n / B);
    for (const phase of ["sft", "po"] as const) {
      if (PHASES.indexOf(state.phase) > PHASES.indexOf(phase)) continue;
      const epochs = phase === "sft" ? config.nSftEpochs : config.nPoEpochs;
      events.onPhase?.(
        phase,
        r,
        Math.min(state.epoch * nBatches + state.batch, epochs * nBatches),
        epochs * nBatches,
      );
      for (; state.epoch < epochs; state.epoch++, state.batch = 0) {
        const order = epochOrder(config.seed, n, r, phase, state.epoch);
        for (; state.batch < nBatches; state.batch++) {
          if (signal?.aborted) throw new DOMException("training stopped", "AbortError");
          await opts.pause?.();
          const idx = order.slice(state.batch * B, (state.batch + 1) * B);
          const { batch, words } = stepBatch(phase, data, idx, ids, B);
          const beta = config.simpoBeta;
          const { metrics: m, lr, tokensPerSec } = await scheduledStep(
            trainer,
            schedule,
            batch,
            phase === "sft"
              ? { kind: "lm" }
              : { kind: "simpo", beta, gamma: beta * config.simpoGammaRatio, lmWeight: config.lmWeight },
            `round ${r + 1} ${phase} epoch ${state.epoch} batch ${state.batch}`,
          );
          state.step = trainer.step;
          state.wordsSeen += words;
          const rec: MetricsRecord = {
            phase,
            round: r,
            epoch: state.epoch,
            step: state.step,
            lmLoss: m.lmLoss,
            ...(phase === "po"
              ? {
                simpoLoss: m.simpoLoss,
                chosenReward: m.chosenReward,
                rejectedReward: m.rejectedReward,
                margin: m.margin,
                winRate: m.winRate,
              }
              : {}),
            lr,
            gradNorm: m.gradNorm,
            ...(trainer.scaler ? { lossScale: m.lossScale, skippedSteps: trainer.scaler.skipped } : {}),
            wordsSeen: state.wordsSeen,
            words: { round: roundWords, total: addTally(totalWords(), roundWords) },
            tokensPerSec,
            time: new Date().toISOString(),
          };
          await storage.appendText("metrics.jsonl", JSON.stringify(rec) + "\n");
          events.onMetrics?.(rec);
          // Each pair's rewards as the round's last SimPO epoch left them, for sorting pairs by them.
          if (phase === "po" && state.epoch === epochs - 1) {
            const at = { epoch: state.epoch, batch: state.batch, step: state.step };
            const lines = pairRewards(r, idx, m, at).map((l) => JSON.stringify(l) + "\n");
            await storage.appendText(roundFile(r, "rewards"), lines.join(""));
          }
          events.onPhase?.(phase, r, state.epoch * nBatches + state.batch + 1, epochs * nBatches);
          // Word checkpoints; the state saved with them points at the next batch.
          const crossed = crossedCheckpoint(checkpoints, state.nextCheckpoint, state.wordsSeen);
          if (crossed.words !== undefined) {
            state.nextCheckpoint = crossed.next;
            const at = { round: r, phase, epoch: state.epoch };
            state.batch++;
            await saveCheckpoint(checkpointName(crossed.words), at);
            await saveState();
            state.batch--;
          }
        }
      }
      // End of the phase: a checkpoint, and the state pointing at the next phase.
      const at = { round: r, phase, epoch: Math.max(0, epochs - 1) };
      state.phase = phase === "sft" ? "po" : "student";
      state.epoch = 0;
      state.batch = 0;
      if (phase === "po") {
        state.round++;
        state.done = state.round >= config.numRounds;
        state.words = addTally(totalWords(), roundWords);
      }
      await saveCheckpoint(`round${r + 1}_${phase}`, at);
      await saveState();
      if (phase === "po") {
        state.round--;
        const summary = budgetSummary(rules, r, state.step, roundWords, totalWords(), passes.sft + passes.po);
        await storage.appendText("budget.jsonl", JSON.stringify(summary.record) + "\n");
        log(summary.text);
      }
    }
  }
  state.done = true;
  return state;
}

/**
 * Parse `state/state.json`, checking the fields resume relies on. An empty or damaged file is refused,
 * never taken for a missing one: that would train the run over from step 0.
 */
export function parseRunState(text: string): RunState {
  const damaged = "the saved state is damaged, so the run cannot continue from it; restore the file " +
    "(the weights of the last checkpoints are in checkpoints/) or start a new run";
  let s: RunState;
  try {
    s = JSON.parse(text) as RunState;
  } catch (e) {
    throw new Error(
      `state/state.json: ${text.trim() === "" ? "empty" : `not valid JSON (${(e as Error).message})`}: ` +
        damaged,
    );
  }
  const ints = ["round", "epoch", "batch", "step", "wordsSeen", "nextCheckpoint"] as const;
  const bad = ints.find((k) => !Number.isInteger(s?.[k]) || s[k] < 0);
  if (s?.version !== 1 || bad !== undefined || !PHASES.includes(s.phase) || typeof s.done !== "boolean") {
    throw new Error(
      `state/state.json: expected version 1 with round, epoch, batch, step, wordsSeen, nextCheckpoint ` +
        `(integers >= 0), phase (${PHASES.join("/")}) and done; found ${text.slice(0, 200)}: ${damaged}`,
    );
  }
  if (s.config !== undefined && (s.config === null || typeof s.config !== "object")) {
    throw new Error(`state/state.json: "config" must be the run's config, found ${JSON.stringify(s.config)}`);
  }
  return s;
}

/**
 * The config a run started with, less `outDir`, as `start_config.json` records it: the comparison a resume
 * makes before the first saved state records the config (round 1's turns are made under it already).
 */
const START_CONFIG = "start_config.json";

/** A config as the run records it: without `outDir` (the folder may move), as JSON holds it. */
function recorded(config: TrainConfig): Omit<TrainConfig, "outDir"> {
  return JSON.parse(JSON.stringify({ ...config, outDir: undefined }));
}

/**
 * Write `start_config.json` unless the run has one: the host calls this right after writing a new run's
 * config.json, and the loop again before its first round (for hosts that do not), so from then on every
 * start of the run is compared with it.
 */
export async function recordStartConfig(storage: RunStorage, config: TrainConfig): Promise<void> {
  if (await storage.readText(START_CONFIG) !== undefined) return;
  await storage.writeText(START_CONFIG, JSON.stringify(recorded(config), null, 2) + "\n");
}

/**
 * Check, reading only, that the run in `storage` may continue with `config`: its saved state, if any, is
 * valid (an empty state file is a damaged state, not a missing one) and config.json changed no key since
 * the run started but {@link RESUME_MAY_CHANGE} ({@link checkResumeConfig}). The config compared with is the
 * saved state's, else `start_config.json`'s; a run that recorded neither (older runs) is not checked.
 * Returns the saved state, or undefined when the run has none yet.
 */
export async function checkResume(storage: RunStorage, config: TrainConfig): Promise<RunState | undefined> {
  const saved = await storage.readText("state/state.json");
  const state = saved === undefined ? undefined : parseRunState(saved);
  let started: unknown = state?.config;
  if (started === undefined) {
    const text = await storage.readText(START_CONFIG);
    if (text !== undefined) {
      try {
        started = JSON.parse(text);
      } catch (e) {
        throw new Error(
          `${START_CONFIG}: not valid JSON (${(e as Error).message}): it records the config the run ` +
            `started with; restore it, or delete it to resume without comparing config.json`,
        );
      }
    }
  }
  if (started !== undefined) checkResumeConfig(started, config);
  return state;
}

/**
 * Refuse to continue a run that started with `started` (a recorded config, without `outDir`) with `config`
 * when config.json changed since, naming the changed keys; only {@link RESUME_MAY_CHANGE} may.
 */
export function checkResumeConfig(started: unknown, config: TrainConfig): void {
  const now = recorded(config);
  const allowed = (k: string) => RESUME_MAY_CHANGE.some((m) => k === m || k.startsWith(m + "."));
  const changed = changedConfigKeys(started, now).filter((k) => !allowed(k));
  if (changed.length === 0) return;
  const at = (c: unknown, key: string) =>
    JSON.stringify(key.split(".").reduce((v, k) => (v as Record<string, unknown> | undefined)?.[k], c));
  throw new Error(
    `config.json was changed since the run started: ${
      changed.map((k) => `${k} ${at(started, k)} -> ${at(now, k)}`).join(", ")
    }. A resumed run trains as it began: put the values back, or start a new run (only ${
      RESUME_MAY_CHANGE.join(", ")
    } may change)`,
  );
}

/**
 * Check, reading only, the files a start at round `from` will read: metrics.jsonl and, for every round
 * from `from` on, its complete interactions or the student and teacher turns stored so far.
 */
async function checkRunFiles(
  storage: RunStorage,
  config: TrainConfig,
  corpus: Corpus,
  from: number,
): Promise<void> {
  logLines(await storage.readText("metrics.jsonl"), "metrics.jsonl");
  for (let r = from; r < config.numRounds; r++) {
    const [done, student, teacher] = await Promise.all(
      [roundFile(r), roundFile(r, "student"), roundFile(r, "teacher")].map((p) => storage.readText(p)),
    );
    const rewards = roundFile(r, "rewards");
    rewardLines(logLines<PairRewardRecord>(await storage.readText(rewards), rewards).lines, r);
    if (done === undefined && student === undefined && teacher === undefined) continue;
    const n = corpus.roundDatapoints(r, { max: config.maxDatapointsPerRound }).length;
    if (done !== undefined) roundRecords(done, r, n);
    else {
      studentTurn(logLines<StudentLine>(student, roundFile(r, "student")).lines, r, n);
      teacherAnswers(logLines<TeacherLine>(teacher, roundFile(r, "teacher")).lines, r, n);
    }
  }
}

/** `interactions/round_N.jsonl`, or the file of one turn of it. */
function roundFile(round: number, turn?: "student" | "teacher" | "rewards"): string {
  return `interactions/round_${round}${turn ? `.${turn}` : ""}.jsonl`;
}

/** A complete round's records, checked: one per datapoint of the round's `n`. */
function roundRecords(text: string, round: number, n: number): InteractionRecord[] {
  const path = roundFile(round);
  const records = parseJsonLines<InteractionRecord>(text, path).map((l) => l.value);
  if (records.length !== n) {
    throw new Error(`${path}: expected ${n} interactions (one per datapoint), found ${records.length}`);
  }
  return records;
}

/** A student turn stored so far, checked: at most `n` continuations, each a token list. */
function studentTurn(lines: JsonLine<StudentLine>[], round: number, n: number): StudentLine[] {
  const path = roundFile(round, "student");
  if (lines.length > n) throw new Error(`${path}: ${lines.length} continuations for ${n} datapoints`);
  const bad = lines.find((l) => !Array.isArray(l.value?.tokens) || !l.value.tokens.every(Number.isInteger));
  if (bad) throw new Error(`${path}:${bad.line}: expected {"tokens": [integers], "finish": ...}`);
  return lines.map((l) => l.value);
}

/** The teacher answers stored so far, checked, by datapoint index (in [0, n)). */
function teacherAnswers(lines: JsonLine<TeacherLine>[], round: number, n: number): Map<number, string> {
  const answers = new Map<number, string>();
  for (const { line, value } of lines) {
    const i = value?.index;
    if (!Number.isInteger(i) || i < 0 || i >= n || typeof value.text !== "string") {
      throw new Error(
        `${roundFile(round, "teacher")}:${line}: expected {"index": datapoint in [0, ${n}), "text": string}`,
      );
    }
    answers.set(i, value.text);
  }
  return answers;
}

/** Pair rewards stored so far, checked: datapoint and step position integers, rewards numbers. */
function rewardLines(lines: JsonLine<PairRewardRecord>[], round: number): void {
  const bad = lines.find(({ value: v }) =>
    !(["index", "epoch", "batch", "step"] as const).every((k) => Number.isInteger(v?.[k])) ||
    !(["chosen", "rejected", "margin"] as const).every((k) => typeof v[k] === "number")
  );
  if (bad) {
    throw new Error(
      `${roundFile(round, "rewards")}:${bad.line}: expected {"index", "epoch", "batch", "step": integers, ` +
        `"chosen", "rejected", "margin": numbers}`,
    );
  }
}

/** The rewards lines of one SimPO step of round `round`: the batch's pair k is datapoint `idx[k]`. */
function pairRewards(
  round: number,
  idx: readonly number[],
  m: StepMetrics,
  at: { epoch: number; batch: number; step: number },
): PairRewardRecord[] {
  const { chosenRewards: chosen, rejectedRewards: rejected } = m;
  if (chosen?.length !== idx.length || rejected?.length !== idx.length) {
    throw new Error(`round ${round + 1} po batch ${at.batch}: the step returned no reward for every pair`);
  }
  return idx.map((index, k) => ({
    round,
    index,
    chosen: chosen[k],
    rejected: rejected[k],
    margin: chosen[k] - rejected[k],
    ...at,
  }));
}

/**
 * Keep in the rewards file of every round from the saved state's on only the lines of steps before that
 * state (on a fresh start: none): the steps after it are trained again and append theirs.
 */
async function keepRewardsBefore(storage: RunStorage, numRounds: number, state: RunState): Promise<void> {
  for (let r = state.round; r < numRounds; r++) {
    const path = roundFile(r, "rewards");
    const lines = await readLog<PairRewardRecord>(storage, path);
    const before = (l: PairRewardRecord) =>
      r === state.round && state.phase === "po" &&
      (l.epoch < state.epoch || (l.epoch === state.epoch && l.batch < state.batch));
    const kept = lines.filter((l) => before(l.value));
    if (kept.length !== lines.length) await storage.writeText(path, kept.map((l) => l.text + "\n").join(""));
  }
}

/** A line of `round_N.student.jsonl` and one of `round_N.teacher.jsonl`. */
interface StudentLine {
  tokens: number[];
  finish: "length" | "stop";
}
interface TeacherLine {
  index: number;
  text: string;
}

/** Load the weights and optimizer moments saved with `state` into the model and trainer. */
async function restoreState(
  storage: RunStorage,
  model: GPT2,
  trainer: Trainer,
  state: RunState,
): Promise<void> {
  const weights = await storage.readBytes("state/model.safetensors");
  const optim = await storage.readBytes("state/optimizer.safetensors");
  if (!weights || !optim) {
    throw new Error(
      "run state is incomplete: state/model.safetensors or state/optimizer.safetensors is missing",
    );
  }
  const w = parseSafetensors(weights, "state/model.safetensors").tensors;
  model.setWeights(
    new Map([...w].map(([k, t]) => [k.replace(/^transformer\./, ""), t.data as Float32Array])),
  );
  const o = parseSafetensors(optim, "state/optimizer.safetensors").tensors;
  const pick = (prefix: string) =>
    new Map(
      [...o].filter(([k]) => k.startsWith(prefix)).map((
        [k, t],
      ) => [k.slice(prefix.length), t.data as Float32Array]),
    );
  trainer.setState({ step: state.step, m: pick("m."), v: pick("v."), scaler: state.scaler });
}

/**
 * The student's continuations and the teacher's corrections of round `round`, resumable: generated
 * continuations and teacher answers are appended to `interactions/round_N.student.jsonl` and
 * `round_N.teacher.jsonl` as they are made; the complete round is `interactions/round_N.jsonl`.
 */
async function interactions(
  config: TrainConfig,
  round: number,
  points: Datapoint[],
  ctx: {
    model: GPT2;
    tokenizer: Tokenizer;
    teacher: Teacher;
    storage: RunStorage;
    events: LoopEvents;
    signal?: AbortSignal;
    pause?: () => Promise<void>;
  },
): Promise<InteractionRecord[]> {
  const { model, tokenizer, teacher, storage, events, signal } = ctx;
  const roundPath = roundFile(round);
  const done = await storage.readText(roundPath);
  if (done !== undefined) return roundRecords(done, round, points.length);

  // Student turn, in batches, each stored before the next starts. Sequence i's random stream depends on
  // (seed, round, i) only, so continuations stored before a kill are the ones a rerun would make.
  const studentPath = roundFile(round, "student");
  const student = studentTurn(await readLog<StudentLine>(storage, studentPath), round, points.length);
  const s = config.student;
  const seed = deriveSeed(config.seed, "student", round);
  events.onPhase?.("student", round, student.length, points.length);
  for (let at = student.length; at < points.length; at += s.batchSize) {
    if (signal?.aborted) throw new DOMException("training stopped", "AbortError");
    await ctx.pause?.();
    const chunk = points.slice(at, at + s.batchSize);
    const gens = await generate(model, chunk.map((p) => [tokenizer.bosId, ...p.context]), {
      maxTokens: s.maxTokens,
      minTokens: s.minTokens,
      temperature: s.temperature,
      topP: s.topP,
      topK: s.topK,
      seed,
      eosId: tokenizer.eosId,
      batchSize: s.batchSize,
    }, at);
    const lines = gens.map((g) => ({ tokens: g.tokens, finish: g.finishReason }));
    await storage.appendText(studentPath, lines.map((l) => JSON.stringify(l) + "\n").join(""));
    student.push(...lines);
    events.onPhase?.("student", round, student.length, points.length);
  }

  // Teacher turn: ask only for what is not stored yet.
  const teacherPath = roundFile(round, "teacher");
  const answers = teacherAnswers(await readLog<TeacherLine>(storage, teacherPath), round, points.length);
  const contexts = points.map((p) => tokenizer.decode(Array.from(p.context)));
  const studentTexts = student.map((g) => tokenizer.decode(g.tokens));
  const missing = points.map((_, i) => i).filter((i) => !answers.has(i));
  let got = points.length - missing.length;
  events.onPhase?.("teacher", round, got, points.length);
  if (missing.length > 0) {
    // Answers arrive concurrently: their appends are chained so lines never interleave.
    let appends = Promise.resolve();
    const store = (index: number, text: string) => {
      if (typeof text !== "string" || text.trim() === "") {
        throw new Error(
          `teacher (${teacher.name}), round ${round + 1} datapoint ${index}: expected a non-empty text ` +
            `answer, got ${JSON.stringify(text)}`,
        );
      }
      answers.set(index, text);
      appends = appends.then(() => storage.appendText(teacherPath, JSON.stringify({ index, text }) + "\n"));
      return appends;
    };
    const texts = await teacher.correct(
      missing.map((i) => ({
        // Errors name the datapoint, not its place among the answers still missing.
        label: `round ${round + 1} datapoint ${i}`,
        context: contexts[i],
        student: studentTexts[i],
        reference: tokenizer.decode(Array.from(points[i].continuation)),
      })),
      {
        signal,
        onAnswer: async (j: number, text: string) => {
          await store(missing[j], text);
          events.onPhase?.("teacher", round, ++got, points.length);
        },
      },
    );
    // Teachers that do not report answers one by one: store what came back.
    for (const [j, text] of texts.entries()) if (!answers.has(missing[j])) await store(missing[j], text);
    await appends;
  }

  const records: InteractionRecord[] = points.map((p, i) => {
    const studentTokens = student[i].tokens;
    // The teacher's text in the student's tokens, cut to the length of the student's continuation.
    const teacherTokens = tokenizer.encode(answers.get(i)!).slice(0, studentTokens.length);
    return {
      round,
      index: i,
      source: p.source,
      context: contexts[i],
      student: studentTexts[i],
      teacher: tokenizer.decode(teacherTokens),
      contextTokens: Array.from(p.context),
      studentTokens,
      teacherTokens,
      studentFinish: student[i].finish,
    };
  });
  for (const rec of records) events.onInteraction?.(rec);
  await storage.writeText(roundPath, records.map((r) => JSON.stringify(r) + "\n").join(""));
  return records;
}

/**
 * The complete lines of an append-only run file, each with its parsed value. Every append writes whole
 * lines ending in "\n", so text after the last "\n" is an append cut short by a kill: it is dropped and
 * the file rewritten without it, so the next append starts on a line of its own. A bad line before that
 * is corruption, reported with its line number.
 */
export async function readLog<T>(storage: RunStorage, path: string): Promise<JsonLine<T>[]> {
  const text = await storage.readText(path);
  const { lines, end } = logLines<T>(text, path);
  if (text !== undefined && end < text.length) await storage.writeText(path, text.slice(0, end));
  return lines;
}

/** {@link readLog} without the repair: the parsed complete lines and where they end. */
function logLines<T>(text: string | undefined, path: string): { lines: JsonLine<T>[]; end: number } {
  if (!text) return { lines: [], end: 0 };
  const end = text.lastIndexOf("\n") + 1;
  return { lines: parseJsonLines<T>(text.slice(0, end), path), end };
}
