import { Plan, type TensorView } from "../shaders/gpu.ts";
import { crossEntropyBackward, crossEntropyForward } from "../shaders/crossentropy.ts";
import {
  lmLoss,
  METRIC,
  METRICS_LENGTH,
  sequenceSums,
  simpoLoss,
  simpoMetricsLength,
} from "../shaders/loss.ts";
import { crossEntropyForwardRef } from "./reference/crossentropy.ts";
import { lmGradRef, lmLossRef, sequenceSumsRef, simpoGradRef, simpoRef } from "./reference/loss.ts";
import { assertClose, randint, randn, testGpu } from "./util.ts";
import { uniforms } from "../model/random.ts";

const BETA = 2, GAMMA = 1, LAMBDA = 0.2;

/** Central finite differences of a float64 function at every coordinate of x. */
function finiteDiff(f: (x: Float64Array) => number, x: ArrayLike<number>, h: number): Float64Array {
  const xs = Float64Array.from(x);
  return xs.map((v, i) => {
    xs[i] = v + h;
    const up = f(xs);
    xs[i] = v - h;
    const down = f(xs);
    xs[i] = v;
    return (up - down) / (2 * h);
  });
}

/**
 * Random LM and completion masks for nSeq sequences of length T: the LM mask is a prefix (padding after
 * it), the completion mask the LM mask with a prompt prefix cleared; each keeps at least one position.
 */
function masks(
  nSeq: number,
  T: number,
  seed: number,
): { lmMask: Float32Array; completionMask: Float32Array } {
  const r = uniforms(seed);
  const lmMask = new Float32Array(nSeq * T), completionMask = new Float32Array(nSeq * T);
  for (let s = 0; s < nSeq; s++) {
    const len = 2 + Math.floor(r() * (T - 1)); // 2..T positions before padding
    const prompt = 1 + Math.floor(r() * (len - 1)); // leaves >= 1 completion position
    for (let t = 0; t < len; t++) {
      lmMask[s * T + t] = 1;
      if (t >= prompt) completionMask[s * T + t] = 1;
    }
  }
  return { lmMask, completionMask };
}

/** A tensor holding `data`. */
function upload(gpu: Awaited<ReturnType<typeof testGpu>>, data: Float32Array | Uint32Array): TensorView {
  const t = gpu.tensor(data.length);
  gpu.write(t, data);
  return t;
}

/** The metrics a run of lmLoss + simpoLoss should leave, in slot order, then every sequence's reward. */
function expectedMetrics(lm: number, s: ReturnType<typeof simpoRef>): Float64Array {
  const m = new Float64Array(METRICS_LENGTH + s.rewards.length);
  m.set(s.rewards, METRICS_LENGTH);
  m[METRIC.lm] = lm;
  m[METRIC.simpo] = s.loss;
  m[METRIC.chosenReward] = s.chosen;
  m[METRIC.rejectedReward] = s.rejected;
  m[METRIC.margin] = s.margin;
  m[METRIC.winRate] = s.winRate;
  return m;
}

