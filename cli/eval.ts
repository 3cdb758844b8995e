/**
 * `deno task eval`: the BabyLM 2025 zero-shot and reading evaluations of one model, or learning
 * curves over every checkpoint of a training run.
 *
 *   deno task eval --model DIR --data DIR [--tasks blimp,supplement,...] [--batch-size N] [--output FILE]
 *   deno task eval --run RUN_DIR --data DIR [--output DIR]
 * @module
 */
import { parseCommand, Progress, runMain, UsageError } from "./common.ts";
import { loadCheckpoint, loadTokenizer, writeFileAtomic } from "./files.ts";
import type { Scorer, TextEncoder_ } from "../eval/types.ts";
import { ALL_TASKS, checkTaskData, DEFAULT_TASKS, type EvalOptions, evaluateModel } from "../eval/tasks.ts";
import { formatReport, makeReport, type ModelReport } from "../eval/report.ts";
import { curveCsv, curveHtml, curveJson, curveSvg, findCheckpoints } from "../eval/curve.ts";
import { EWOK_PASSWORD } from "../eval/zip.ts";
import { evalEncoder, GpuEvalScorer } from "../eval/model.ts";
import { Gpu } from "../shaders/gpu.ts";
import { GPT2 } from "../model/gpt2.ts";
import { TOKENIZER_FILE } from "../model/tokenizer.ts";

/** A model ready to evaluate. */
export interface LoadedModel {
  scorer: Scorer;
  encoder: TextEncoder_;
  /** Release GPU memory before the next checkpoint is loaded. */
  close?(): void | Promise<void>;
}

/** One WebGPU device for every model this process loads (a run's checkpoints come one after another). */
let device: Promise<Gpu> | undefined;

/**
 * Load the Hugging Face GPT-2 directory `modelDir` (config.json, model.safetensors, tokenizer.json) onto
 * the GPU for scoring. `close` frees the model's buffers, so checkpoints can be evaluated in turn.
 */
export async function loadScorer(modelDir: string): Promise<LoadedModel> {
  const tokenizer = await loadTokenizer(`${modelDir.replace(/\/+$/, "")}/${TOKENIZER_FILE}`);
  const encoder = evalEncoder(tokenizer);
  const { config, weights } = await loadCheckpoint(modelDir);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new Error(
      `${modelDir}: tokenizer.json has ${tokenizer.vocabSize} ids but config.json's vocab_size is ${config.vocabSize}`,
    );
  }
  device ??= Gpu.create();
  const gpu = await device;
  const model = GPT2.create(gpu, config, weights);
  const scorer = new GpuEvalScorer(model);
  return {
    scorer,
    encoder,
    close: () => {
      scorer.destroy();
      for (const p of model.params) for (const part of p.parts) gpu.free(part.view);
    },
  };
}

const SPEC = {
  model: {
    type: "string",
    help: "a Hugging Face GPT-2 model directory (config.json, model.safetensors, tokenizer.json)",
  },
  run: { type: "string", help: "a training run: evaluate every checkpoint and write learning curves" },
  data: { type: "string", help: "the BabyLM evaluation data folder (evaluation_data/full_eval)" },
  tasks: {
    type: "string",
    help: `comma-separated tasks out of ${ALL_TASKS.join(", ")}`,
    default: DEFAULT_TASKS.join(","),
  },
  "batch-size": { type: "string", help: "sequences per model call", default: "64" },
  output: {
    type: "string",
    help: "report file (--model; default MODEL/eval_results.json) or folder (--run; default RUN/eval)",
  },
  text: {
    type: "string",
    help: "held-out text file for the perplexity task (added to the tasks when given)",
  },
  stride: { type: "string", help: "perplexity window stride in tokens (default: context - 1)" },
  "blimp-original": {
    type: "string",
    help: "folder of the original BLiMP files for the blimp_original task",
  },
  "ewok-password": { type: "string", help: "password of ewok_filtered.zip", default: EWOK_PASSWORD },
  force: {
    type: "boolean",
    help: "--run: evaluate checkpoints again even when their report exists",
    default: false,
  },
} as const;

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

type Settings = Omit<EvalOptions, "onProgress">;

/** Evaluate one model directory, with a progress bar over all its sequences. */
async function evaluateDir(
  dir: string,
  s: Settings,
  load: typeof loadScorer,
  label: string,
  words?: number,
): Promise<ModelReport> {
  if (!(await isFile(`${dir}/tokenizer.json`))) {
    throw new UsageError(`model ${dir}: expected tokenizer.json (the model's tokenizer), found none`);
  }
  const model = await load(dir);
  const t0 = performance.now();
  let bar: Progress | undefined, last = 0;
  try {
    const results = await evaluateModel(model.scorer, model.encoder, {
      ...s,
      onPrepare: (task) => console.error(`${label}: reading and tokenizing ${task}`),
      onProgress: (done, total, task) => {
        bar ??= new Progress(label, total, "seq");
        bar.tick(done - last, task);
        last = done;
      },
    });
    bar?.end();
    return makeReport(dir, s.tasks, s.batchSize, (performance.now() - t0) / 1000, results, words);
  } finally {
    await model.close?.();
  }
}

