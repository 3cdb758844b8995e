/**
 * `deno task eval`: the BabyLM zero-shot and reading evaluations of one model (2025 rules, the model
 * card's, or 2026 rules), or learning curves over every checkpoint of a training run, with the 2026
 * AoA score over its word checkpoints.
 *
 *   deno task eval --model DIR --data DIR [--protocol 2025|2026] [--tasks ...] [--output FILE] [--profile]
 *   deno task eval --run RUN_DIR --data DIR [--layout fast] [--tasks ...,aoa] [--output DIR]
 * @module
 */
import { parseCommand, PRECISION_FLAG, precisionFlag, Progress, runMain, UsageError } from "./common.ts";
import { loadCheckpoint, loadTokenizer, writeFileAtomic } from "./files.ts";
import type { Scorer, TextCodec } from "../eval/types.ts";
import type { Protocol } from "../eval/types.ts";
import {
  ALL_TASKS,
  aoaFile,
  checkTaskData,
  DATA_TASKS,
  defaultTasks,
  type EvalOptions,
  evaluateModel,
  type Layout,
  type TaskTiming,
} from "../eval/tasks.ts";
import { formatReport, formatTiming, makeReport, type ModelReport } from "../eval/report.ts";
import { curveCsv, curveHtml, curveJson, curveSvg, findCheckpoints, wordsFromName } from "../eval/curve.ts";
import { type AoaCheckpoint, aoaCurves, aoaScore, parseCdiHuman, surprisalJson } from "../eval/aoa.ts";
import { EWOK_PASSWORD } from "../eval/zip.ts";
import { evalEncoder, GpuEvalScorer } from "../eval/model.ts";
import type { Gpu } from "../shaders/gpu.ts";
import { GPU_FLAGS, type GpuFlagValues, openGpu } from "./gpu_options.ts";
import { GPT2 } from "../model/gpt2.ts";
import { checkHalfSupport, type Precision } from "../model/precision.ts";
import { TOKENIZER_FILE } from "../model/tokenizer.ts";
import { finetuneCheckpoint } from "./finetune.ts";

/** A model ready to evaluate. */
export interface LoadedModel {
  scorer: Scorer;
  encoder: TextCodec;
  /** Release GPU memory before the next checkpoint is loaded. */
  close?(): void | Promise<void>;
}

/** One WebGPU device for every model this process loads (a run's checkpoints come one after another). */
let device: Promise<Gpu> | undefined;
/** The device flags of this process's command line (`--kernels`, `--tune`, `--tune-cache`). */
let gpuFlags: GpuFlagValues = {};

/**
 * Load the Hugging Face GPT-2 directory `modelDir` (config.json, model.safetensors, tokenizer.json) onto
 * the GPU for scoring with matmuls in `precision` (model/precision.ts). `close` frees the model's
 * buffers, so checkpoints can be evaluated in turn.
 */
export async function loadScorer(modelDir: string, precision: Precision = "f32"): Promise<LoadedModel> {
  const tokenizer = await loadTokenizer(`${modelDir.replace(/\/+$/, "")}/${TOKENIZER_FILE}`);
  const encoder = evalEncoder(tokenizer);
  const { config, weights } = await loadCheckpoint(modelDir);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new Error(
      `${modelDir}: tokenizer.json has ${tokenizer.vocabSize} ids but config.json's vocab_size is ${config.vocabSize}`,
    );
  }
  device ??= openGpu(gpuFlags);
  const gpu = await device;
  const model = GPT2.create(gpu, config, weights).usePrecision(precision);
  const scorer = new GpuEvalScorer(model);
  return {
    scorer,
    encoder,
    close: () => {
      scorer.destroy();
      model.destroy();
    },
  };
}

