import { Plan } from "../shaders/gpu.ts";
import { adamwStep, packStepParams, STEP_PARAMS_LENGTH } from "../shaders/adamw.ts";
import { GradNorm } from "../shaders/reduce.ts";
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