Deno.test("sequence sums, LM loss and SimPO: values, metrics and g against float64 and finite differences", async () => {
  const gpu = await testGpu();
  const P = 3, T = 11, nSeq = 2 * P, n = nSeq * T;
  const lp = randn(n, 5, 1.5).map((x) => -Math.abs(x));
  // Make pair 0 clearly won and pair 1 clearly lost, so the win rate is neither 0 nor 1.
  for (let t = 0; t < T; t++) {
    lp[t] += 2;
    lp[(P + 1) * T + t] += 2;
  }
  const { lmMask, completionMask } = masks(nSeq, T, 6);
  const simpo = simpoRef(lp, completionMask, P, T, BETA, GAMMA);
  if (!(simpo.winRate > 0 && simpo.winRate < 1)) throw new Error(`test data: win rate ${simpo.winRate}`);

  const tLp = upload(gpu, lp), tLm = upload(gpu, lmMask), tComp = upload(gpu, completionMask);
  const garbage = new Float32Array(n).fill(7); // lmLoss must overwrite every row of g
  const tG = upload(gpu, garbage), tGLm = upload(gpu, garbage);
  const tMetrics = gpu.tensor(simpoMetricsLength(P)), tMetricsLm = gpu.tensor(METRICS_LENGTH);
  const tSums = gpu.tensor(nSeq), tCounts = gpu.tensor(nSeq);
  const plan = new Plan(gpu);
  sequenceSums(plan, { sums: tSums, counts: tCounts, lp: tLp, mask: tComp, nSeq, T });
  lmLoss(plan, { metrics: tMetrics, g: tG, lp: tLp, lmMask: tLm, nSeq, T, nWinning: P, weight: LAMBDA });
  simpoLoss(plan, {
    metrics: tMetrics,
    g: tG,
    lp: tLp,
    completionMask: tComp,
    P,
    T,
    beta: BETA,
    gamma: GAMMA,
  });
  // the pure LM phase
  lmLoss(plan, { metrics: tMetricsLm, g: tGLm, lp: tLp, lmMask: tLm, nSeq, T, nWinning: P, weight: 1 });
  plan.run();

  const sums = sequenceSumsRef(lp, completionMask, nSeq, T);
  assertClose("sequence sums", await gpu.read(tSums), sums.sums, { rtol: 1e-5, atol: 1e-5 });
  assertClose("sequence counts", await gpu.read(tCounts), sums.counts, { rtol: 0, atol: 0 });

  const lm = lmLossRef(lp, lmMask, T, P);
  assertClose(
    "metrics (lm, simpo, mean rewards, margin, win rate, per-sequence rewards)",
    await gpu.read(tMetrics),
    expectedMetrics(lm, simpo),
    {
      rtol: 1e-5,
      atol: 1e-5,
    },
  );
  assertClose("pure LM loss", (await gpu.read(tMetricsLm)).subarray(METRIC.lm, METRIC.lm + 1), [lm], {
    rtol: 1e-5,
    atol: 1e-6,
  });

  // Gradients: the analytic float64 gradient, and central differences of the float64 loss itself.
  const total = (x: Float64Array) =>
    simpoRef(x, completionMask, P, T, BETA, GAMMA).loss + LAMBDA * lmLossRef(x, lmMask, T, P);
  const gSimpo = simpoGradRef(lp, completionMask, P, T, BETA, GAMMA);
  const gAnalytic = lmGradRef(lmMask, nSeq, T, P, LAMBDA).map((v, i) => v + gSimpo[i]);
  const gFd = finiteDiff(total, lp, 1e-4);
  assertClose("ref analytic g vs finite differences", gAnalytic, gFd, { rtol: 1e-6, atol: 1e-8 });
  const g = await gpu.read(tG);
  assertClose("g (simpo + 0.2 LM) vs analytic", g, gAnalytic, { rtol: 1e-5, atol: 1e-7 });
  assertClose("g (simpo + 0.2 LM) vs finite diff", g, gFd, { rtol: 1e-5, atol: 1e-7 });
  const gLmFd = finiteDiff((x) => lmLossRef(x, lmMask, T, P), lp, 1e-4);
  assertClose("g (pure LM) vs finite diff", await gpu.read(tGLm), gLmFd, { rtol: 1e-5, atol: 1e-7 });

  for (const t of [tLp, tLm, tComp, tG, tGLm, tMetrics, tMetricsLm, tSums, tCounts]) gpu.free(t);
});

