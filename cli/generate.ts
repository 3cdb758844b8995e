/**
 * `deno task generate`: continue contexts with a model on the GPU (KV-cached, sampled on the device).
 *
 *   deno task generate --model runs/x/final --input prompts.jsonl --output out.jsonl --max-tokens 64
 *
 * Input lines: `{"tokens": [ids...]}` (used as given) or `{"text": "..."}` (encoded with the model
 * directory's tokenizer.json, BOS prepended). Output, one line per input line in order:
 * `{"tokens": [new ids], "text": "...", "finish_reason": "length" | "stop"}`; `text` (the decoded new
 * tokens) is there when the model directory has a tokenizer.json. The i-th context draws from the random
 * stream (seed, i), so its output does not depend on the other lines or on --batch-size.
 * @module
 */
import {
  HALF_SUMS_FLAG,
  halfSumsFlag,
  numberOption,
  parseCommand,
  PRECISION_FLAG,
  precisionFlag,
  Progress,
  required,
  runMain,
} from "./common.ts";
import { describeLine, GPU_FLAGS, openGpu } from "./gpu_options.ts";
import { GPT2 } from "../model/gpt2.ts";
import { generate } from "../model/generate.ts";
import { writeFileAtomic } from "./files.ts";
import { loadModelDir, readRecords, readSequences } from "./lm_data.ts";

const SUMMARY = "Continue each context of a JSON-lines file with a model (KV-cached, sampled on the GPU).\n" +
  'Input lines: {"tokens": [...]} or {"text": "..."} (tokenized with the model\'s tokenizer.json, BOS\n' +
  'prepended). Output lines: {"tokens": [...], "text": "...", "finish_reason": "length" | "stop"}.';

const SPEC = {
  model: {
    type: "string",
    help: "model directory (config.json, model.safetensors; tokenizer.json for text)",
  },
  input: { type: "string", help: "JSON-lines file of contexts" },
  output: { type: "string", help: "output JSON-lines file, written atomically (default: stdout)" },
  "max-tokens": { type: "string", help: "new tokens per context, at most", default: "64" },
  "min-tokens": { type: "string", help: "end-of-sequence is suppressed before this many", default: "0" },
  temperature: { type: "string", help: "softmax temperature; 0 = greedy", default: "1" },
  "top-p": { type: "string", help: "nucleus mass in (0, 1]; 1 = off", default: "1" },
  "top-k": { type: "string", help: "keep the k most likely tokens; 0 = off", default: "0" },
  seed: { type: "string", help: "random seed", default: "0" },
  "batch-size": { type: "string", help: "most sequences per GPU batch", default: "64" },
  ...PRECISION_FLAG,
  ...HALF_SUMS_FLAG,
  ...GPU_FLAGS,
} as const;

/** The command, on `args`; throws UsageError for user mistakes. Writes output lines to `--output` or stdout. */
export async function runGenerate(args: string[]): Promise<void> {
  const o = parseCommand("generate", SUMMARY, SPEC, args);
  if (!o) return;
  const modelPath = required(o.model, "model").replace(/\/+$/, "");
  const input = required(o.input, "input");
  const maxTokens = numberOption(o["max-tokens"], "max-tokens", { min: 1, integer: true });
  const minTokens = numberOption(o["min-tokens"], "min-tokens", { min: 0, max: maxTokens, integer: true });
  const temperature = numberOption(o.temperature, "temperature", { min: 0 });
  const topP = numberOption(o["top-p"], "top-p", { min: Number.MIN_VALUE, max: 1 });
  const topK = numberOption(o["top-k"], "top-k", { min: 0, integer: true });
  const seed = numberOption(o.seed, "seed", { min: 0, max: 2 ** 32 - 1, integer: true });
  const batchSize = numberOption(o["batch-size"], "batch-size", { min: 1, integer: true });
  const precision = precisionFlag(o.precision);
  const halfSums = halfSumsFlag(o["half-sums"], precision);

  const modelDir = await loadModelDir(modelPath);
  const { config, weights } = modelDir.checkpoint;
  // A context and its new tokens share the model's positions.
  const limit = {
    max: config.nPositions - maxTokens,
    reason: `with --max-tokens ${maxTokens} the model's ${config.nPositions} positions allow at most ${
      config.nPositions - maxTokens
    }`,
  };
  const contexts = readSequences(
    await readRecords(input),
    input,
    modelDir,
    { bos: true, eos: false },
    1,
    limit,
  );
  const tok = modelDir.tokenizer;

  const gpu = await openGpu(o, { quiet: true });
  const model = GPT2.create(gpu, config, weights).usePrecision(precision, { halfSums });
  console.error(
    `generate: ${contexts.length} contexts, up to ${maxTokens} tokens each, ${model.precision}${
      halfSums ? " halfSums" : ""
    }; ${describeLine(gpu.describe())}`,
  );
  const progress = new Progress("generate", contexts.length * maxTokens, "tok");
  const start = performance.now();
  const results = await generate(model, contexts, {
    maxTokens,
    minTokens,
    temperature,
    topP,
    topK,
    seed,
    batchSize,
    onProgress: (done) => progress.tick(done - progress.done),
  });
  progress.end();
  const secs = (performance.now() - start) / 1000;
  const made = results.reduce((n, r) => n + r.tokens.length, 0);
  console.error(
    `generate: ${made} new tokens in ${secs.toFixed(1)} s (${
      (made / Math.max(secs, 1e-9)).toFixed(1)
    } tokens/s)`,
  );

  const lines = results.map((r) =>
    JSON.stringify({
      tokens: r.tokens,
      ...(tok ? { text: tok.decode(r.tokens) } : {}),
      finish_reason: r.finishReason,
    })
  );
  const text = lines.join("\n") + (lines.length > 0 ? "\n" : "");
  if (typeof o.output === "string" && o.output !== "") {
    await writeFileAtomic(o.output, text);
    console.error(`generate: wrote ${results.length} lines to ${o.output}`);
  } else {
    const bytes = new TextEncoder().encode(text);
    for (let at = 0; at < bytes.length;) at += await Deno.stdout.write(bytes.subarray(at));
  }
}

if (import.meta.main) await runMain(() => runGenerate(Deno.args));
