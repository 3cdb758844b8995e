/**
 * `deno task train`: the interaction rounds. With no options it trains the `tiny` preset offline (the
 * embedded corpus, a trained tokenizer, the corpus teacher); `--preset babylm-interaction` with a corpus
 * and a teacher URL is the model card's run. `--resume RUN_DIR` continues a killed run.
 * @module
 */
import { Gpu } from "../model/gpu.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { type MetricsRecord, type Phase, runInteraction } from "../interaction/loop.ts";
import { prepareRun } from "../interaction/prepare.ts";
import { mergeConfig, PRESETS, type TrainConfig, validateTrainConfig } from "../interaction/train.ts";
import { fileText, findCorpusFiles, readCorpusDir } from "../interaction/corpus_dir.ts";
import { CorpusTeacher, OpenAITeacher, type Teacher } from "../interaction/teacher.ts";
import { loadPromptTemplate } from "../interaction/prompt.ts";
import { DirStorage } from "./run_storage.ts";
import { numberOption, parseOptions, Progress, runMain, UsageError } from "./common.ts";

const SPEC = {
  preset: { type: "string", help: `a preset: ${Object.keys(PRESETS).join(", ")}`, default: "tiny" },
  config: { type: "string", help: "a JSON file overriding any config key" },
  out: { type: "string", help: "run directory (default: the preset's outDir)" },
  resume: { type: "string", help: "continue the run in this directory from its last saved state" },
  seed: { type: "string", help: "random seed" },
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
  "teacher-prompt": { type: "string", help: "teacher prompt template file (messages + sampling)" },
  "print-config": { type: "boolean", help: "print the resolved config and exit" },
} as const;

async function resolveConfig(opts: ReturnType<typeof parseOptions<typeof SPEC>>): Promise<TrainConfig> {
  if (opts.resume) {
    const dir = String(opts.resume);
    const text = await Deno.readTextFile(`${dir}/config.json`).catch(() => {
      throw new UsageError(`--resume ${dir}: no config.json there (is it a run directory?)`);
    });
    const saved = JSON.parse(text) as TrainConfig;
    const base = PRESETS[saved.preset] ?? PRESETS.tiny;
    return validateTrainConfig({ ...mergeConfig(base, saved as never, `${dir}/config.json`), outDir: dir });
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
    c = mergeConfig(c, json as never, path);
  }
  if (opts.out) c.outDir = String(opts.out);
  if (opts.seed !== undefined) c.seed = numberOption(opts.seed, "seed", { integer: true, min: 0 });
  if (opts.rounds !== undefined) c.numRounds = numberOption(opts.rounds, "rounds", { integer: true, min: 1 });
  if (opts.corpus) c.corpus = { kind: "dir", path: String(opts.corpus) };
  if (opts.tokenizer) c.tokenizer = String(opts.tokenizer);
  if (opts["init-model"]) c.initModel = String(opts["init-model"]);
  const urls = opts["teacher-url"] as string[] | undefined;
  if (urls?.length) c.teacher = { ...c.teacher, kind: "openai", urls };
  if (opts["teacher-mode"]) c.teacher.mode = String(opts["teacher-mode"]) as TrainConfig["teacher"]["mode"];
  if (opts["teacher-model"]) c.teacher.model = String(opts["teacher-model"]);
  if (opts["teacher-prompt"]) c.teacher.promptFile = String(opts["teacher-prompt"]);
  return validateTrainConfig(c);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
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
  const config = await resolveConfig(opts);
  if (opts["print-config"]) {
    console.log(JSON.stringify(config, null, 2));
    return;
  }
  const dir = config.outDir;
  const storage = new DirStorage(dir);
  if (!opts.resume) {
    if (await exists(`${dir}/state`) || await exists(`${dir}/metrics.jsonl`)) {
      throw new UsageError(
        `${dir} already holds a run: continue it with --resume ${dir}, or choose another --out`,
      );
    }
    await storage.writeText("config.json", JSON.stringify(config, null, 2) + "\n");
  }
  const savedTokenizerJson = await storage.readText("tokenizer.json");
  const prompt = config.teacher.promptFile ? await loadPromptTemplate(config.teacher.promptFile) : undefined;
  const makeTeacher = (c: TrainConfig): Teacher =>
    c.teacher.kind === "corpus" ? new CorpusTeacher() : new OpenAITeacher({
      urls: c.teacher.urls,
      mode: c.teacher.mode,
      model: c.teacher.model,
      prompt,
      apiKeyEnv: c.teacher.apiKeyEnv,
      timeoutMs: c.teacher.timeoutMs,
      maxInFlightPerServer: c.teacher.maxInFlightPerServer,
      maxAttempts: c.teacher.maxAttempts,
      log: (line) => console.error(`teacher: ${line}`),
    });
  const t0 = performance.now();
  const inputs = await prepareRun(config, makeTeacher, {
    savedTokenizerJson,
    readCorpusDir: (path, encode) => readCorpusDir(path, encode),
    corpusDirText: (path) =>
      (async function* () {
        for (const f of await findCorpusFiles(path)) yield* fileText(f.path);
      })(),
    loadTokenizer: (path) => loadTokenizer(path),
    loadModel: (path) => loadCheckpoint(path),
    onLog: (line) => console.error(line),
  });
  if (!savedTokenizerJson) await storage.writeText("tokenizer.json", inputs.tokenizer.toJSON());
  const gpu = await Gpu.create();
  console.error(
    `adapter: ${gpu.adapterName}; student: ${inputs.modelConfig.nLayer} layers, width ${inputs.modelConfig.nEmbd}, ` +
      `vocabulary ${inputs.modelConfig.vocabSize}; prepared in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
  );

  let bar: Progress | undefined;
  let barKey = "";
  let last: MetricsRecord | undefined;
  const firstLoss = new Map<string, number>();
  const state = await runInteraction(config, inputs, {
    gpu,
    storage,
    events: {
      onRound: (r, n) => console.error(`\n== round ${r + 1}/${n} ==`),
      onPhase: (phase: Phase, round, done, total) => {
        const key = `${round}:${phase}`;
        if (key !== barKey) {
          bar?.end();
          bar = new Progress(
            phase.padEnd(7),
            total,
            phase === "student" || phase === "teacher" ? "seq" : "step",
          );
          barKey = key;
        }
        const extra = last && (phase === "sft" || phase === "po")
          ? `lm ${last.lmLoss.toFixed(3)}${
            last.simpoLoss !== undefined ? ` simpo ${last.simpoLoss.toFixed(3)}` : ""
          }`
          : "";
        bar!.done = done - 1;
        bar!.tick(1, extra);
      },
      onMetrics: (m) => {
        last = m;
        const key = `${m.phase}`;
        if (!firstLoss.has(key)) firstLoss.set(key, m.lmLoss);
      },
      onCheckpoint: (name, words) => {
        bar?.end();
        barKey = "";
        console.error(`checkpoint ${name} (${words} words seen)`);
      },
      onLog: (line) => console.error(line),
    },
  });
  bar?.end();
  const first = firstLoss.get("sft");
  console.log(
    `done: ${state.step} steps, ${state.wordsSeen} words seen` +
      (first !== undefined && last ? `; LM loss ${first.toFixed(3)} -> ${last.lmLoss.toFixed(3)}` : "") +
      `; run in ${dir}`,
  );
}

if (import.meta.main) await runMain(() => main(Deno.args));
