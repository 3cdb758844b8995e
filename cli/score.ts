/**
 * `deno task score`: per-token log-probabilities of sequences under a GPT-2 directory, batched on the GPU.
 *
 *   deno task score --model DIR --input FILE.jsonl [--output FILE] [--batch-size N]
 *
 * Each input line is `{"tokens": [ids]}` (used exactly as given) or `{"text": "..."}` (tokenized with
 * the model dir's tokenizer.json, BOS prepended). Each output line, in input order, is
 * `{"logprob": sum_{i=1}^{n-1} ln p(t_i | t_<i), "n": n - 1, "token_logprobs": [...]}`.
 * Without --output the lines go to stdout; with it the file is written atomically.
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
import { writeFileAtomic } from "./files.ts";
import { loadModelDir, readRecords, readSequences } from "./lm_data.ts";
import type { Gpu } from "../shaders/gpu.ts";
import { GPU_FLAGS, openGpu } from "./gpu_options.ts";
import { GPT2 } from "../model/gpt2.ts";
import { BatchScorer } from "../model/score.ts";

const SPEC = {
  model: { type: "string", help: "Hugging Face GPT-2 directory (tokenizer.json needed for text input)" },
  input: { type: "string", help: 'JSON lines: {"tokens": [ids]} or {"text": "..."}' },
  output: { type: "string", help: "output JSON-lines file (default: stdout)" },
  "batch-size": { type: "string", help: "most sequences per GPU batch", default: "32" },
  ...PRECISION_FLAG,
  ...HALF_SUMS_FLAG,
  ...GPU_FLAGS,
} as const;

/** One output line. */
export interface ScoreLine {
  logprob: number;
  n: number;
  token_logprobs: number[];
}

/** Run the command with `args`; `gpu` reuses a device (tests). Resolves with the output lines. */
export async function main(args: string[], gpu?: Gpu): Promise<ScoreLine[]> {
  const v = parseCommand(
    "score",
    "Per-token log-probabilities of sequences under a GPT-2 model.",
    SPEC,
    args,
  );
  if (!v) return [];
  const modelDir = required(v.model, "model");
  const input = required(v.input, "input");
  const batchSize = numberOption(v["batch-size"], "batch-size", { min: 1, integer: true });
  const precision = precisionFlag(v.precision);
  const halfSums = halfSumsFlag(v["half-sums"], precision);
  const model = await loadModelDir(modelDir);
  const seqs = readSequences(await readRecords(input), input, model, { bos: true, eos: false }, 0);
  const device = gpu ?? await openGpu(v);
  const scorer = new BatchScorer(
    GPT2.create(device, model.checkpoint.config, model.checkpoint.weights).usePrecision(precision, {
      halfSums,
    }),
  );
  const progress = new Progress("score", seqs.length, "seq");
  const lps = await scorer.tokenLogprobs(seqs, {
    batchSize,
    onProgress: (done) => progress.tick(done - progress.done),
  });
  progress.end();
  scorer.destroy();
  const lines = lps.map((lp) => {
    const token_logprobs = Array.from(lp);
    // Summed in float64 from the f32 values, so the sum equals the listed values' sum.
    const logprob = token_logprobs.reduce((a, b) => a + b, 0);
    return { logprob, n: lp.length, token_logprobs };
  });
  const text = lines.map((l) => JSON.stringify(l)).join("\n") + "\n";
  if (typeof v.output === "string") await writeFileAtomic(v.output, text);
  else {
    const bytes = new TextEncoder().encode(text);
    for (let at = 0; at < bytes.length;) at += await Deno.stdout.write(bytes.subarray(at));
  }
  return lines;
}

if (import.meta.main) await runMain(async () => void await main(Deno.args));