const SUMMARY =
  "Zero-shot BabyLM 2025 evaluations (BLiMP, supplement, EWoK, entity tracking, WUG, reading) and perplexity.";

/** The command; `load` is injectable so tests can run it with a CPU model. */
export async function main(args: string[] = Deno.args, load: typeof loadScorer = loadScorer): Promise<void> {
  const o = parseCommand("eval", SUMMARY, SPEC, args);
  if (o === undefined) return;
  const model = o.model as string | undefined, run = o.run as string | undefined;
  if ((model === undefined) === (run === undefined)) {
    throw new UsageError("give exactly one of --model DIR or --run RUN_DIR");
  }
  const data = o.data as string | undefined;
  const tasks = String(o.tasks).split(",").map((t) => t.trim()).filter((t) => t !== "");
  if (o.text !== undefined && !tasks.includes("perplexity")) tasks.push("perplexity");
  for (const t of tasks) {
    if (!ALL_TASKS.includes(t)) {
      throw new UsageError(`--tasks: unknown task "${t}"; expected some of ${ALL_TASKS.join(", ")}`);
    }
  }
  const needsData = tasks.some((t) => DEFAULT_TASKS.includes(t));
  if (needsData && !data) throw new UsageError("missing required option --data (the evaluation data folder)");
  if (data && needsData && !(await isDir(data))) {
    throw new UsageError(`--data: expected a folder, found none at ${data}`);
  }
  const batchSize = Number(o["batch-size"]);
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new UsageError(`--batch-size must be a positive integer, got ${o["batch-size"]}`);
  }
  const stride = o.stride === undefined ? undefined : Number(o.stride);
  if (stride !== undefined && !(Number.isInteger(stride) && stride >= 1)) {
    throw new UsageError(`--stride must be a positive integer, got ${o.stride}`);
  }
  if (tasks.includes("perplexity") && !o.text) throw new UsageError("task perplexity needs --text FILE");
  if (tasks.includes("blimp_original") && !o["blimp-original"]) {
    throw new UsageError("task blimp_original needs --blimp-original DIR");
  }
  const s: Settings = {
    dataDir: data ?? ".",
    tasks,
    batchSize,
    textFile: o.text as string | undefined,
    stride,
    blimpOriginalDir: o["blimp-original"] as string | undefined,
    ewokPassword: String(o["ewok-password"]),
  };
  for (const t of tasks) {
    try {
      await checkTaskData(t, s);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }

  if (model !== undefined) {
    if (!(await isDir(model))) {
      throw new UsageError(`--model: expected a model folder, found none at ${model}`);
    }
    const report = await evaluateDir(model, s, load, "eval");
    const out = (o.output as string | undefined) ?? `${model}/eval_results.json`;
    await writeFileAtomic(out, JSON.stringify(report, null, 2) + "\n");
    console.log(formatReport(report));
    console.log(`\nreport: ${out}`);
    return;
  }

  const runDir = run!;
  const outDir = (o.output as string | undefined) ?? `${runDir}/eval`;
  const { checkpoints, skipped } = await findCheckpoints(runDir);
  for (const w of skipped) console.error(`skipping ${w}`);
  if (checkpoints.length === 0) {
    throw new UsageError(`run ${runDir}: expected checkpoint folders with config.json, found none`);
  }
  await Deno.mkdir(outDir, { recursive: true });
  const points = [];
  for (const [i, c] of checkpoints.entries()) {
    const file = `${outDir}/${c.name}.json`;
    let report: ModelReport | undefined;
    if (!o.force && (await isFile(file))) {
      const old = JSON.parse(await Deno.readTextFile(file)) as ModelReport;
      // Reuse a report only if it covers the same tasks (a partial earlier run is redone).
      if (tasks.every((t) => old.tasks?.includes(t))) report = old;
    }
    if (report) console.error(`[${i + 1}/${checkpoints.length}] ${c.name}: reusing ${file}`);
    else {
      report = await evaluateDir(c.dir, s, load, `[${i + 1}/${checkpoints.length}] ${c.name}`, c.words);
      await writeFileAtomic(file, JSON.stringify(report, null, 2) + "\n");
    }
    const headline = Object.fromEntries(
      Object.entries(report.headline).filter(([k]) => tasks.includes(k.split("/")[0])),
    );
    points.push({ name: c.name, words: c.words, headline });
  }
  const title = `Learning curves: ${runDir}`;
  await writeFileAtomic(`${outDir}/learning_curve.json`, curveJson(points));
  await writeFileAtomic(`${outDir}/learning_curve.csv`, curveCsv(points));
  await writeFileAtomic(`${outDir}/learning_curve.svg`, curveSvg(points, title));
  await writeFileAtomic(`${outDir}/learning_curve.html`, curveHtml(points, title));
  console.log(curveCsv(points).trimEnd());
  console.log(`\nlearning curves: ${outDir}/learning_curve.{json,csv,svg,html}`);
}

if (import.meta.main) await runMain(() => main());
