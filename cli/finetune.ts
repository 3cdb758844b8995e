/**
 * `deno task finetune`: the BabyLM (Super)GLUE fine-tuning evaluation (evaluation_pipeline/finetune of
 * babylm/evaluation-pipeline-2025 and babylm-org/babylm-eval) on the GPU, every task from one command.
 *
 *   deno task finetune --model DIR --data glue_filtered/ [--tasks rte,mrpc] [--protocol 2025|2026]
 *
 * For each task it reads `<data>/<task>.train.jsonl` and `<task>.valid.jsonl`, fine-tunes a fresh copy of
 * the model with the pipeline's head, and writes `<output>/<task>/results.txt` (the pipeline's
 * `metric: value` lines), `predictions.json` (the pipeline's shape, each prediction with its per-class
 * logits) and `results.json` (metrics, best epoch, every epoch's record, the settings); then
 * `<output>/results.json` over all tasks. A task without a train file (BoolQ and MultiRC in the public
 * data) is reported as skipped.
 * @module
 */
import {
  formatSeconds,
  numberOption,
  parseCommand,
  PRECISION_FLAG,
  precisionFlag,
  Progress,
  required,
  runMain,
  UsageError,
} from "./common.ts";
import { saveCheckpoint, writeFileAtomic } from "./files.ts";
import { loadModelDir } from "./lm_data.ts";
import type { Gpu } from "../shaders/gpu.ts";
import { GPU_FLAGS, openGpu } from "./gpu_options.ts";
import { GPT2 } from "../model/gpt2.ts";
import { checkHalfSupport, type Precision } from "../model/precision.ts";
import { uniformDropout } from "../model/config.ts";
import { serializeSafetensors } from "../model/safetensors.ts";
import { encodeExamples, FINETUNE_TASKS, readTaskFile, taskByName } from "../eval/finetune_data.ts";
import {
  FINETUNE_DEFAULTS,
  type FinetuneResult,
  type FinetuneSettings,
  finetuneTask,
  predictionsJson,
  resultsText,
} from "../eval/finetune.ts";
import { headStateDict } from "../eval/finetune_model.ts";
import { specialWrap } from "../eval/model.ts";

const D = FINETUNE_DEFAULTS;
const SPEC = {
  model: {
    type: "string",
    help: "Hugging Face GPT-2 directory (config.json, model.safetensors, tokenizer.json)",
  },
  data: {
    type: "string",
    help: "folder of <task>.train.jsonl / <task>.valid.jsonl (the pipeline's glue_filtered)",
  },
  tasks: {
    type: "string",
    help: `comma-separated tasks (default all: ${FINETUNE_TASKS.map((t) => t.name).join(",")})`,
  },
  output: { type: "string", help: "results folder (default results/<model folder name>/main/finetune)" },
  protocol: {
    type: "string",
    help: "2025: first token, right padding (the card's pipeline); 2026: --take-final --padding-side left",
    default: "2025",
  },
  "take-final": { type: "boolean", help: "classify from the last token (needs --padding-side left)" },
  "padding-side": { type: "string", help: "left or right (default from --protocol)" },
  positions: {
    type: "string",
    help:
      "under left padding: sequence (each text's positions from 0; default) or absolute (0..T-1 whatever " +
      "the padding, as transformers 4.51 gives GPT-2 without position ids)",
    default: D.positions,
  },
  lr: { type: "string", help: "peak learning rate", default: String(D.lr) },
  "batch-size": { type: "string", help: "training batch size (default per task: 32, BoolQ and MultiRC 16)" },
  epochs: { type: "string", help: "epochs (default per task: 10, WSC 30)" },
  steps: { type: "string", help: "optimiser steps in all instead of epochs (the schedule spans them)" },
  "warmup-proportion": {
    type: "string",
    help: "fraction of the steps in linear warm-up",
    default: String(D.warmupProportion),
  },
  "min-factor": {
    type: "string",
    help: "the cosine's floor, a fraction of the peak",
    default: String(D.minFactor),
  },
  schedule: { type: "string", help: "cosine or none", default: D.schedule },
  "weight-decay": {
    type: "string",
    help: "AdamW weight decay, on every tensor",
    default: String(D.weightDecay),
  },
  beta1: { type: "string", help: "AdamW beta1", default: String(D.beta1) },
  beta2: { type: "string", help: "AdamW beta2", default: String(D.beta2) },
  "adam-eps": { type: "string", help: "AdamW epsilon", default: String(D.adamEps) },
  "classifier-dropout": { type: "string", help: "the head's dropout", default: String(D.classifierDropout) },
  "classifier-eps": { type: "string", help: "the head's LayerNorm epsilon", default: String(D.headEps) },
  dropout: {
    type: "string",
    help: "the transformer's train-mode dropout at all sites (default: its config's)",
  },
  seed: {
    type: "string",
    help: "seed of the batch order, the head's initialisation and dropout",
    default: String(D.seed),
  },
  "sequence-length": {
    type: "string",
    help: "tokens per example after truncation",
    default: String(D.sequenceLength),
  },
  "micro-batch": {
    type: "string",
    help: "most sequences per GPU pass; larger batches run in parts with the same gradients (default: as " +
      "many as fit one storage binding)",
  },
  "valid-batch-size": { type: "string", help: "evaluation batch size", default: String(D.validBatchSize) },
  "limit-train": { type: "string", help: "use only the first N training examples (smoke runs)" },
  "limit-valid": { type: "string", help: "use only the first N validation examples (smoke runs)" },
  save: {
    type: "string",
    help:
      "write each task's fine-tuned model (Hugging Face GPT-2 folder + classifier.safetensors) under DIR/<task>",
  },
  ...PRECISION_FLAG,
  ...GPU_FLAGS,
} as const;

