import { Plan } from "../model/gpu.ts";
import { GradNorm } from "../shaders/reduce.ts";
import { clipCoefRef, globalNormRef } from "./reference/reduce.ts";
import { assertClose, randn, testGpu } from "./util.ts";

Deno.test("global gradient norm and clip coefficient match float64 over tensors of mixed sizes", async () => {
  const gpu = await testGpu();
  // 70001 spans several workgroups (partial slots); the others one each.
  const lengths = [1, 257, 70001, 5000, 33];
  const data = lengths.map((n, i) => randn(n, 100 + i, 0.01 * (i + 1)));
  const views = data.map((d) => {
    const v = gpu.tensor(d.length);
    gpu.write(v, d);
    return v;
  });
  const norm = globalNormRef(data);
  // Clipping active, inactive (maxNorm above the norm), and disabled (maxNorm = 0).
  for (const maxNorm of [norm / 3, norm * 2, 0]) {
    const plan = new Plan(gpu);
    const gn = new GradNorm(plan, views, maxNorm);
    plan.run();
    const out = await gpu.read(gn.output);
    const coef = clipCoefRef(norm, maxNorm);
    assertClose(`grad norm, maxNorm=${maxNorm.toFixed(3)}`, out.subarray(0, 1), [norm], {
      rtol: 1e-6,
      atol: 0,
    });
    assertClose(`clip coef, maxNorm=${maxNorm.toFixed(3)}`, out.subarray(1, 2), [coef], {
      rtol: 1e-6,
      atol: 0,
    });
    if (maxNorm > norm && out[1] !== 1) {
      throw new Error(`clip coefficient should be exactly 1, got ${out[1]}`);
    }
    plan.run();
    const again = await gpu.read(gn.output);
    if (!again.every((v, i) => Object.is(v, out[i]))) {
      throw new Error(`norm not bit-stable: ${out} vs ${again}`);
    }
    gpu.free(gn.output);
    gpu.free(gn.partials);
  }
  for (const v of views) gpu.free(v);
});
