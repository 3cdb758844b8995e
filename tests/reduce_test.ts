import { Plan } from "../shaders/gpu.ts";
import { GradNorm } from "../shaders/reduce.ts";
import { clipCoefRef, globalNormRef } from "./reference/reduce.ts";
import { assertClose, randn, testGpu } from "./util.ts";

for (const rows of ["workgroup", "thread"] as const) {
  Deno.test(`global gradient norm and clip coefficient (stage 1 per ${rows}) match float64 over mixed sizes`, async () => {
    const gpu = await testGpu();
    // 70001 and 70000 span several partial slots (scalar and vec4 reads on the thread path); the others
    // fit one slot.
    const lengths = [1, 257, 70001, 5000, 33, 70000];
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
      const gn = new GradNorm(plan, views, maxNorm, { rows });
      const stage1 = rows === "thread" ? "sum_squares_rows" : "sum_squares";
      if (plan.dispatches[0].label !== stage1) throw new Error(`stage 1 is ${plan.dispatches[0].label}`);
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
}
