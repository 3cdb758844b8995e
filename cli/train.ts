/**
 * `deno task train`: the interaction rounds. With no options it trains the `tiny` preset offline (the
 * embedded corpus, a trained tokenizer, the corpus teacher); `--preset babylm-interaction` with a corpus
 * and a teacher URL is the model card's run. `--resume RUN_DIR` continues a killed run.
 * @module
 */
import { describeLine, GPU_FLAGS, openGpu } from "./gpu_options.ts";
import { clearKilledWrites, loadCheckpoint, loadPromptTemplate, loadTokenizer } from "./files.ts";
import {
  checkResume,
  type MetricsRecord,
  type Phase,
  recordStartConfig,
  runInteraction,
} from "../interaction/loop.ts";
import { prepareRun } from "../interaction/prepare.ts";
import {
  drawSeed,
  mergeConfig,
  PRESETS,
  RANDOM_SEED,
  RESUME_MAY_CHANGE,
  type TrainConfig,
  validateTrainConfig,
} from "../interaction/config.ts";
import { fileText, findCorpusFiles, readCorpusDir } from "./corpus_dir.ts";
import { createTeacher, probeTeachers, type TeacherHost } from "../interaction/teacher_setup.ts";
import { DirStorage, loadRunConfig } from "./run_storage.ts";
import {
  dropoutOption,
  HALF_SUMS_FLAG,
  halfSumsFlag,
  median,
  numberOption,
  OPTIMIZER_FLAGS,
  optimizerFlags,
  parseOptions,
  PRECISION_FLAG,
  precisionFlag,
  Progress,
  runMain,
  UsageError,
} from "./common.ts";
import { uniformDropout } from "../model/config.ts";
import { checkHalfSupport } from "../model/precision.ts";

const SPEC = {
  preset: { type: "string", help: `a preset: ${Object.keys(PRESETS).join(", ")}`, default: "tiny" },
  config: { type: "string", help: "a JSON file overriding any config key" },
  out: { type: "string", help: "run directory (default: the preset's outDir)" },
  resume: {
    type: "string",
    help: "continue the run in this directory from its last saved state; its config.json may change only " +
      `in ${RESUME_MAY_CHANGE.join(", ")}`,
  },
  seed: { type: "string", help: `random seed, an integer in [0, 2^32); ${RANDOM_SEED}: draw one (recorded)` },
  rounds: { type: "string", help: "number of interaction rounds" },
  corpus: {
    type: "string",
    help: "a BabyLM corpus directory (train_100M/ or any folder of .train/.txt files)",
  },
  tokenizer: { type: "string", help: 'a tokenizer.json, or "train" to train a byte-level BPE on the corpus' },
  "init-model": { type: "string", help: "start from this Hugging Face GPT-2 directory" },
  "teacher-url": {
    type: "string",
    multiple: true,
    help: "an OpenAI-compatible teacher server (repeat for several)",
  },
  "teacher-mode": { type: "string", help: "chat (vLLM, SGLang) or completion (llama.cpp, Ollama)" },
  "teacher-model": { type: "string", help: "model name sent to the teacher server" },
  "chat-template": {
    type: "string",
    help: "completion mode's chat template: auto (from --teacher-model), llama3, chatml-qwen2.5, qwen3, " +
      "qwen3-instruct-2507 or qwen3.5",
  },
  "teacher-prompt": { type: "string", help: "teacher prompt template file (messages + sampling)" },
  dropout: { type: "string", help: "dropout rate at all four sites of the training steps (0: none)" },
  "sft-epochs": {
    type: "string",
    help: "LM epochs per round (the card's 8; the baseline's config.yaml has 7)",
  },
  ...OPTIMIZER_FLAGS,
  ...PRECISION_FLAG,
  ...HALF_SUMS_FLAG,
  ...GPU_FLAGS,
  "print-config": { type: "boolean", help: "print the resolved config and exit" },
} as const;

/** Options that set config values; they cannot be combined with --resume (the run's config.json rules). */
const CONFIG_OPTIONS = [
  "config",
  "out",
  "seed",
  "rounds",
  "corpus",
  "tokenizer",
  "init-model",
  "teacher-url",
  "teacher-mode",
  "teacher-model",
  "chat-template",
  "teacher-prompt",
  "dropout",
  "sft-epochs",
  "lr",
  "warmup-steps",
  "clip-norm",
  "precision",
  "half-sums",
] as const;

type Options = ReturnType<typeof parseOptions<typeof SPEC>>;

