/**
 * Word accounting and the 2026 limits, as pure functions: tallies add up, the trained words equal what
 * the loop's steps add to wordsSeen, a round that would pass wordBudget or maxEpochs is refused with a
 * message naming the count and the limit, and the end-of-round summary.
 */
import assert from "node:assert/strict";
import {
  addTally,
  budgetProblem,
  type BudgetRules,
  budgetSummary,
  corpusTally,
  roundTally,
  trainingDataWords,
  validateBudget,
  zeroTally,
} from "../interaction/budget.ts";
import type { Datapoint } from "../interaction/corpus.ts";

/** Token ids are word indices into this list: decode joins them with spaces. */
const WORDS = ["the", "cat", "sat", "on", "a", "mat", "小猫在花园里"];
const decode = (ids: number[]) => ids.map((i) => WORDS[i]).join(" ");
const point = (context: number[], continuation: number[]): Datapoint => ({
  source: "s",
  chunk: 0,
  index: 0,
  context: Uint32Array.from(context),
  continuation: Uint32Array.from(continuation),
});

const RULES: BudgetRules = { wordBudget: 100, budgetCounts: ["corpusContext", "teacher"], maxEpochs: 10 };

Deno.test("tallies: corpus words from decoded datapoints, generations, trained words as the steps add them", () => {
  const points = [point([0, 1, 2], [3, 4, 5]), point([0, 1], [6])];
  const corpus = corpusTally(points, decode);
  assert.deepEqual(corpus, { corpusContext: 5, corpusContinuation: 4 });
  const bytes = corpusTally(points, decode, { kind: "bytes", language: "zho" });
  assert.ok(Math.abs(bytes.corpusContinuation - (8 + 18) / (5.43 * 0.9893825)) < 1e-12, "Chinese by bytes");
  const texts = [{ student: "cat sat sat", teacher: "the cat sat down" }, {
    student: "mat",
    teacher: "a mat",
  }];
  // Winning = context + teacher words, losing = context + student words.
  const win = [3 + 4, 2 + 2], lose = [3 + 3, 2 + 1];
  const t = roundTally(corpus, texts, { win, lose }, { sft: 8, po: 2 });
  assert.deepEqual(t, {
    corpusContext: 5,
    corpusContinuation: 4,
    student: 4,
    teacher: 6,
    trained: 8 * 11 + 2 * (11 + 9),
    trainedDistinct: 20,
  });
  assert.equal(
    roundTally(corpus, texts, { win, lose }, { sft: 3, po: 0 }).trainedDistinct,
    11,
    "no po: win only",
  );
  const two = addTally(t, t);
  assert.equal(two.trained, 2 * t.trained);
  assert.equal(trainingDataWords(two, RULES), 2 * (5 + 6));
  assert.equal(trainingDataWords(two, { ...RULES, budgetCounts: ["corpusContinuation", "student"] }), 16);
  assert.deepEqual(addTally(zeroTally(), t), t);
});

Deno.test("limits: the count that would pass the budget and the epochs past maxEpochs are named", () => {
  const total = { ...zeroTally(), corpusContext: 40, teacher: 45 };
  const round = { ...zeroTally(), corpusContext: 8, teacher: 7, student: 50 };
  assert.equal(
    budgetProblem(RULES, 2, total, round, { sft: 8, po: 2 }, "projected"),
    undefined,
    "100 fits 100",
  );
  const over = { ...round, teacher: 8 };
  assert.equal(
    budgetProblem(RULES, 2, total, over, { sft: 8, po: 2 }, "projected"),
    "round 3 would bring the budgeted words (corpusContext + teacher) to 101 (101): 85 so far + 8 corpusContext " +
      "+ 8 teacher (projected), past wordBudget 100 (100)",
  );
  assert.match(
    budgetProblem({ ...RULES, budgetCounts: ["corpusContext", "teacher", "student"] }, 0, total, round, {
      sft: 8,
      po: 2,
    }, "exact")!,
    /\(corpusContext \+ teacher \+ student\) to 150 .* \+ 50 student \(exact\), past wordBudget 100/,
  );
  assert.equal(
    budgetProblem(RULES, 0, zeroTally(), zeroTally(), { sft: 9, po: 2 }, "projected"),
    "round 1 would train 11 epochs over its data (nSftEpochs 9 + nPoEpochs 2), past maxEpochs 10",
  );
  assert.equal(
    budgetProblem(
      { wordBudget: 0, budgetCounts: [], maxEpochs: 0 },
      0,
      total,
      over,
      { sft: 99, po: 9 },
      "exact",
    ),
    undefined,
    "0 means no limit",
  );
  assert.throws(
    () => validateBudget({ ...RULES, budgetCounts: ["teacher", "words" as never] }),
    /"budgetCounts"/,
  );
  assert.throws(() => validateBudget({ ...RULES, budgetCounts: [] }), /at least one count/);
  assert.throws(() => validateBudget({ ...RULES, maxEpochs: 2.5 }), /"maxEpochs" must be an integer/);
  assert.throws(() => validateBudget({ ...RULES, wordBudget: -1 }), /"wordBudget" must be a number >= 0/);
});

Deno.test("the end-of-round summary: record and text", () => {
  const r = {
    corpusContext: 4e6,
    corpusContinuation: 4.1e6,
    student: 3.9e6,
    teacher: 3.8e6,
    trained: 7e7,
    trainedDistinct: 8e6,
  };
  const { record, text } = budgetSummary(RULES, 1, 321, r, addTally(r, r), 10);
  assert.equal(record.budgetedWords, 2 * 7.8e6);
  assert.equal(record.repetition, 70 / 8);
  assert.deepEqual([record.round, record.step, record.epochs, record.maxEpochs], [1, 321, 10, 10]);
  assert.match(
    text,
    /^words after round 2: corpus 8M context \+ 8\.2M continuation, student 7\.8M, teacher 7\.6M/,
  );
  assert.match(text, /budgeted \(corpusContext \+ teacher\) 15\.6M of 100 \(15600000\.0%\)/);
  assert.match(text, /epochs 10 of 10 per round, repetition 8\.75x$/);
});
