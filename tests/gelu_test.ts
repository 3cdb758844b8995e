import { Plan } from "../shaders/gpu.ts";
import { geluBackward, geluForward } from "../shaders/gelu.ts";
import { geluBackwardRef, geluForwardRef } from "./reference/gelu.ts";
import { assertClose, randn, testGpu } from "./util.ts";

Deno.test("gelu forward and backward match the float64 reference", async () => {
  const gpu = await testGpu();
  for (const n of [1, 255, 1000, 70001]) {
    const x = randn(n, 1 + n, 3);
    const dy = randn(n, 2 + n);
    const [tx, ty, tdy, tdx] = [n, n, n, n].map((len) => gpu.tensor(len));
    gpu.write(tx, x);
    gpu.write(tdy, dy);
    const plan = new Plan(gpu);
    geluForward(plan, { out: ty, inp: tx });
    geluBackward(plan, { dinp: tdx, inp: tx, dout: tdy });
    plan.run();
    assertClose(`gelu_forward n=${n}`, await gpu.read(ty), geluForwardRef(x), { rtol: 1e-5, atol: 1e-6 });
    assertClose(`gelu_backward n=${n}`, await gpu.read(tdx), geluBackwardRef(x, dy), {
      rtol: 1e-5,
      atol: 1e-6,
    });
  }
});
