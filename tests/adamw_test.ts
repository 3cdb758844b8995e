import { deepStrictEqual as assertEquals, throws } from "node:assert/strict";
import { Plan } from "../shaders/gpu.ts";
import { adamwStep, packStepParams, STEP_PARAMS_LENGTH } from "../shaders/adamw.ts";
import { GradNorm, NORM_LENGTH } from "../shaders/reduce.ts";
import { castToHalf, halfWords } from "../shaders/f16.ts";
import { type AdamWStateRef, adamwStepRef } from "./reference/adamw.ts";
import { clipCoefRef, globalNormRef } from "./reference/reduce.ts";
import { assertClose, randn, testGpu } from "./util.ts";

const hyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };
/** A different learning rate each step: the recorded plan must pick up the rewritten step params. */
const LRS = [1e-2, 3e-3, 5e-3];

Deno.test("AdamW over 3 steps with clipping on/off and decay on/off matches float64 PyTorch formulas", async () => {
  const gpu = await testGpu();
  const specs = [{ n: 1000, decay: true }, { n: 333, decay: false }, { n: 70001, decay: true }];
  // The gradient norm is between about 3 and 10: maxNorm 1 clips, 100 does not, 0 disables (checked below).
  for (const maxNorm of [1, 100, 0]) {
    const tensors = specs.map(({ n, decay }, k) => {
      const p0 = randn(n, 10 + k);
      const t = (init?: Float32Array) => {
        const v = gpu.tensor(n);
        if (init) gpu.write(v, init);
        return v;
      };
      const ref: AdamWStateRef = {
        param: Float64Array.from(p0),
        m: new Float64Array(n),
        v: new Float64Array(n),
        decay,
      };
      return { n, decay, param: t(p0), grad: t(), m: t(), v: t(), ref };
    });
    const stepParams = gpu.tensor(STEP_PARAMS_LENGTH);
    const plan = new Plan(gpu);
    const norm = new GradNorm(plan, tensors.map((t) => t.grad), maxNorm);
    for (const t of tensors) {
      const { param, grad, m, v, decay, n } = t;
      adamwStep(plan, { param, grad, m, v, stepParams, norm: norm.output, decay, n });
    }

    let clipped = false;
    for (const [i, lr] of LRS.entries()) {
      const step = i + 1;
      const grads = tensors.map((t, k) => randn(t.n, 1000 * step + k, 0.01 * (step + k)));
      tensors.forEach((t, k) => gpu.write(t.grad, grads[k]));
      gpu.write(stepParams, packStepParams({ lr, step, ...hyper }));
      plan.run();
      const coef = clipCoefRef(globalNormRef(grads), maxNorm);
      clipped ||= coef < 1;
      for (const [k, t] of tensors.entries()) adamwStepRef(t.ref, grads[k], coef, { lr, step, ...hyper });
    }
    if (clipped !== (maxNorm === 1)) {
      throw new Error(`maxNorm=${maxNorm}: clipping active=${clipped}, not as planned`);
    }
    for (const t of tensors) {
      const tag = `maxNorm=${maxNorm} n=${t.n} decay=${t.decay}`;
      assertClose(`adamw param ${tag}`, await gpu.read(t.param), t.ref.param, { rtol: 1e-5, atol: 1e-6 });
      assertClose(`adamw m ${tag}`, await gpu.read(t.m), t.ref.m, { rtol: 1e-5, atol: 1e-9 });
      assertClose(`adamw v ${tag}`, await gpu.read(t.v), t.ref.v, { rtol: 1e-5, atol: 1e-12 });
      for (const v of [t.param, t.grad, t.m, t.v]) gpu.free(v);
    }
    for (const v of [stepParams, norm.output, norm.partials]) gpu.free(v);
  }
});

Deno.test("packStepParams rejects step 0", () => {
  let threw = false;
  try {
    packStepParams({ lr: 1, step: 0, ...hyper });
  } catch {
    threw = true;
  }
  if (!threw) throw new Error("step 0 should be rejected (1 - beta1^0 = 0)");
});