/** One task's line of the summary. */
export interface TaskSummary {
  task: string;
  status: "done" | "skipped" | "failed";
  metrics?: Record<string, number>;
  bestEpoch?: number;
  reason?: string;
}

const num = (v: unknown, name: string, o: { min?: number; max?: number; integer?: boolean } = {}) =>
  numberOption(v, name, o);

/** The settings the flags give. */
function settingsOf(v: Record<string, unknown>, nPositions: number): FinetuneSettings {
  const protocol = v.protocol;
  if (protocol !== "2025" && protocol !== "2026") {
    throw new UsageError(`--protocol must be 2025 or 2026, got ${protocol}`);
  }
  const side = v["padding-side"] ?? (protocol === "2026" ? "left" : "right");
  if (side !== "left" && side !== "right") {
    throw new UsageError(`--padding-side must be left or right, got ${side}`);
  }
  const last = v["take-final"] === true || (v["take-final"] === undefined && protocol === "2026");
  if (last && side !== "left") {
    throw new UsageError(
      "--take-final requires --padding-side left (with right padding the last position is padding)",
    );
  }
  if (!last && side === "left") {
    throw new UsageError(
      "--padding-side left needs --take-final: the first position of a left-padded batch is padding",
    );
  }
  const positions = v.positions;
  if (positions !== "sequence" && positions !== "absolute") {
    throw new UsageError(`--positions must be sequence or absolute, got ${positions}`);
  }
  const schedule = v.schedule;
  if (schedule !== "cosine" && schedule !== "none") {
    throw new UsageError(`--schedule must be cosine or none, got ${schedule}`);
  }
  const rate = (name: string) => {
    const p = num(v[name], name, { min: 0 });
    if (!(p < 1)) throw new UsageError(`--${name} must be in [0, 1), got ${p}`);
    return p;
  };
  const length = num(v["sequence-length"], "sequence-length", { min: 1, integer: true });
  return {
    lr: num(v.lr, "lr", { min: 0 }),
    batchSize: v["batch-size"] === undefined
      ? undefined
      : num(v["batch-size"], "batch-size", { min: 1, integer: true }),
    epochs: v.epochs === undefined ? undefined : num(v.epochs, "epochs", { min: 1, integer: true }),
    steps: v.steps === undefined ? undefined : num(v.steps, "steps", { min: 1, integer: true }),
    warmupProportion: num(v["warmup-proportion"], "warmup-proportion", { min: 0, max: 1 }),
    minFactor: num(v["min-factor"], "min-factor", { min: 0, max: 1 }),
    schedule,
    weightDecay: num(v["weight-decay"], "weight-decay", { min: 0 }),
    beta1: rate("beta1"),
    beta2: rate("beta2"),
    adamEps: num(v["adam-eps"], "adam-eps", { min: 0 }),
    classifierDropout: rate("classifier-dropout"),
    headEps: num(v["classifier-eps"], "classifier-eps", { min: 0 }),
    seed: num(v.seed, "seed", { min: 0, max: 2 ** 32 - 1, integer: true }),
    pooling: last ? "last" : "first",
    paddingSide: side,
    positions,
    // A model with fewer positions than the pipeline's 512 cannot read longer texts at all.
    sequenceLength: Math.min(length, nPositions),
    validBatchSize: num(v["valid-batch-size"], "valid-batch-size", { min: 1, integer: true }),
    transformerDropout: v.dropout === undefined ? undefined : uniformDropout(rate("dropout")),
    microBatch: v["micro-batch"] === undefined
      ? undefined
      : num(v["micro-batch"], "micro-batch", { min: 1, integer: true }),
  };
}