/** The config of this start: a saved run's (--resume), or a preset overlaid with --config and options. */
export async function resolveConfig(opts: Options): Promise<TrainConfig> {
  if (opts.resume) {
    const dir = String(opts.resume).replace(/\/+$/, "");
    const clash = CONFIG_OPTIONS.filter((k) => opts[k] !== undefined);
    if (clash.length > 0 || opts.preset !== SPEC.preset.default) {
      throw new UsageError(
        `--resume ${dir} continues the run with its own config.json; drop ${
          [...(opts.preset !== SPEC.preset.default ? ["preset"] : []), ...clash].map((k) => `--${k}`).join(
            ", ",
          )
        } (or start a new run without --resume)`,
      );
    }
    return await loadRunConfig(dir, "--resume");
  }
  const preset = String(opts.preset);
  const base = PRESETS[preset];
  if (!base) {
    throw new UsageError(`--preset must be one of ${Object.keys(PRESETS).join(", ")}, got ${preset}`);
  }
  let c: TrainConfig = structuredClone(base);
  if (opts.config) {
    const path = String(opts.config);
    let json: unknown;
    try {
      json = JSON.parse(await Deno.readTextFile(path));
    } catch (e) {
      throw new UsageError(`--config ${path}: ${(e as Error).message}`);
    }
    try {
      c = mergeConfig(c, json as never, path);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  if (opts.out) c.outDir = String(opts.out);
  if (opts.seed !== undefined) {
    c.seed = numberOption(opts.seed, "seed", { integer: true, min: RANDOM_SEED, max: 2 ** 32 - 1 });
  }
  if (opts.rounds !== undefined) c.numRounds = numberOption(opts.rounds, "rounds", { integer: true, min: 1 });
  if (opts.dropout !== undefined) c.dropout = uniformDropout(dropoutOption(opts.dropout));
  Object.assign(c, optimizerFlags(opts));
  c.precision = precisionFlag(opts.precision, c.precision);
  if (opts["half-sums"] !== undefined) c.halfSums = halfSumsFlag(opts["half-sums"], c.precision);
  if (opts["sft-epochs"] !== undefined) {
    c.nSftEpochs = numberOption(opts["sft-epochs"], "sft-epochs", { integer: true, min: 0 });
  }
  if (opts.corpus) c.corpus = { kind: "dir", path: String(opts.corpus) };
  if (opts.tokenizer) c.tokenizer = String(opts.tokenizer);
  if (opts["init-model"]) c.initModel = String(opts["init-model"]);
  const urls = opts["teacher-url"] as string[] | undefined;
  if (urls?.length) c.teacher = { ...c.teacher, kind: "openai", urls };
  if (opts["teacher-mode"]) c.teacher.mode = String(opts["teacher-mode"]) as TrainConfig["teacher"]["mode"];
  if (opts["teacher-model"]) c.teacher.model = String(opts["teacher-model"]);
  if (opts["chat-template"]) c.teacher.chatTemplate = String(opts["chat-template"]);
  if (opts["teacher-prompt"]) c.teacher.promptFile = String(opts["teacher-prompt"]);
  try {
    return validateTrainConfig(c, { where: opts.config ? String(opts.config) : "config", randomSeed: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** The entries of `dir`, or undefined when it does not exist. */
async function entries(dir: string): Promise<string[] | undefined> {
  try {
    const out: string[] = [];
    for await (const e of Deno.readDir(dir)) out.push(e.name);
    return out;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    if (e instanceof Deno.errors.NotADirectory) {
      throw new UsageError(`--out ${dir}: exists and is not a directory`);
    }
    throw e;
  }
}

/** Entry point (exported for tests). */
export async function main(args: string[]): Promise<void> {
  const opts = parseOptions(
    "train",
    "Train a GPT-2 student by interaction with a teacher (BabyLM 2025).",
    SPEC,
    args,
  );
  const resolved = await resolveConfig(opts);
  if (opts["print-config"]) {
    console.log(JSON.stringify(resolved, null, 2));
    return;
  }
  // Drawn before anything uses it, and written to config.json below, so --resume continues the same run.
  const { config, drawn } = drawSeed(resolved);
  if (drawn !== undefined) {
    console.error(
      `seed ${RANDOM_SEED}: drew seed ${drawn} at random (recorded in ${config.outDir}/config.json)`,
    );
  }
  const dir = config.outDir;
  const storage = new DirStorage(dir);
  // A new run never writes into a folder that holds anything: an earlier run's files are kept whole.
  const existing = await entries(dir);
  if (!opts.resume && existing !== undefined && existing.length > 0) {
    throw new UsageError(
      `${dir} is not empty (${existing.slice(0, 4).join(", ")}${existing.length > 4 ? ", ..." : ""}): ` +
        `continue that run with --resume ${dir}, or choose another --out`,
    );
  }
  if (opts.resume) {
    for (const line of await clearKilledWrites(dir)) console.error(line);
    // Checked before the corpus is tokenized (the loop checks again): a bad state stops the start at once.
    try {
      await checkResume(storage, config);
    } catch (e) {
      throw new UsageError(`${dir}/${(e as Error).message}`);
    }
  }
  const t0 = performance.now();
  const savedTokenizerJson = opts.resume ? await storage.readText("tokenizer.json") : undefined;
  const host: TeacherHost = {
    name: "deno task train",
    loadPrompt: loadPromptTemplate,
    env: (name) => Deno.env.get(name),
    log: (line) => console.error(line),
    urlSetting: "--teacher-url / teacher.urls",
  };
  const inputs = await prepareRun(config, (c) => createTeacher(c.teacher, host), {
    savedTokenizerJson,
    readCorpusDir: (path, encode, reading) =>
      readCorpusDir(path, encode, { ...reading, onLog: (line) => console.error(line) }),
    corpusDirText: (path) =>
      (async function* () {
        for (const f of await findCorpusFiles(path)) yield* fileText(f.path);
      })(),
    loadTokenizer: (path) => loadTokenizer(path),
    loadModel: (path) => loadCheckpoint(path),
    onLog: (line) => console.error(line),
  });
  if (config.teacher.kind === "openai") await probeTeachers(config.teacher.urls, host);
  // The device before any write: f16 on an adapter without shader-f16 fails here, leaving nothing.
  const gpu = await openGpu(opts, { quiet: true });
  if (config.precision === "f16") checkHalfSupport(gpu);
  // Everything checked: the run directory is written from here on.
  // config.json first: with it, any later kill leaves a directory that --resume continues (a missing
  // tokenizer.json is trained again, the same for the same config).
  if (!opts.resume) {
    await storage.writeText("config.json", JSON.stringify(config, null, 2) + "\n");
    // What a resume compares config.json with, recorded before anything is made under the config.
    await recordStartConfig(storage, config);
  }
  if (!savedTokenizerJson) await storage.writeText("tokenizer.json", inputs.tokenizer.toJSON());
  // The device of this start (a resume may run on another): backend, adapter, kernel family, features.
  await storage.writeText("device.json", JSON.stringify(gpu.describe(), null, 2) + "\n");
  console.error(
    `${
      describeLine(gpu.describe())
    }; student: ${inputs.modelConfig.nLayer} layers, width ${inputs.modelConfig.nEmbd}, ` +
      `vocabulary ${inputs.modelConfig.vocabSize}; teacher: ${inputs.teacher.name}; prepared in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
  );

  const bars = new PhaseBars();
  let firstSft: MetricsRecord | undefined, lastSft: MetricsRecord | undefined;
  const rates: number[] = [];
  const state = await runInteraction(config, inputs, {
    gpu,
    storage,
    events: {
      onRound: (r, n) => console.error(`\n== round ${r + 1}/${n} ==`),
      onPhase: (phase, round, done, total) => bars.update(phase, round, done, total),
      onMetrics: (m) => {
        bars.last = m;
        if (m.phase === "sft") {
          firstSft ??= m;
          lastSft = m;
        }
        rates.push(m.tokensPerSec);
      },
      onLog: (line) => bars.note(line),
    },
  });
  bars.end();
  const seconds = (performance.now() - t0) / 1000;
  console.log(
    `done: ${state.step} steps, ${state.wordsSeen} words seen in ${seconds.toFixed(0)} s` +
      (firstSft && lastSft
        ? `; SFT LM loss ${firstSft.lmLoss.toFixed(3)} (round ${firstSft.round + 1}) -> ${
          lastSft.lmLoss.toFixed(3)
        } (round ${lastSft.round + 1})`
        : "") +
      (rates.length > 0
        ? `; ${median(rates).toFixed(0)} trained tokens/s (median over ${rates.length} steps)`
        : "") +
      `; run in ${dir}`,
  );
}

/** One progress bar per round phase, with ETA; a resumed phase counts from where it resumed. */
class PhaseBars {
  #bar?: Progress;
  #key = "";
  #from = 0;
  /** The latest step's metrics, shown after the rate. */
  last?: MetricsRecord;

  update(phase: Phase, round: number, done: number, total: number): void {
    const key = `${round}:${phase}`;
    if (key !== this.#key) {
      this.#bar?.end();
      const training = phase === "sft" || phase === "po";
      this.#bar = new Progress(
        `r${round + 1} ${phase.padEnd(7)}${done > 0 ? ` (from ${done})` : ""}`,
        total - done,
        training ? "step" : "seq",
      );
      this.#key = key;
      this.#from = done;
      if (training) this.last = undefined;
    }
    const m = this.last;
    const extra = m
      ? `lm ${m.lmLoss.toFixed(3)}${m.simpoLoss !== undefined ? ` simpo ${m.simpoLoss.toFixed(3)}` : ""}`
      : "";
    this.#bar!.tick(done - this.#from - this.#bar!.done, extra);
  }

  /** A line between bar redraws. */
  note(line: string): void {
    this.#bar?.end();
    console.error(line);
  }

  end(): void {
    this.#bar?.end();
  }
}

if (import.meta.main) await runMain(() => main(Deno.args));