Deno.test("gradient norm under a loss scale s: the unscaled run's norm times s, its coefficient / s, skip on inf/NaN", async () => {
  const gpu = await testGpu();
  const s = 2 ** 12;
  // Norm about 7.9: maxNorm 1 clips, 100 does not, 0 disables.
  const grads = [1000, 333, 70001].map((n, k) => randn(n, 50 + k, 0.01 * (k + 1)));
  const upload = (data: Float32Array) => {
    const v = gpu.tensor(data.length);
    gpu.write(v, data);
    return v;
  };
  const plain = grads.map(upload);
  // Times a power of two: exact, so the scaled sums are exactly s^2 times the plain ones.
  const scaled = grads.map((g) => upload(g.map((x) => x * s)));
  const lossScale = upload(Float32Array.of(s, 1 / s));
  for (const maxNorm of [1, 100, 0]) {
    const plan = new Plan(gpu);
    const ref = new GradNorm(plan, plain, maxNorm);
    const gn = new GradNorm(plan, scaled, maxNorm, { lossScale });
    plan.run();
    const [r, out] = [await gpu.read(ref.output), await gpu.read(gn.output)];
    // What PyTorch does in f32: unscale, then clip_grad_norm_'s coefficient; here as one factor.
    assertEquals(Array.from(out), [r[0] * s, r[1] / s, 0], `maxNorm ${maxNorm}`);
    assertEquals(r[2], 0);
    for (const bad of [Infinity, NaN]) {
      gpu.write(scaled[2], Float32Array.of(bad), 5);
      plan.run();
      const [o, p] = [await gpu.read(gn.output), await gpu.read(ref.output)];
      assertEquals(o[2], 1, `maxNorm ${maxNorm}: ${bad} in a scaled gradient must set skip`);
      assertEquals(p[2], 0, "without a loss scale nothing is skipped");
      gpu.write(scaled[2], Float32Array.of(grads[2][5] * s), 5);
    }
    plan.destroy();
    for (const v of [ref.output, ref.partials, gn.output, gn.partials]) gpu.free(v);
  }
  for (const v of [...plain, ...scaled, lossScale]) gpu.free(v);
});

Deno.test("AdamW writes the f16 copy of the updated weights (the cast's bits) and skips everything on norm[2]", async () => {
  const gpu = await testGpu();
  const specs = [{ n: 1000, decay: true }, { n: 70000, decay: false }];
  const stepParams = gpu.tensor(STEP_PARAMS_LENGTH);
  const norm = gpu.tensor(NORM_LENGTH);
  const coef = Math.fround(0.37);
  const plan = new Plan(gpu), cast = new Plan(gpu);
  const tensors = specs.map(({ n, decay }, k) => {
    const p0 = randn(n, 20 + k);
    const t = (words = n) => gpu.tensor(words);
    const views = { param: t(), grad: t(), m: t(), v: t(), half: t(halfWords(n)), expected: t(halfWords(n)) };
    gpu.write(views.param, p0);
    adamwStep(plan, { ...views, stepParams, norm, decay });
    castToHalf(cast, { out: views.expected, inp: views.param, n });
    const ref: AdamWStateRef = {
      param: Float64Array.from(p0),
      m: new Float64Array(n),
      v: new Float64Array(n),
      decay,
    };
    return { n, ref, ...views };
  });
  const state = (t: (typeof tensors)[number]) =>
    Promise.all([gpu.read(t.param), gpu.read(t.m), gpu.read(t.v), gpu.readU32(t.half)]);
  const step = (i: number, skip: boolean) => {
    const grads = tensors.map((t, k) => randn(t.n, 300 + 10 * i + k, 0.05));
    tensors.forEach((t, k) => gpu.write(t.grad, grads[k]));
    gpu.write(stepParams, packStepParams({ lr: LRS[i], step: i + 1, ...hyper }));
    gpu.write(norm, Float32Array.of(skip ? Infinity : 2.7, coef, skip ? 1 : 0));
    plan.run();
    return grads;
  };
  const grads = step(0, false);
  cast.run();
  const after: Awaited<ReturnType<typeof state>>[] = [];
  for (const [k, t] of tensors.entries()) {
    adamwStepRef(t.ref, grads[k], coef, { lr: LRS[0], step: 1, ...hyper });
    assertClose(`adamw param n=${t.n}`, await gpu.read(t.param), t.ref.param, { rtol: 1e-5, atol: 1e-6 });
    assertEquals(await gpu.readU32(t.half), await gpu.readU32(t.expected), `f16 copy n=${t.n}`);
    after.push(await state(t));
  }
  step(1, true);
  for (const [k, t] of tensors.entries()) {
    assertEquals(await state(t), after[k], `skipped step changed n=${t.n}`);
  }
  const bad = { param: gpu.tensor(6), half: gpu.tensor(halfWords(6)) };
  throws(
    () =>
      adamwStep(new Plan(gpu), {
        ...bad,
        grad: bad.param,
        m: bad.param,
        v: bad.param,
        stepParams,
        norm,
        decay: true,
      }),
    /an f16 copy is written 4 elements per thread, so n must be a multiple of 4, got 6/,
  );
  plan.destroy();
  cast.destroy();
  for (const t of tensors) for (const v of [t.param, t.grad, t.m, t.v, t.half, t.expected]) gpu.free(v);
  for (const v of [stepParams, norm, bad.param, bad.half]) gpu.free(v);
});
