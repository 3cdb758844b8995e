import { Plan } from "../shaders/gpu.ts";
import { addInPlace, residualForward } from "../shaders/residual.ts";
import { assertClose, randn, testGpu } from "./util.ts";

Deno.test("residual add and in-place add match float64 sums, leaving elements past n alone", async () => {
  const gpu = await testGpu();
  for (const n of [1, 1000, 70001]) {
    const len = n + 3; // the tail past n must stay untouched
    const a = randn(len, n + 1), b = randn(len, n + 2), d = randn(len, n + 3);
    const [ta, tb, tout, tdst] = [a, b, new Float32Array(len).fill(7), d].map((x) => {
      const v = gpu.tensor(len);
      gpu.write(v, x);
      return v;
    });
    const plan = new Plan(gpu);
    residualForward(plan, { out: tout, a: ta, b: tb, n });
    addInPlace(plan, { dst: tdst, src: ta, n });
    plan.run();
    const sum = (x: Float32Array, y: Float32Array, fill?: number) =>
      Float64Array.from({ length: len }, (_, i) => i < n ? x[i] + y[i] : fill ?? x[i]);
    // f32(a + b) is the correctly rounded sum, so the error is at most half an ulp.
    assertClose(`residual out n=${n}`, await gpu.read(tout), sum(a, b, 7), { rtol: 6e-8, atol: 0 });
    assertClose(`add_in_place n=${n}`, await gpu.read(tdst), sum(d, a), { rtol: 6e-8, atol: 0 });
    for (const v of [ta, tb, tout, tdst]) gpu.free(v);
  }
});