async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new UsageError(`cannot read ${path}: ${(e as Error).message}`);
  }
}

/** Run the command with `args`; `gpu` reuses a device (tests). Resolves with each task's summary. */
export async function main(args: string[], gpu?: Gpu): Promise<TaskSummary[]> {
  const v = parseCommand(
    "finetune",
    "Fine-tune a GPT-2 on the BabyLM (Super)GLUE tasks as the BabyLM evaluation pipeline does, on the GPU.",
    SPEC,
    args,
  );
  if (!v) return [];
  const modelDir = required(v.model, "model").replace(/\/+$/, "");
  const dataDir = required(v.data, "data").replace(/\/+$/, "");
  const tasks =
    (typeof v.tasks === "string"
      ? v.tasks.split(",").map((t) => t.trim()).filter(Boolean)
      : FINETUNE_TASKS.map((t) => t.name))
      .map((name) => {
        try {
          return taskByName(name);
        } catch (e) {
          throw new UsageError(`--tasks: ${(e as Error).message}`);
        }
      });
  const model = await loadModelDir(modelDir);
  const tok = model.tokenizer;
  if (!tok) {
    throw new UsageError(`--model ${modelDir}: no tokenizer.json (fine-tuning tokenizes the task texts)`);
  }
  // A pair is A's ids then B's only when the tokenizer adds no special tokens (GPT-2's); a template that
  // adds some would put them around and between the two, which this command does not model.
  const wrap = specialWrap(tok.toJSON(), tok.where);
  if (wrap.prefix.length > 0 || wrap.suffix.length > 0) {
    throw new UsageError(
      `${tok.where}: its post-processor adds special tokens ([${wrap.prefix}] text [${wrap.suffix}]); ` +
        `fine-tuning supports tokenizers that add none, as GPT-2's`,
    );
  }
  const { config, weights } = model.checkpoint;
  const s = settingsOf(v, config.nPositions);
  const limit = (name: "limit-train" | "limit-valid") =>
    v[name] === undefined ? Infinity : num(v[name], name, { min: 1, integer: true });
  const limitTrain = limit("limit-train"), limitValid = limit("limit-valid");
  const precision = precisionFlag(v.precision);
  const output = typeof v.output === "string"
    ? v.output.replace(/\/+$/, "")
    : `results/${modelDir.split("/").pop()}/main/finetune`;
  const device = gpu ?? await openGpu(v);
  // Refused before any task runs or anything is written.
  if (precision === "f16") checkHalfSupport(device);
  const summary: TaskSummary[] = [];
  const encode = (text: string) => tok.encode(text);
  for (const task of tasks) {
    const trainPath = `${dataDir}/${task.name}.train.jsonl`,
      validPath = `${dataDir}/${task.name}.valid.jsonl`;
    const [trainText, validText] = [await readIfPresent(trainPath), await readIfPresent(validPath)];
    if (trainText === undefined || validText === undefined) {
      const missing = trainText === undefined ? trainPath : validPath;
      console.error(`${task.name}: skipped, ${missing} not found`);
      summary.push({ task: task.name, status: "skipped", reason: `${missing} not found` });
      continue;
    }
    const train = encodeExamples(
      readTaskFile(trainText, trainPath, task).slice(0, limitTrain),
      encode,
      s.sequenceLength,
    );
    const valid = encodeExamples(
      readTaskFile(validText, validPath, task).slice(0, limitValid),
      encode,
      s.sequenceLength,
    );
    const gpt2 = GPT2.create(device, config, weights).usePrecision(precision);
    const t0 = performance.now();
    let progress: Progress | undefined;
    let result: FinetuneResult;
    try {
      result = await finetuneTask(gpt2, task, train, valid, tok.padId, s, {
        keepBest: typeof v.save === "string",
        onStep: (p) => {
          progress ??= new Progress(p.task, p.totalSteps, "step");
          const scale = p.lossScale === undefined
            ? ""
            : ` scale ${p.lossScale}${p.skipped ? " (skipped)" : ""}`;
          progress.tick(1, `epoch ${p.epoch} loss ${p.loss.toFixed(4)} lr ${p.lr.toExponential(2)}${scale}`);
        },
        onEpoch: (name, r) => {
          const m = Object.entries(r.valid).map(([k, x]) => `${k} ${x.toFixed(4)}`).join(" ");
          console.error(`\n${name} epoch ${r.epoch}: train loss ${r.trainLoss.toFixed(4)}, valid ${m}`);
        },
      });
    } catch (e) {
      progress?.end();
      gpt2.destroy();
      if (e instanceof UsageError) throw e;
      console.error(`${task.name}: failed: ${(e as Error).message}`);
      summary.push({ task: task.name, status: "failed", reason: (e as Error).message });
      continue;
    }
    progress?.end();
    gpt2.destroy();
    const dir = `${output}/${task.name}`;
    await Deno.mkdir(dir, { recursive: true });
    await writeFileAtomic(`${dir}/results.txt`, resultsText(result));
    await writeFileAtomic(`${dir}/predictions.json`, JSON.stringify(predictionsJson(result, task.numLabels)));
    const { logits: _logits, best, ...record } = result;
    await writeFileAtomic(
      `${dir}/results.json`,
      JSON.stringify(
        {
          ...record,
          model: modelDir,
          // The flags as resolved; the record above has the per-task values used (batch size, dropout).
          settings: s,
        },
        null,
        2,
      ) + "\n",
    );
    if (best && typeof v.save === "string") {
      const head = headStateDict(best.head, config.nEmbd, task.numLabels);
      await saveCheckpoint(`${v.save.replace(/\/+$/, "")}/${task.name}`, config, best.weights, {
        ...(model.tokenizerBytes ? { "tokenizer.json": model.tokenizerBytes } : {}),
        "classifier.safetensors": serializeSafetensors(head),
      });
    }
    const m = Object.entries(result.metrics).map(([k, x]) => `${k} ${x.toFixed(4)}`).join(", ");
    console.error(
      `${task.name}: ${m} (best epoch ${result.bestEpoch} by ${result.selectedBy}; ${result.steps} steps in ` +
        `${formatSeconds((performance.now() - t0) / 1000)}) -> ${dir}`,
    );
    summary.push({ task: task.name, status: "done", metrics: result.metrics, bestEpoch: result.bestEpoch });
  }
  await Deno.mkdir(output, { recursive: true });
  await writeFileAtomic(
    `${output}/results.json`,
    JSON.stringify({ model: modelDir, precision, tasks: summary }, null, 2) + "\n",
  );
  return summary;
}

