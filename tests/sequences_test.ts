/** Sequences and masks against hand-written expected arrays (GPT-2-style BOS == EOS == pad). */
import assert from "node:assert/strict";
import { buildLmBatch, buildPreferenceBatch, losingTokens, winningTokens } from "../interaction/sequences.ts";

const E = 9; // BOS == EOS == pad, as GPT-2's <|endoftext|>
const ids = { bos: E, eos: E };

Deno.test("winning/losing tokens: teacher cut to the student's length", () => {
  const item = { context: [1, 2], teacher: [5, 6, 7, 8], student: [3, 4] };
  assert.deepEqual(winningTokens(item, ids), [E, 1, 2, 5, 6, E]);
  assert.deepEqual(losingTokens(item, ids), [E, 1, 2, 3, 4, E]);
  // A short teacher answer is not padded.
  assert.deepEqual(winningTokens({ ...item, teacher: [5] }, ids), [E, 1, 2, 5, E]);
});

Deno.test("preference batch: layout, padding and both masks by hand", () => {
  const items = [
    { context: [1, 2], teacher: [5, 6, 7], student: [3, 4] }, // win [E 1 2 5 6 E], lose [E 1 2 3 4 E]
    { context: [1], teacher: [8], student: [3, 4, 2] }, //       win [E 1 8 E],     lose [E 1 3 4 2 E]
  ];
  const b = buildPreferenceBatch(items, ids);
  assert.equal(b.nPairs, 2);
  assert.equal(b.nSeq, 4);
  assert.equal(b.T, 5);
  // rows: win0, win1, lose0, lose1
  assert.deepEqual(Array.from(b.inputs), [E, 1, 2, 5, 6, E, 1, 8, E, E, E, 1, 2, 3, 4, E, 1, 3, 4, 2]);
  assert.deepEqual(Array.from(b.targets), [1, 2, 5, 6, E, 1, 8, E, E, E, 1, 2, 3, 4, E, 1, 3, 4, 2, E]);
  assert.deepEqual(Array.from(b.lmMask), [0, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1]);
  // Completion: clear the first len(context) positions: 2 for pair 0, 1 for pair 1.
  assert.deepEqual(Array.from(b.completionMask), [
    0,
    0,
    1,
    1,
    1,
    0,
    1,
    1,
    0,
    0,
    0,
    0,
    1,
    1,
    1,
    0,
    1,
    1,
    1,
    1,
  ]);
  assert.deepEqual(b.lengths, [6, 4, 6, 6]);
  // The completion mask covers exactly the completion tokens and the final EOS as targets.
  const won = [...b.targets.subarray(0, 5)].filter((_, t) => b.completionMask[t] === 1);
  assert.deepEqual(won, [5, 6, E]);
});

Deno.test("fixed T, distinct pad id, length masks and errors", () => {
  const b = buildLmBatch([[7, 1, 2, 8]], { bos: 7, eos: 8, pad: 0 }, { T: 5 });
  assert.deepEqual(Array.from(b.inputs), [7, 1, 2, 0, 0]);
  assert.deepEqual(Array.from(b.targets), [1, 2, 8, 0, 0]);
  assert.deepEqual(Array.from(b.lmMask), [1, 1, 1, 0, 0]);
  const g = buildLmBatch([[E, 1, E], [E, 2, 3, E]], ids, { mask: "length" });
  assert.deepEqual(Array.from(g.lmMask), [1, 1, 0, 1, 1, 1]);
  assert.throws(
    () => buildLmBatch([[1, 2, 3]], ids, { T: 1 }),
    /T must be an integer >= the longest row's 2/,
  );
  assert.throws(() => buildLmBatch([[1]], ids), /row 0 has 1 tokens/);
});
