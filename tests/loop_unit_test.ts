/**
 * The round loop's pieces against hand-computed values: the word-checkpoint schedule and names, the
 * batch layout of both phases (SFT padding rows, PO pair rows), words counting, and the losses the loop's
 * batches give on the GPU against a float64 GPT-2 (tests/reference) and against closed forms.
 */
import assert from "node:assert/strict";
import {
  checkpointName,
  checkpointSchedule,
  crossedCheckpoint,
  type InteractionRecord,
  readLog,
  roundData,
  type RunStorage,
  stepBatch,
} from "../interaction/loop.ts";
import { BABYLM_INTERACTION } from "../interaction/config.ts";
import { epochOrder } from "../interaction/step.ts";
import type { GPT2Config } from "../model/config.ts";
import { GPT2, initWeights } from "../model/gpt2.ts";
import { type Batch, type LossSpec, Trainer } from "../model/trainer.ts";
import { gpt2Ref } from "./reference/gpt2.ts";
import { lmLossRef, simpoRef } from "./reference/loss.ts";
import { assertClose, randn, testGpu } from "./util.ts";

Deno.test("checkpoint schedule: the model card's 1M/10M/100M steps, names and crossing", () => {
  const s = checkpointSchedule(BABYLM_INTERACTION.checkpointWords);
  // 1M..10M by 1M (10), 20M..100M by 10M (9), 200M..1B by 100M (9).
  assert.equal(s.length, 28);
  assert.deepEqual(s.slice(0, 11), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20].map((m) => m * 1e6));
  assert.deepEqual(s.slice(18, 20), [100e6, 200e6]);
  assert.equal(s[27], 1e9);
  assert.deepEqual(
    [1e6, 2.5e6, 10e6, 100e6, 1e9, 2e4, 1500].map(checkpointName),
    [
      "checkpoint_1M",
      "checkpoint_2.5M",
      "checkpoint_10M",
      "checkpoint_100M",
      "checkpoint_1000M",
      "checkpoint_20K",
      "checkpoint_1.5K",
    ],
  );
  // Overlapping or unsorted spans give each threshold once, ascending.
  assert.deepEqual(checkpointSchedule([[300, 100], [200, 50]]), [100, 200, 300]);
  assert.deepEqual(checkpointSchedule([[200, 50], [300, 100]]), [50, 100, 150, 200, 300]);

  // A step crossing several thresholds writes one checkpoint, named for the largest.
  const sched = [100, 200, 300];
  assert.deepEqual(crossedCheckpoint(sched, 0, 99), { next: 0, words: undefined });
  assert.deepEqual(crossedCheckpoint(sched, 0, 100), { next: 1, words: 100 });
  assert.deepEqual(crossedCheckpoint(sched, 1, 250), { next: 2, words: 200 });
  assert.deepEqual(crossedCheckpoint(sched, 0, 1000), { next: 3, words: 300 });
  assert.deepEqual(crossedCheckpoint(sched, 3, 5000), { next: 3, words: undefined });
});

const E = 9; // BOS == EOS == pad, as GPT-2's <|endoftext|>
const IDS = { bos: E, eos: E, pad: E };

/** A stored interaction with the given tokens; texts carry the word counts. */
function record(
  index: number,
  context: number[],
  student: number[],
  teacher: number[],
  texts: [string, string, string],
): InteractionRecord {
  return {
    round: 0,
    index,
    source: "s",
    context: texts[0],
    student: texts[1],
    teacher: texts[2],
    contextTokens: context,
    studentTokens: student,
    teacherTokens: teacher,
    studentFinish: "length",
  };
}

const RECORDS = [
  record(0, [1, 2], [3, 4], [5, 6], ["a b", "c", "d e f"]), //      win [E 1 2 5 6 E], lose [E 1 2 3 4 E]
  record(1, [1, 7], [3], [8], ["g", "h i", "j"]), //                  win [E 1 7 8 E],   lose [E 1 7 3 E]
  record(2, [2, 2], [4, 4], [6], ["k l m", "n", "o p q r"]), //       win [E 2 2 6 E],   lose [E 2 2 4 4 E]
];

Deno.test("round data: words per sequence and one row length for the run", () => {
  const d = roundData(RECORDS);
  assert.deepEqual(d.winWords, [2 + 3, 1 + 1, 3 + 4]);
  assert.deepEqual(d.loseWords, [2 + 1, 1 + 2, 3 + 1]);
  assert.equal(d.T, 5); // 1 + context 2 + student 2
  assert.equal(roundData(RECORDS, 7).T, 7); // 1 + contextLength + maxTokens fixes it
});

