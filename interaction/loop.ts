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
 * epoch, sequence), so resuming replays exactly.
 *
 * Runs in Deno and in the browser: files go through {@link RunStorage}.
 * @module
 */
import type { Gpu } from "../model/gpu.ts";
import { GPT2, initWeights } from "../model/gpt2.ts";
import { type StepMetrics, Trainer } from "../model/trainer.ts";
import { generate } from "../model/generate.ts";
import type { GPT2Config } from "../model/config.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { parseSafetensors, serializeSafetensors } from "../model/safetensors.ts";
import { type Corpus, type Datapoint } from "./corpus.ts";
import { countWords } from "./grammar.ts";
import { deriveSeed, Rng } from "./rng.ts";
import type { TrainConfig } from "./train.ts";
import type { Teacher } from "./teacher.ts";
import { learningRate } from "./schedule.ts";
import { buildLmBatch, buildPreferenceBatch, type PreferenceItem, winningTokens } from "./sequences.ts";

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
  wordsSeen: number;
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
  /** Awaited between steps: resolves when the run may go on (the demo's pause button). */
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
  const model = GPT2.create(gpu, modelConfig, inputs.initWeights ?? initWeights(modelConfig, config.seed));
  const trainer = new Trainer(model, {
    beta1: config.beta1,
    beta2: config.beta2,
    eps: config.eps,
    weightDecay: config.weightDecay,
    clipNorm: config.clipNorm,
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
  };
  const saved = await storage.readText("state/state.json");
  if (saved) {
    state = JSON.parse(saved) as RunState;
    const weights = await storage.readBytes("state/model.safetensors");
    const optim = await storage.readBytes("state/optimizer.safetensors");
    if (!weights || !optim) {
      throw new Error("run state is incomplete: state/model.safetensors or optimizer.safetensors missing");
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
    trainer.setState({ step: state.step, m: pick("m."), v: pick("v.") });
    // Steps after the saved state will be replayed: drop their metrics lines.
    const metrics = await storage.readText("metrics.jsonl");
    if (metrics) {
      const kept = metrics.split("\n").filter((l) =>
        l.trim() !== "" && (JSON.parse(l) as MetricsRecord).step <= state.step
      );
      await storage.writeText("metrics.jsonl", kept.map((l) => l + "\n").join(""));
    }
    log(
      `resumed at round ${state.round}, phase ${state.phase}, epoch ${state.epoch}, batch ${state.batch}, step ${state.step}`,
    );
  }
  if (state.done) return state;

  const tokenizerJson = tokenizer.toJSON();
  const saveState = async () => {
    const weights = await model.getWeights();
    const { m, v } = await trainer.getState();
    const optim = serializeSafetensors([
      ...[...m].map(([k, d]) =>
        [`m.${k}`, { shape: [d.length], data: d }] as [string, { shape: number[]; data: Float32Array }]
      ),
      ...[...v].map(([k, d]) =>
        [`v.${k}`, { shape: [d.length], data: d }] as [string, { shape: number[]; data: Float32Array }]
      ),
    ]);
    await storage.saveModel("state", modelConfig, weights, {
      "tokenizer.json": tokenizerJson,
      "optimizer.safetensors": optim,
      "state.json": JSON.stringify(state, null, 2) + "\n",
    });
  };
  const saveCheckpoint = async (name: string) => {
    const weights = await model.getWeights();
    await storage.saveModel(`checkpoints/${name}`, modelConfig, weights, {
      "tokenizer.json": tokenizerJson,
      "training_state.json": JSON.stringify({ ...state, name, wordsSeen: state.wordsSeen }, null, 2) + "\n",
    });
    events.onCheckpoint?.(name, state.wordsSeen);
    log(`checkpoint ${name} at ${state.wordsSeen} words`);
  };

  for (; state.round < config.numRounds; state.round++) {
    const r = state.round;
    events.onRound?.(r, config.numRounds);
    const points = corpus.roundDatapoints(r, { max: config.maxDatapointsPerRound });
    if (points.length === 0) {
      throw new Error(`round ${r}: the corpus gives no datapoints (sources too short?)`);
    }
    log(`round ${r + 1}/${config.numRounds}: ${points.length} datapoints`);

    // Student and teacher turns (resumable from their files), then the training sequences.
    const records = await interactions(config, r, points, {
      model,
      tokenizer,
      teacher,
      storage,
      events,
      signal,
    });
    const items: PreferenceItem[] = records.map((rec) => ({
      context: rec.contextTokens,
      teacher: rec.teacherTokens,
      student: rec.studentTokens,
    }));
    // Words the student trains on per sequence (context + completion), for the word budget.
    const winWords = records.map((rec) => countWords(rec.context) + countWords(rec.teacher));
    const loseWords = records.map((rec) => countWords(rec.context) + countWords(rec.student));
    // One padded length for the whole round, so every step reuses the same GPU plans.
    const T = 1 + Math.max(...records.map((rec) => rec.contextTokens.length + rec.studentTokens.length));
    const ids = { bos: tokenizer.bosId, eos: tokenizer.eosId, pad: tokenizer.padId };
    if (state.phase === "student" || state.phase === "teacher") {
      state.phase = "sft";
      state.epoch = 0;
      state.batch = 0;
    }

    // Training phases.
    const B = config.batchSize;
    for (const phase of ["sft", "po"] as const) {
      if (PHASES.indexOf(state.phase) > PHASES.indexOf(phase)) continue;
      const epochs = phase === "sft" ? config.nSftEpochs : config.nPoEpochs;
      const n = items.length;
      const nBatches = Math.ceil(n / B);
      for (; state.epoch < epochs; state.epoch++, state.batch = 0) {
        const order = new Rng(deriveSeed(config.seed, "batches", r, phase, state.epoch)).shuffle(
          Array.from({ length: n }, (_, i) => i),
        );
        for (; state.batch < nBatches; state.batch++) {
          if (signal?.aborted) throw new DOMException("training stopped", "AbortError");
          await opts.pause?.();
          const idx = order.slice(state.batch * B, (state.batch + 1) * B);
          const lr = learningRate({
            kind: config.schedule,
            lr: config.lr,
            warmupSteps: config.warmupSteps,
            totalSteps: config.totalSteps,
          }, state.step);
          const t0 = performance.now();
          let m: StepMetrics;
          let words: number;
          let tokens: number;
          if (phase === "sft") {
            // A short last batch is padded with all-padding rows: they add nothing to the masked mean.
            const rows = idx.map((i) => winningTokens(items[i], ids));
            while (rows.length < B) rows.push([ids.pad, ids.pad]);
            const batch = buildLmBatch(rows, ids, { T });
            m = await trainer.trainStep(batch, { kind: "lm" }, lr);
            words = idx.reduce((a, i) => a + winWords[i], 0);
            tokens = batch.lmMask.reduce((a, v) => a + v, 0);
          } else {
            const batch = buildPreferenceBatch(idx.map((i) => items[i]), ids, { T });
            const beta = config.simpoBeta;
            m = await trainer.trainStep({ ...batch, compMask: batch.completionMask }, {
              kind: "simpo",
              beta,
              gamma: beta * config.simpoGammaRatio,
              lmWeight: config.lmWeight,
            }, lr);
            words = idx.reduce((a, i) => a + winWords[i] + loseWords[i], 0);
            tokens = batch.lmMask.reduce((a, v) => a + v, 0);
          }
          if (!Number.isFinite(m.loss)) {
            throw new Error(
              `round ${r} ${phase} epoch ${state.epoch} batch ${state.batch}: the loss is ${m.loss}`,
            );
          }
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
            wordsSeen: state.wordsSeen,
            tokensPerSec: tokens / ((performance.now() - t0) / 1000),
            time: new Date().toISOString(),
          };
          await storage.appendText("metrics.jsonl", JSON.stringify(rec) + "\n");
          events.onMetrics?.(rec);
          events.onPhase?.(phase, r, state.epoch * nBatches + state.batch + 1, epochs * nBatches);
          // Word checkpoints; the state saved with them points at the next batch.
          if (
            state.nextCheckpoint < checkpoints.length && state.wordsSeen >= checkpoints[state.nextCheckpoint]
          ) {
            const name = checkpointName(checkpoints[state.nextCheckpoint]);
            while (
              state.nextCheckpoint < checkpoints.length &&
              state.wordsSeen >= checkpoints[state.nextCheckpoint]
            ) {
              state.nextCheckpoint++;
            }
            state.batch++;
            await saveCheckpoint(name);
            await saveState();
            state.batch--;
          }
        }
      }
      // End of the phase: a checkpoint, and the state pointing at the next phase.
      state.phase = phase === "sft" ? "po" : "student";
      state.epoch = 0;
      state.batch = 0;
      if (phase === "po") state.round++;
      await saveCheckpoint(`round${r + 1}_${phase}`);
      if (phase === "po" && state.round >= config.numRounds) state.done = true;
      await saveState();
      if (phase === "po") state.round--;
    }
  }
  state.done = true;
  return state;
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
  },
): Promise<InteractionRecord[]> {
  const { model, tokenizer, teacher, storage, events, signal } = ctx;
  const done = await storage.readText(`interactions/round_${round}.jsonl`);
  if (done) return done.trim().split("\n").map((l) => JSON.parse(l) as InteractionRecord);

  // Student turn, in batches, each stored before the next starts.
  const studentPath = `interactions/round_${round}.student.jsonl`;
  const student: { tokens: number[]; finish: "length" | "stop" }[] = parseLines(
    await storage.readText(studentPath),
  );
  const s = config.student;
  const seed = deriveSeed(config.seed, "student", round);
  for (let at = student.length; at < points.length; at += s.batchSize) {
    if (signal?.aborted) throw new DOMException("training stopped", "AbortError");
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
  const teacherPath = `interactions/round_${round}.teacher.jsonl`;
  const answers = new Map<number, string>();
  for (const a of parseLines<{ index: number; text: string }>(await storage.readText(teacherPath))) {
    answers.set(a.index, a.text);
  }
  const contexts = points.map((p) => tokenizer.decode(Array.from(p.context)));
  const studentTexts = student.map((g) => tokenizer.decode(g.tokens));
  const missing = points.map((_, i) => i).filter((i) => !answers.has(i));
  if (missing.length > 0) {
    let got = points.length - missing.length;
    const texts = await teacher.correct(
      missing.map((i) => ({
        context: contexts[i],
        student: studentTexts[i],
        reference: tokenizer.decode(Array.from(points[i].continuation)),
      })),
      {
        signal,
        onAnswer: async (j: number, text: string) => {
          answers.set(missing[j], text);
          await storage.appendText(teacherPath, JSON.stringify({ index: missing[j], text }) + "\n");
          events.onPhase?.("teacher", round, ++got, points.length);
        },
      },
    );
    texts.forEach((text, j) => answers.set(missing[j], text));
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
  await storage.writeText(
    `interactions/round_${round}.jsonl`,
    records.map((r) => JSON.stringify(r)).join("\n") + "\n",
  );
  return records;
}

function parseLines<T>(text: string | undefined): T[] {
  if (!text) return [];
  return text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as T);
}
