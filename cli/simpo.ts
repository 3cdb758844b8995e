/**
 * `deno task simpo`: preference training (SimPO + lambda * LM) of a GPT-2 directory.
 *
 *   deno task simpo --model DIR --pairs FILE.jsonl --out DIR [--beta 2] [--gamma 1] [--lambda 0.2] ...
 *
 * Each line is `{"prompt": [ids], "chosen": [ids], "rejected": [ids]}` (ids used exactly as given) or
 * the same keys as text (prompt tokenized as [BOS] + text, completions as text + [EOS]). Each sequence
 * is prompt + completion; rewards r = beta * mean ln p over the completion's predictions; loss =
 * -mean log sigmoid(r_chosen - r_rejected - gamma) + lambda * (LM loss of the chosen sequences).
 * Writes the trained model and metrics.jsonl (with chosen/rejected rewards, margin, win rate) to --out.
 * @module
 */
import { numberOption, parseCommand, required, runMain } from "./common.ts";
import {
  loadModelDir,
  type MetricsRow,
  packPairs,
  parseTrainOptions,
  readPairs,
  readRecords,
  runTraining,
  TRAIN_OPTIONS,
} from "./lm_data.ts";
import type { Gpu } from "../shaders/gpu.ts";

const SPEC = {
  ...TRAIN_OPTIONS,
  "batch-size": { type: "string", help: "pairs per step", default: "16" },
  pairs: { type: "string", help: 'JSON lines: {"prompt", "chosen", "rejected"}, each ids or text' },
  beta: { type: "string", help: "SimPO reward scale", default: "2" },
  gamma: { type: "string", help: "SimPO target margin", default: "1" },
  lambda: { type: "string", help: "weight of the LM loss of the chosen sequences", default: "0.2" },
} as const;

/** Run the command with `args`; `gpu` reuses a device (tests). Resolves with the metrics rows. */
export async function main(args: string[], gpu?: Gpu): Promise<MetricsRow[]> {
  const v = parseCommand(
    "simpo",
    "Preference training (SimPO + lambda * LM) of a GPT-2 directory.",
    SPEC,
    args,
  );
  if (!v) return [];
  const modelDir = required(v.model, "model");
  const pairsPath = required(v.pairs, "pairs");
  const out = required(v.out, "out");
  const options = parseTrainOptions(v);
  const loss = {
    kind: "simpo" as const,
    beta: numberOption(v.beta, "beta", { min: 0 }),
    gamma: numberOption(v.gamma, "gamma"),
    lmWeight: numberOption(v.lambda, "lambda", { min: 0 }),
  };
  const model = await loadModelDir(modelDir);
  const pairs = readPairs(await readRecords(pairsPath), pairsPath, model);
  const { eosTokenId, nPositions } = model.checkpoint.config;
  return await runTraining({
    command: "simpo",
    model,
    items: pairs,
    out,
    options,
    loss,
    pack: (batch) => packPairs(batch, eosTokenId, nPositions),
    extra: (m) => ({
      lm_loss: m.lmLoss,
      simpo_loss: m.simpoLoss!,
      chosen_reward: m.chosenReward!,
      rejected_reward: m.rejectedReward!,
      margin: m.margin!,
      win_rate: m.winRate!,
    }),
    gpu,
  });
}

if (import.meta.main) await runMain(async () => void await main(Deno.args));