Deno.test("SimPO stays finite and exact for extreme margins", async () => {
  const gpu = await testGpu();
  const P = 2, T = 5, beta = 60;
  // Pair 0 won by far (z ~ +100: loss ~ 0), pair 1 lost by far (z ~ -100: loss ~ 100, dLoss/dz ~ -1/P).
  const lp = Float32Array.from({ length: 2 * P * T }, (_, i) => {
    const s = Math.floor(i / T);
    return s === 0 || s === P + 1 ? -0.1 : -2;
  });
  const completionMask = new Float32Array(2 * P * T).fill(1);
  const tLp = upload(gpu, lp), tMask = upload(gpu, completionMask), tG = gpu.tensor(2 * P * T);
  const tMetrics = gpu.tensor(simpoMetricsLength(P));
  const plan = new Plan(gpu);
  // weight 0: only clears g
  lmLoss(plan, { metrics: tMetrics, g: tG, lp: tLp, lmMask: tMask, nSeq: 2 * P, T, nWinning: P, weight: 0 });
  simpoLoss(plan, { metrics: tMetrics, g: tG, lp: tLp, completionMask: tMask, P, T, beta, gamma: GAMMA });
  plan.run();
  const s = simpoRef(lp, completionMask, P, T, beta, GAMMA);
  const m = await gpu.read(tMetrics);
  assertClose(
    "extreme simpo metrics",
    m.subarray(METRIC.simpo),
    expectedMetrics(0, s).subarray(METRIC.simpo),
    {
      rtol: 1e-5,
      atol: 1e-5,
    },
  );
  assertClose("extreme simpo g", await gpu.read(tG), simpoGradRef(lp, completionMask, P, T, beta, GAMMA), {
    rtol: 1e-5,
    atol: 1e-7,
  });
  for (const t of [tLp, tMask, tG, tMetrics]) gpu.free(t);
});

Deno.test("simpo + 0.2 LM from logits: d(loss)/d(logits) through g and crossEntropyBackward", async () => {
  const gpu = await testGpu();
  const P = 2, T = 3, nSeq = 2 * P, N = nSeq * T, V = 7, chunk = 6;
  const logits = randn(N * V, 40, 2);
  const targets = randint(N, V, 41);
  const { lmMask, completionMask } = masks(nSeq, T, 42);

  const lossOf = (z: ArrayLike<number>) => {
    const { lp } = crossEntropyForwardRef(z, targets, N, V);
    return simpoRef(lp, completionMask, P, T, BETA, GAMMA).loss + LAMBDA * lmLossRef(lp, lmMask, T, P);
  };
  const { lp } = crossEntropyForwardRef(logits, targets, N, V);
  const expected = expectedMetrics(
    lmLossRef(lp, lmMask, T, P),
    simpoRef(lp, completionMask, P, T, BETA, GAMMA),
  );

  // Logits exist a chunk of rows at a time, as in the model.
  const chunks = [0, chunk].map((r0) => upload(gpu, logits.slice(r0 * V, (r0 + chunk) * V)));
  const tTargets = upload(gpu, targets), tLm = upload(gpu, lmMask), tComp = upload(gpu, completionMask);
  const [tLp, tLse, tG] = [N, N, N].map((len) => gpu.tensor(len));
  const tMetrics = gpu.tensor(simpoMetricsLength(P));
  const plan = new Plan(gpu);
  chunks.forEach((c, k) =>
    crossEntropyForward(plan, {
      lp: tLp,
      lse: tLse,
      logits: c,
      targets: tTargets,
      R: chunk,
      V,
      rowOffset: k * chunk,
    })
  );
  lmLoss(plan, { metrics: tMetrics, g: tG, lp: tLp, lmMask: tLm, nSeq, T, nWinning: P, weight: LAMBDA });
  simpoLoss(plan, {
    metrics: tMetrics,
    g: tG,
    lp: tLp,
    completionMask: tComp,
    P,
    T,
    beta: BETA,
    gamma: GAMMA,
  });
  chunks.forEach((c, k) =>
    crossEntropyBackward(plan, {
      logits: c,
      lse: tLse,
      targets: tTargets,
      g: tG,
      R: chunk,
      V,
      rowOffset: k * chunk,
    })
  );
  plan.run();

  const m = await gpu.read(tMetrics);
  assertClose("metrics from logits", m, expected, { rtol: 1e-5, atol: 1e-5 });
  assertClose("loss = simpo + 0.2 LM", [m[METRIC.simpo] + LAMBDA * m[METRIC.lm]], [lossOf(logits)], {
    rtol: 1e-5,
    atol: 1e-6,
  });
  const dlogits = new Float32Array(N * V);
  for (const [k, c] of chunks.entries()) dlogits.set(await gpu.read(c), k * chunk * V);
  assertClose("dloss/dlogits vs finite diff", dlogits, finiteDiff(lossOf, logits, 1e-4), {
    rtol: 1e-4,
    atol: 1e-7,
  });
  for (const t of [...chunks, tTargets, tLm, tComp, tLp, tLse, tG, tMetrics]) gpu.free(t);
});