Deno.test("SFT batch: a short last batch is padded with rows that are masked everywhere", () => {
  const d = roundData(RECORDS, 6);
  const { batch, words } = stepBatch("sft", d, [2, 0], IDS, 3);
  assert.equal(batch.nSeq, 3);
  assert.equal(batch.T, 6);
  // rows: win2 [E 2 2 6 E], win0 [E 1 2 5 6 E], padding [E E]
  assert.deepEqual(Array.from(batch.inputs), [E, 2, 2, 6, E, E, E, 1, 2, 5, 6, E, E, E, E, E, E, E]);
  assert.deepEqual(Array.from(batch.targets), [2, 2, 6, E, E, E, 1, 2, 5, 6, E, E, E, E, E, E, E, E]);
  assert.deepEqual(Array.from(batch.lmMask), [0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(batch.completionMask, undefined);
  assert.equal(words, 7 + 5); // winning words of pairs 2 and 0 only
  assert.equal(batch.lmMask.reduce((a, v) => a + v, 0), 7);
});

Deno.test("PO batch: winning rows then the same pairs' losing rows, completion mask, words of both", () => {
  const d = roundData(RECORDS);
  const { batch, words } = stepBatch("po", d, [1, 0], IDS, 4);
  assert.equal(batch.nSeq, 4); // a short last batch stays short: 2 pairs
  assert.equal(batch.T, 5);
  // rows: win1 [E 1 7 8 E], win0 [E 1 2 5 6 E], lose1 [E 1 7 3 E], lose0 [E 1 2 3 4 E]
  assert.deepEqual(Array.from(batch.inputs), [E, 1, 7, 8, E, E, 1, 2, 5, 6, E, 1, 7, 3, E, E, 1, 2, 3, 4]);
  assert.deepEqual(Array.from(batch.targets), [1, 7, 8, E, E, 1, 2, 5, 6, E, 1, 7, 3, E, E, 1, 2, 3, 4, E]);
  assert.deepEqual(Array.from(batch.lmMask), [0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1]);
  // Context positions (2 each) cleared: completion tokens and the final EOS remain.
  assert.deepEqual(Array.from(batch.completionMask!), [
    0,
    0,
    1,
    1,
    0,
    0,
    0,
    1,
    1,
    1,
    0,
    0,
    1,
    1,
    0,
    0,
    0,
    1,
    1,
    1,
  ]);
  assert.equal(words, (2 + 3) + (5 + 3));
  assert.equal(batch.lmMask.reduce((a, v) => a + v, 0), 14);
});

Deno.test("epoch order: a permutation that depends only on (seed, round, phase, epoch)", () => {
  const a = epochOrder(3, 10, 1, "sft", 2);
  assert.deepEqual([...a].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(epochOrder(3, 10, 1, "sft", 2), a);
  assert.notDeepEqual(epochOrder(3, 10, 1, "sft", 3), a);
  assert.notDeepEqual(epochOrder(3, 10, 1, "po", 2), a);
});

const CONFIG: GPT2Config = {
  vocabSize: 11,
  nPositions: 8,
  nEmbd: 16,
  nLayer: 1,
  nHead: 2,
  layerNormEpsilon: 1e-5,
  bosTokenId: E,
  eosTokenId: E,
};

/** Seeded weights with a spread large enough that log-probs differ visibly between tokens. */
function weights(): Map<string, Float32Array> {
  const w = initWeights(CONFIG, 5);
  let k = 0;
  for (const [name, t] of w) {
    if (name.includes("ln")) continue;
    const r = randn(t.length, 100 + k++, 0.3);
    for (let i = 0; i < t.length; i++) t[i] = r[i];
  }
  return w;
}

/** ln p(target) per row of `batch` from the float64 GPT-2. */
function refLogProbs(w: Map<string, Float32Array>, b: Batch): Float64Array {
  return gpt2Ref(CONFIG, w, b.inputs, b.targets, b.lmMask, b.nSeq, b.T, []).lp;
}

Deno.test("GPU losses on the loop's batches match float64; SFT padding rows change nothing", async () => {
  const gpu = await testGpu();
  const w = weights();
  const model = GPT2.create(gpu, CONFIG, w);
  const trainer = new Trainer(model);
  const d = roundData(RECORDS, 6);

  // SFT: [2, 0] padded to 3 rows vs the same two rows alone.
  const padded = stepBatch("sft", d, [2, 0], IDS, 3).batch;
  const alone = stepBatch("sft", d, [2, 0], IDS, 2).batch;
  const lm: LossSpec = { kind: "lm" };
  const mPad = await trainer.computeGradients(padded, lm);
  const gPad = await trainer.getGradients();
  const mAlone = await trainer.computeGradients(alone, lm);
  const gAlone = await trainer.getGradients();
  const lpAlone = refLogProbs(w, alone);
  assertClose("sft lm loss vs float64", [mPad.lmLoss], [lmLossRef(lpAlone, alone.lmMask, alone.T, 2)], {
    rtol: 1e-5,
  });
  assertClose("sft lm loss padded vs not", [mPad.lmLoss], [mAlone.lmLoss], { rtol: 1e-6 });
  for (const [name, g] of gAlone) {
    assertClose(`sft grad ${name} padded vs not`, gPad.get(name)!, g, { rtol: 1e-5, atol: 1e-7 });
  }

  // PO: SimPO + lambda * LM over 3 pairs.
  const po = stepBatch("po", d, [0, 1, 2], IDS, 3).batch;
  const spec: LossSpec = { kind: "simpo", beta: 2, gamma: 1, lmWeight: 0.2 };
  const m = await trainer.computeGradients(po, spec);
  const lp = refLogProbs(w, po);
  const ref = simpoRef(lp, po.completionMask!, 3, po.T, 2, 1);
  const lmRef = lmLossRef(lp, po.lmMask, po.T, 3);
  assertClose(
    "po simpo/lm/chosen/rejected/margin",
    [m.simpoLoss!, m.lmLoss, m.chosenReward!, m.rejectedReward!, m.margin!],
    [ref.loss, lmRef, ref.chosen, ref.rejected, ref.margin],
    { rtol: 1e-5, atol: 1e-6 },
  );
  assertClose("po win rate", [m.winRate!], [ref.winRate], { rtol: 1e-6 });
  assertClose("po total loss", [m.loss], [ref.loss + 0.2 * lmRef], { rtol: 1e-5 });
});

Deno.test("closed forms: a model that predicts uniformly gives LM = ln V and SimPO = ln(1 + e^gamma)", async () => {
  const gpu = await testGpu();
  // Zero weights (LayerNorm gains 1): every hidden state is 0, so logits are 0 and p = 1/V everywhere.
  const w = initWeights(CONFIG, 1);
  for (const [name, t] of w) t.fill(name.includes("ln") && name.endsWith("weight") ? 1 : 0);
  const trainer = new Trainer(GPT2.create(gpu, CONFIG, w));
  const d = roundData(RECORDS, 6);
  const lnV = Math.log(CONFIG.vocabSize);
  const sft = await trainer.computeGradients(stepBatch("sft", d, [1], IDS, 3).batch, { kind: "lm" });
  assertClose("uniform sft lm loss = ln V", [sft.lmLoss], [lnV], { rtol: 1e-6 });
  const beta = 2, gamma = 1;
  const po = await trainer.computeGradients(stepBatch("po", d, [0, 2], IDS, 2).batch, {
    kind: "simpo",
    beta,
    gamma,
    lmWeight: 0.2,
  });
  // Rewards beta * mean ln p = -beta ln V for both; margin 0; loss -ln sigmoid(0 - gamma) = ln(1 + e^gamma).
  assertClose(
    "uniform po: chosen, rejected, margin, simpo, total",
    [po.chosenReward!, po.rejectedReward!, po.margin!, po.simpoLoss!, po.loss],
    [-beta * lnV, -beta * lnV, 0, Math.log(1 + Math.E), Math.log(1 + Math.E) + 0.2 * lnV],
    { rtol: 1e-6, atol: 1e-6 },
  );
});

/** The text files of a run in memory (models are not needed here). */
function memoryStorage(files: Record<string, string>): RunStorage {
  return {
    readText: (p) => Promise.resolve(files[p]),
    writeText: (p, t) => Promise.resolve(void (files[p] = t)),
    appendText: (p, t) => Promise.resolve(void (files[p] = (files[p] ?? "") + t)),
    saveModel: () => Promise.reject(new Error("not in this test")),
    readBytes: () => Promise.resolve(undefined),
  };
}

Deno.test("append logs: a line cut by a kill is dropped and the file repaired; corruption names its line", async () => {
  const files: Record<string, string> = { "m.jsonl": '{"a":1}\n\n{"a":2}\n{"a":' };
  const storage = memoryStorage(files);
  const got = await readLog<{ a: number }>(storage, "m.jsonl");
  assert.deepEqual(got.map((l) => l.value), [{ a: 1 }, { a: 2 }]);
  assert.deepEqual(got.map((l) => l.text), ['{"a":1}', '{"a":2}']);
  assert.deepEqual(got.map((l) => l.line), [1, 3]);
  assert.equal(files["m.jsonl"], '{"a":1}\n\n{"a":2}\n');
  // The next append starts on a line of its own.
  await storage.appendText("m.jsonl", '{"a":3}\n');
  assert.deepEqual((await readLog<{ a: number }>(storage, "m.jsonl")).map((l) => l.value.a), [1, 2, 3]);
  assert.deepEqual(await readLog(storage, "absent.jsonl"), []);
  files["bad.jsonl"] = '{"a":1}\nnot json\n{"a":2}\n';
  await assert.rejects(readLog(storage, "bad.jsonl"), /bad\.jsonl:2: not valid JSON/);
});
