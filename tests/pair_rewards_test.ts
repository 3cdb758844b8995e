/**
 * The per-pair SimPO rewards a run writes (`interactions/round_N.rewards.jsonl`) are the ones its loss
 * used: a tiny two-round run whose SimPO epoch is one batch of every pair, so that step's weights are the
 * `round{r}_sft` checkpoint; the same batch scored in float64 from those weights (tests/reference) gives
 * every pair's chosen and rejected reward, which the file must hold for the right datapoint.
 */
import assert from "node:assert/strict";
import { TINY, type TrainConfig } from "../interaction/config.ts";
import {
  type InteractionRecord,
  type MetricsRecord,
  type PairRewardRecord,
  roundData,
  runInteraction,
  type RunStorage,
  stepBatch,
} from "../interaction/loop.ts";
import { prepareRun } from "../interaction/prepare.ts";
import { epochOrder } from "../interaction/step.ts";
import { CorpusTeacher } from "../interaction/teacher.ts";
import { parseWordMeasure } from "../interaction/words.ts";
import { gpt2Ref } from "./reference/gpt2.ts";
import { simpoRef } from "./reference/loss.ts";
import { assertClose, testGpu } from "./util.ts";
import { MemoryStorage } from "../demo/memory_storage.ts";

const P = 6;
const CONFIG: TrainConfig = {
  ...TINY,
  seed: 5,
  architecture: { nLayer: 1, nHead: 2, nEmbd: 32, nPositions: 32 },
  vocabSize: 300,
  corpus: { kind: "embedded", words: 4000 },
  numRounds: 2,
  datapointLength: 24,
  contextLength: 12,
  maxDatapointsPerRound: P,
  student: { ...TINY.student, minTokens: 5, maxTokens: 6, batchSize: P },
  nSftEpochs: 1,
  nPoEpochs: 1,
  batchSize: P,
  lr: 1e-2,
  warmupSteps: 1,
  totalSteps: 20,
  checkpointWords: [[1e6, 1e6]],
};

/** A run directory in memory that keeps the weights of every saved model. */
function storage(): {
  storage: RunStorage;
  files: Map<string, string>;
  models: Map<string, Map<string, Float32Array>>;
} {
  const files = new Map<string, string>();
  const models = new Map<string, Map<string, Float32Array>>();
  return {
    files,
    models,
    storage: {
      readText: (p) => Promise.resolve(files.get(p)),
      writeText: (p, t) => Promise.resolve(void files.set(p, t)),
      appendText: (p, t) => Promise.resolve(void files.set(p, (files.get(p) ?? "") + t)),
      saveModel: (p, _c, w) =>
        Promise.resolve(void models.set(p, new Map([...w].map(([k, v]) => [k, v.slice()])))),
      readBytes: () => Promise.resolve(undefined),
    },
  };
}

function lines<T>(text: string | undefined): T[] {
  return (text ?? "").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as T);
}

