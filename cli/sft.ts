/**
 * `deno task sft`: language-model training of a GPT-2 directory on JSON-lines data.
 *
 *   deno task sft --model DIR --data FILE.jsonl --out DIR [--steps N | --epochs E] [--lr 5e-5] ...
 *
 * Each line is `{"tokens": [ids]}` (used exactly as given) or `{"text": "..."}` (tokenized with the
 * model dir's tokenizer.json as [BOS] + text + [EOS]). Loss: the mean of -ln p(target) over every real
 * (non-padding) position of the batch; batches are padded with EOS to their longest sequence. Writes
 * the trained model (config.json, model.safetensors, tokenizer.json when the model has one) and
 * metrics.jsonl to --out, atomically.
 * @module
 */
import { parseCommand, required, runMain } from "./common.ts";
import {
  loadModelDir,
  type MetricsRow,
  packSequences,
  parseTrainOptions,
  readRecords,
  readSequences,
  runTraining,
  TRAIN_OPTIONS,
} from "./lm_data.ts";
import type { Gpu } from "../shaders/gpu.ts";

const SPEC = {
  ...TRAIN_OPTIONS,
  data: { type: "string", help: 'JSON lines: {"tokens": [ids]} or {"text": "..."}' },
} as const;

/** Run the command with `args`; `gpu` reuses a device (tests). Resolves with the metrics rows. */
export async function main(args: string[], gpu?: Gpu): Promise<MetricsRow[]> {
  const v = parseCommand("sft", "Language-model training (SFT) of a GPT-2 directory.", SPEC, args);
  if (!v) return [];
  const modelDir = required(v.model, "model");
  const dataPath = required(v.data, "data");
  const out = required(v.out, "out");
  const options = parseTrainOptions(v);
  const model = await loadModelDir(modelDir);
  const records = await readRecords(dataPath);
  const seqs = readSequences(records, dataPath, model, { bos: true, eos: true }, 2);
  const { eosTokenId, nPositions } = model.checkpoint.config;
  return await runTraining({
    command: "sft",
    model,
    items: seqs,
    out,
    options,
    loss: { kind: "lm" },
    pack: (batch) => packSequences(batch, eosTokenId, nPositions),
    gpu,
  });
}

if (import.meta.main) await runMain(async () => void await main(Deno.args));