if (import.meta.main) {
  await runMain(async () => {
    const summary = await main(Deno.args);
    if (summary.some((t) => t.status === "failed")) Deno.exit(1);
  });
}

/**
 * `eval --run`'s fine-tuning of one checkpoint: every task found in `dataDir` under `protocol`'s head with
 * matmuls in `precision`, results in `outDir` (reused when its results.json has every task done in the
 * same precision, unless `force`). Returns the learning-curve entries `finetune/<task>` (the task's
 * selection metric, x100, as the pipeline's tables) and the tasks that failed.
 */
export async function finetuneCheckpoint(
  modelDir: string,
  dataDir: string,
  outDir: string,
  protocol: "2025" | "2026",
  precision: Precision,
  gpu: Gpu,
  force = false,
): Promise<{ headline: Record<string, number>; failed: string[] }> {
  let summary: TaskSummary[] | undefined;
  if (!force) {
    const old = await readIfPresent(`${outDir}/results.json`);
    const record = old === undefined
      ? undefined
      : JSON.parse(old) as { precision?: Precision; tasks?: TaskSummary[] };
    // Results from before the precision was recorded are f32.
    if (
      record?.tasks && (record.precision ?? "f32") === precision &&
      record.tasks.every((t) => t.status !== "failed")
    ) summary = record.tasks;
  }
  summary ??= await main(
    [
      "--model",
      modelDir,
      "--data",
      dataDir,
      "--protocol",
      protocol,
      "--precision",
      precision,
      "--output",
      outDir,
    ],
    gpu,
  );
  const headline: Record<string, number> = {};
  for (const t of summary) {
    if (t.status === "done" && t.metrics) {
      headline[`finetune/${t.task}`] = 100 * t.metrics[taskByName(t.task).select];
    }
  }
  return {
    headline,
    failed: summary.filter((t) => t.status === "failed").map((t) => `finetune ${t.task}: ${t.reason}`),
  };
}
