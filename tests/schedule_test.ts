/** The one learning-rate schedule (every command's) against transformers' formulas and their values. */
import assert from "node:assert/strict";
import { learningRate, lrFactor } from "../interaction/schedule.ts";

const close = (a: number, b: number, what: string) =>
  assert.ok(Math.abs(a - b) <= 1e-15 + 1e-12 * Math.abs(b), `${what}: ${a} vs ${b}`);

Deno.test("cosine with warm-up: the baseline's 2000 / 200000 steps at known points", () => {
  const c = { kind: "cosine" as const, lr: 5e-5, warmupSteps: 2000, totalSteps: 200_000 };
  close(learningRate(c, 0), 0, "step 0");
  close(learningRate(c, 1), 5e-5 / 2000, "step 1");
  close(learningRate(c, 1000), 2.5e-5, "half warm-up");
  close(learningRate(c, 2000), 5e-5, "peak");
  // Half-way through the decay: cos(pi/2) = 0 -> factor 0.5.
  close(lrFactor(c, 2000 + 99_000), 0.5, "middle");
  // A quarter: 0.5 (1 + cos(pi/4)) = 0.5 + sqrt(2)/4.
  close(lrFactor(c, 2000 + 49_500), 0.5 + Math.SQRT2 / 4, "quarter");
  close(lrFactor(c, 200_000), 0, "end");
  // transformers does not clamp the progress: past the end the cosine rises again.
  close(lrFactor(c, 250_000), 0.5 * (1 + Math.cos(Math.PI * 248_000 / 198_000)), "past the end");
});

Deno.test("cosine: transformers' get_cosine_schedule_with_warmup values, rising again past totalSteps", () => {
  // lr * lambda(step) for W = 4, N = 20, lr = 1e-3, printed by Python from transformers' lr_lambda:
  //   step < W: step / max(1, W); else max(0, 0.5 * (1 + cos(pi * 0.5 * 2 * (step - W) / max(1, N - W))))
  const want: Array<[number, number]> = [
    [0, 0],
    [1, 0.00025],
    [3, 0.00075],
    [4, 0.001],
    [5, 0.0009903926402016153],
    [10, 0.000691341716182545],
    [19, 9.607359798384786e-06],
    [20, 0],
    [21, 9.607359798384786e-06],
    [28, 0.0004999999999999999],
    [30, 0.0006913417161825451],
    [36, 0.001],
    [40, 0.0008535533905932738],
  ];
  const c = { kind: "cosine" as const, lr: 1e-3, warmupSteps: 4, totalSteps: 20 };
  for (const [step, lr] of want) close(learningRate(c, step), lr, `step ${step}`);
});

Deno.test("constant with warm-up, no warm-up, and bad steps", () => {
  const k = { kind: "constant" as const, lr: 1e-3, warmupSteps: 10, totalSteps: 100 };
  close(learningRate(k, 5), 5e-4, "warm-up");
  close(learningRate(k, 10), 1e-3, "after");
  close(learningRate(k, 10_000), 1e-3, "long after");
  const c0 = { kind: "cosine" as const, lr: 1, warmupSteps: 0, totalSteps: 4 };
  assert.deepEqual([0, 1, 2, 3, 4].map((s) => Number(lrFactor(c0, s).toFixed(12))), [
    1,
    0.853553390593,
    0.5,
    0.146446609407,
    0,
  ]);
  assert.throws(() => lrFactor(c0, -1), /step must be an integer >= 0/);
});