const SPEC = {
  model: {
    type: "string",
    help: "a Hugging Face GPT-2 model directory (config.json, model.safetensors, tokenizer.json)",
  },
  run: { type: "string", help: "a training run: evaluate every checkpoint and write learning curves" },
  data: {
    type: "string",
    help: "the BabyLM evaluation data folder (evaluation_data/full_eval, or fast_eval with --layout fast)",
  },
  protocol: {
    type: "string",
    help: "scoring rules: 2025 (evaluation-pipeline-2025, the model card's and the babylm-interaction " +
      "preset's: ties wrong, EWoK compares targets) or 2026 (babylm-eval: ties drawn at random with --seed, " +
      "tie count and tie-share score reported, EWoK compares contexts, entity tracking skips " +
      '"nothing" options, COMPS and GlobalPIQA added, WUG dropped)',
    default: "2025",
  },
  tasks: {
    type: "string",
    help:
      `comma-separated tasks out of ${ALL_TASKS.join(", ")} (default: ${defaultTasks("2025").join(",")} ` +
      `for 2025; ${defaultTasks("2026").join(",")} for 2026). aoa needs --run`,
  },
  seed: { type: "string", help: "--protocol 2026: seed of the random tie draws", default: "0" },
  layout: {
    type: "string",
    help: "folder names under --data: full (blimp_filtered, ..., the final model's full_eval) or fast " +
      "(blimp_fast, supplement_fast, ewok_fast, entity_tracking_fast, reading, global_piqa_*: the 2026 " +
      "fast_eval for per-checkpoint runs)",
    default: "full",
  },
  "aoa-data": {
    type: "string",
    help: "task aoa: the CDI words and contexts (default DATA/aoa/cdi_childes.json)",
  },
  "cdi-human": {
    type: "string",
    help: "task aoa: children's proportions by age, columns word (or definition) and 16..30 (default: " +
      "cdi_human.csv beside the aoa data; without it only surprisal.json is written)",
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
  profile: {
    type: "boolean",
    help: "print and record each task's items, sequences and tokens per second of scoring",
    default: false,
  },
  limit: {
    type: "string",
    help: "score only the first N items of each choice and WUG task and the first N reading rows (their " +
      "regressions then fit those rows only); with --profile, a quick speed figure",
  },
  force: {
    type: "boolean",
    help: "--run: evaluate checkpoints again even when their report exists",
    default: false,
  },
  finetune: {
    type: "string",
    help: "--run: also fine-tune every checkpoint on the (Super)GLUE tasks of this folder (deno task " +
      "finetune's defaults, --protocol and --precision; RUN/eval/finetune/<checkpoint>), curves " +
      "finetune/<task>",
  },
  ...PRECISION_FLAG,
  ...GPU_FLAGS,
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

type Settings = Omit<EvalOptions, "onProgress"> & { profile: boolean; precision: Precision };

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
  const model = await load(dir, s.precision);
  const t0 = performance.now();
  let bar: Progress | undefined, last = 0;
  const timing: TaskTiming[] = [];
  try {
    const results = await evaluateModel(model.scorer, model.encoder, {
      ...s,
      onPrepare: (task) => console.error(`${label}: reading and tokenizing ${task}`),
      onProgress: (done, total, task) => {
        bar ??= new Progress(label, total, "seq");
        bar.tick(done - last, task);
        last = done;
      },
      onTaskTiming: (t) => {
        timing.push(t);
        if (s.profile) {
          console.error(
            `${label}: ${t.task}: ${t.items} items, ${t.sequences} sequences in ${
              t.scoreSeconds.toFixed(1)
            } s ` +
              `(${(t.items / t.scoreSeconds).toFixed(3)} items/s)`,
          );
        }
      },
    });
    bar?.end();
    const report = makeReport(
      dir,
      { ...s, ...(s.profile ? { timing } : {}) },
      (performance.now() - t0) / 1000,
      results,
      words,
    );
    if (s.profile) console.error(`${label}: speed\n${formatTiming(timing)}`);
    return report;
  } finally {
    await model.close?.();
  }
}

const SUMMARY =
  "Zero-shot BabyLM evaluations, 2025 or 2026 rules (BLiMP, supplement, EWoK, entity tracking, " +
  "COMPS, GlobalPIQA, WUG, reading), AoA over a run's checkpoints, and perplexity. Exits non-zero when a " +
  "task failed; the report holds every other task's results and each failure's error.";

/** The command; `load` is injectable so tests can run it with a CPU model. */
export async function main(args: string[] = Deno.args, load: typeof loadScorer = loadScorer): Promise<void> {
  const o = parseCommand("eval", SUMMARY, SPEC, args);
  if (o === undefined) return;
  gpuFlags = o;
  const model = o.model as string | undefined, run = o.run as string | undefined;
  if ((model === undefined) === (run === undefined)) {
    throw new UsageError("give exactly one of --model DIR or --run RUN_DIR");
  }
  const protocol = String(o.protocol) as Protocol;
  if (protocol !== "2025" && protocol !== "2026") {
    throw new UsageError(`--protocol must be 2025 or 2026, got ${o.protocol}`);
  }
  const layout = String(o.layout) as Layout;
  if (layout !== "full" && layout !== "fast") {
    throw new UsageError(`--layout must be full or fast, got ${o.layout}`);
  }
  const seed = Number(o.seed);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new UsageError(`--seed must be an integer in [0, 2^32), got ${o.seed}`);
  }
  const data = o.data as string | undefined;
  const tasks = o.tasks === undefined
    ? [...defaultTasks(protocol)]
    : String(o.tasks).split(",").map((t) => t.trim()).filter((t) => t !== "");
  if (o.text !== undefined && !tasks.includes("perplexity")) tasks.push("perplexity");
  for (const t of tasks) {
    if (!ALL_TASKS.includes(t)) {
      throw new UsageError(`--tasks: unknown task "${t}"; expected some of ${ALL_TASKS.join(", ")}`);
    }
  }
  if (tasks.includes("aoa") && run === undefined) {
    throw new UsageError(
      "task aoa needs --run RUN_DIR: its score is a curve over the run's word checkpoints",
    );
  }
  const needsData = tasks.some((t) => DATA_TASKS.includes(t)) || (tasks.includes("aoa") && !o["aoa-data"]);
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
  const limit = o.limit === undefined ? undefined : Number(o.limit);
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1)) {
    throw new UsageError(`--limit must be a positive integer, got ${o.limit}`);
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
    protocol,
    seed,
    layout,
    aoaFile: o["aoa-data"] as string | undefined,
    limit,
    profile: Boolean(o.profile),
    precision: precisionFlag(o.precision),
  };
  for (const t of tasks) {
    try {
      await checkTaskData(t, s);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  const cdiHuman = (o["cdi-human"] as string | undefined) ??
    `${aoaFile(s).replace(/[\\/][^\\/]*$/, "") || "."}/cdi_human.csv`;
  if (o["cdi-human"] !== undefined && !(await isFile(cdiHuman))) {
    throw new UsageError(`--cdi-human: expected a file, found none at ${cdiHuman}`);
  }

  if (model !== undefined && !(await isDir(model))) {
    throw new UsageError(`--model: expected a model folder, found none at ${model}`);
  }
  // Refused before anything is written (a run's eval folder included).
  if (s.precision === "f16") checkHalfSupport(await (device ??= openGpu(gpuFlags)));

  if (model !== undefined) {
    const report = await evaluateDir(model, s, load, "eval");
    const out = (o.output as string | undefined) ?? `${model}/eval_results.json`;
    await writeFileAtomic(out, JSON.stringify(report, null, 2) + "\n");
    console.log(formatReport(report));
    console.log(`\nreport: ${out}`);
    failIfAny(report.failed.map((t) => `${t}: ${(report.results[t] as { error: string }).error}`));
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
  const aoaPoints: AoaCheckpoint[] = [];
  const failures: string[] = [];
  for (const [i, c] of checkpoints.entries()) {
    const file = `${outDir}/${c.name}.json`;
    // AoA is the pipeline's curve over word checkpoints (checkpoint_1M, ...), at their nominal counts.
    const nominal = wordsFromName(c.name);
    const ckTasks = tasks.filter((t) => t !== "aoa" || nominal !== undefined);
    if (ckTasks.length === 0) continue;
    const settings = { ...s, tasks: ckTasks };
    let report: ModelReport | undefined;
    if (!o.force && (await isFile(file))) {
      const old = JSON.parse(await Deno.readTextFile(file)) as ModelReport;
      // Reuse a report only if it covers the same tasks under the same rules and precision, none failed.
      const same = (old.protocol ?? "2025") === protocol && (old.layout ?? "full") === layout &&
        (old.precision ?? "f32") === s.precision && (protocol === "2025" || old.seed === seed);
      if (same && ckTasks.every((t) => old.tasks?.includes(t) && old.results?.[t]?.kind !== "error")) {
        report = old;
      }
    }
    if (report) console.error(`[${i + 1}/${checkpoints.length}] ${c.name}: reusing ${file}`);
    else {
      report = await evaluateDir(
        c.dir,
        settings,
        load,
        `[${i + 1}/${checkpoints.length}] ${c.name}`,
        c.words,
      );
      await writeFileAtomic(file, JSON.stringify(report, null, 2) + "\n");
    }
    for (const t of ckTasks) {
      const r = report.results[t];
      if (r?.kind === "error") failures.push(`${c.name} ${t}: ${r.error}`);
      if (r?.kind === "aoa_surprisal") aoaPoints.push({ name: c.name, words: nominal!, result: r });
    }
    const headline = Object.fromEntries(
      Object.entries(report.headline).filter(([k]) => tasks.includes(k.split("/")[0])),
    );
    if (typeof o.finetune === "string") {
      device ??= openGpu(gpuFlags);
      const ft = await finetuneCheckpoint(
        c.dir,
        o.finetune,
        `${outDir}/finetune/${c.name}`,
        protocol,
        s.precision,
        await device,
        !!o.force,
      );
      Object.assign(headline, ft.headline);
      failures.push(...ft.failed.map((f) => `${c.name} ${f}`));
    }
    points.push({ name: c.name, words: c.words, headline });
  }
  const title = `Learning curves: ${runDir}`;
  await writeFileAtomic(`${outDir}/learning_curve.json`, curveJson(points));
  await writeFileAtomic(`${outDir}/learning_curve.csv`, curveCsv(points));
  await writeFileAtomic(`${outDir}/learning_curve.svg`, curveSvg(points, title));
  await writeFileAtomic(`${outDir}/learning_curve.html`, curveHtml(points, title));
  console.log(curveCsv(points).trimEnd());
  console.log(`\nlearning curves: ${outDir}/learning_curve.{json,csv,svg,html}`);
  if (tasks.includes("aoa")) {
    try {
      await writeAoa(aoaPoints, `${outDir}/aoa`, runDir, cdiHuman);
    } catch (e) {
      failures.push(`aoa: ${(e as Error).message}`);
    }
  }
  failIfAny(failures);
}

/** The pipeline's AoA outputs: surprisal.json, and with the children's data aoa_score.json and a report. */
async function writeAoa(
  points: AoaCheckpoint[],
  dir: string,
  model: string,
  cdiHuman: string,
): Promise<void> {
  points.sort((a, b) => a.words - b.words);
  if (points.length === 0) throw new Error("no word checkpoints (checkpoint_<N>M) in the run");
  await Deno.mkdir(dir, { recursive: true });
  await writeFileAtomic(`${dir}/surprisal.json`, surprisalJson(points, model));
  console.log(`\naoa: surprisals of ${points.length} checkpoints in ${dir}/surprisal.json`);
  if (!(await isFile(cdiHuman))) {
    console.log(`aoa: no score: children's data not found at ${cdiHuman} (give --cdi-human FILE)`);
    return;
  }
  const cdi = parseCdiHuman(await Deno.readTextFile(cdiHuman), cdiHuman);
  const vocabSize = points[points.length - 1].result.vocabSize;
  const score = aoaScore(points.map((p) => p.words), aoaCurves(points), cdi, vocabSize);
  await writeFileAtomic(`${dir}/aoa_score.json`, JSON.stringify({ aoa: score.score }) + "\n");
  await writeFileAtomic(
    `${dir}/aoa_report.json`,
    JSON.stringify({ checkpoints: points.map((p) => [p.name, p.words]), vocabSize, ...score }, null, 2) +
      "\n",
  );
  console.log(
    `aoa: score ${score.score.toFixed(4)} (Pearson r ${score.r.toFixed(4)}, p ${score.p.toPrecision(3)}, ` +
      `${score.words.length} words) in ${dir}/aoa_score.json`,
  );
}

/** Exit non-zero (through runMain) after everything was written, naming each failed task. */
function failIfAny(failures: string[]): void {
  if (failures.length > 0) {
    throw new Error(`${failures.length} task(s) failed:\n  ${failures.join("\n  ")}`);
  }
}

if (import.meta.main) await runMain(() => main());