Deno.test("pair rewards in the round files equal a float64 SimPO reward of the step's batch", async () => {
  const gpu = await testGpu();
  const inputs = await prepareRun(CONFIG, () => new CorpusTeacher());
  const run = storage();
  await runInteraction(CONFIG, inputs, { gpu, storage: run.storage });
  const { tokenizer, modelConfig } = inputs;
  const ids = { bos: tokenizer.bosId, eos: tokenizer.eosId, pad: tokenizer.padId };
  const metrics = lines<MetricsRecord>(run.files.get("metrics.jsonl"));
  const beta = CONFIG.simpoBeta;
  for (let r = 0; r < CONFIG.numRounds; r++) {
    const records = lines<InteractionRecord>(run.files.get(`interactions/round_${r}.jsonl`));
    const rewards = lines<PairRewardRecord>(run.files.get(`interactions/round_${r}.rewards.jsonl`));
    const po = metrics.filter((m) => m.round === r && m.phase === "po");
    assert.equal(po.length, 1, "one SimPO step a round");
    assert.deepEqual(
      rewards.map(({ round, epoch, batch, step }) => ({ round, epoch, batch, step })),
      Array(P).fill({ round: r, epoch: 0, batch: 0, step: po[0].step }),
    );

    // The step's batch as the loop builds it, scored in float64 with the weights it was taken from.
    const data = roundData(
      records,
      1 + CONFIG.contextLength + CONFIG.student.maxTokens,
      parseWordMeasure(CONFIG.wordMeasure),
    );
    const order = epochOrder(CONFIG.seed, records.length, r, "po", 0);
    const { batch } = stepBatch("po", data, order, ids, CONFIG.batchSize);
    const weights = run.models.get(`checkpoints/round${r + 1}_sft`)!;
    const lp =
      gpt2Ref(modelConfig, weights, batch.inputs, batch.targets, batch.lmMask, batch.nSeq, batch.T, []).lp;
    const ref = simpoRef(lp, batch.completionMask!, P, batch.T, beta, beta * CONFIG.simpoGammaRatio);
    assert.deepEqual(rewards.map((l) => l.index), order, "pairs in batch order, by datapoint");
    assertClose(`round ${r + 1} chosen rewards`, rewards.map((l) => l.chosen), ref.rewards.slice(0, P), {
      rtol: 1e-4,
      atol: 1e-5,
    });
    assertClose(`round ${r + 1} rejected rewards`, rewards.map((l) => l.rejected), ref.rewards.slice(P), {
      rtol: 1e-4,
      atol: 1e-5,
    });
    for (const l of rewards) assert.equal(l.margin, l.chosen - l.rejected);
    // The batch means in metrics.jsonl come from the same per-pair values.
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    assertClose(`round ${r + 1} mean chosen, rejected`, [po[0].chosenReward!, po[0].rejectedReward!], [
      mean(rewards.map((l) => l.chosen)),
      mean(rewards.map((l) => l.rejected)),
    ], { rtol: 1e-6, atol: 1e-6 });
  }
});

Deno.test("resume mid SimPO epoch: the rewards of steps before the saved state stay, later ones are redone", async () => {
  const gpu = await testGpu();
  // Two SimPO batches a round and a word checkpoint (so a saved state) after every step.
  const config: TrainConfig = { ...CONFIG, numRounds: 1, batchSize: P / 2, checkpointWords: [[20_000, 1]] };
  const inputs = await prepareRun(config, () => new CorpusTeacher());
  const straight = new MemoryStorage({ keepWeights: true });
  await runInteraction(config, inputs, { gpu, storage: straight });

  // A kill after the second SimPO step appended its rewards, before the state after it was saved: the
  // saved state points at that step (batch 1), so batch 0's rewards stay and batch 1's are written again.
  const killed = new MemoryStorage({ keepWeights: true });
  let last: MetricsRecord | undefined;
  const events = {
    onMetrics: (m: MetricsRecord) => void (last = m),
    onCheckpoint: () => {
      if (last?.phase === "po" && last.epoch === 0 && last.step === lastStep(straight, 0)) {
        throw new Error("kill");
      }
    },
  };
  await assert.rejects(runInteraction(config, inputs, { gpu, storage: killed, events }), /kill/);
  const path = "interactions/round_0.rewards.jsonl";
  const before = lines<PairRewardRecord>(await killed.readText(path));
  assert.deepEqual(before.map((l) => l.batch), [0, 0, 0, 1, 1, 1], "both batches' rewards before the resume");
  await killed.appendText(path, '{"round":0,"in');
  const state = JSON.parse((await killed.readText("state/state.json"))!);
  assert.deepEqual([state.phase, state.epoch, state.batch], ["po", 0, 1]);
  await runInteraction(config, inputs, { gpu, storage: killed });
  assert.equal(await killed.readText(path), await straight.readText(path));
  const steps = async (s: MemoryStorage) =>
    lines<MetricsRecord>(await s.readText("metrics.jsonl")).map(({ time: _t, tokensPerSec: _s, ...m }) => m);
  assert.deepEqual(await steps(killed), await steps(straight));
});

/** The step of round `round`'s second SimPO batch in a finished run. */
function lastStep(s: MemoryStorage, round: number): number {
  const text = s.runFiles().get("metrics.jsonl") as string;
  return lines<MetricsRecord>(text).filter((m) => m.round === round && m.phase === "po")[1].step;
}
