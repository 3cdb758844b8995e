import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { Plan } from "../shaders/gpu.ts";
import { layernormBackward, layernormForward } from "../shaders/layernorm.ts";
import { layernormBackwardRef, layernormForwardRef } from "./reference/layernorm.ts";
import { assertClose, randn, testGpu } from "./util.ts";

const EPS = 1e-5;

for (const rows of ["workgroup", "thread"] as const) {
  Deno.test(`layernorm forward and backward (accumulating, one row per ${rows}) match the float64 reference`, async () => {
    const gpu = await testGpu();
    // C not a multiple of anything; a row longer than the workgroup; N spanning several 64-row blocks.
    for (const [N, C] of [[37, 50], [2, 768], [131, 19], [70, 64]]) {
      const s = N * 1000 + C;
      // An offset mean makes the variance computation's cancellation visible.
      const x = randn(N * C, s + 1, 2).map((v, i) => v + 3 * ((i / C) % 3));
      const w = randn(C, s + 2, 0.5).map((v) => v + 1);
      const b = randn(C, s + 3, 0.5);
      const dy = randn(N * C, s + 4);
      // Existing gradients: backward must add to them.
      const dx0 = randn(N * C, s + 5), dw0 = randn(C, s + 6), db0 = randn(C, s + 7);
      const t = (a: Float32Array | number) => {
        const v = gpu.tensor(typeof a === "number" ? a : a.length);
        if (typeof a !== "number") gpu.write(v, a);
        return v;
      };
      const [tx, tw, tb, tdy, tdx, tdw, tdb] = [x, w, b, dy, dx0, dw0, db0].map(t);
      const [ty, tmean, trstd] = [N * C, N, N].map((n) => t(n));
      const plan = new Plan(gpu);
      layernormForward(plan, {
        out: ty,
        mean: tmean,
        rstd: trstd,
        inp: tx,
        weight: tw,
        bias: tb,
        N,
        C,
        eps: EPS,
        rows,
      });
      layernormBackward(plan, {
        dinp: tdx,
        dweight: tdw,
        dbias: tdb,
        dout: tdy,
        inp: tx,
        weight: tw,
        mean: tmean,
        rstd: trstd,
        N,
        C,
        rows,
      });
      const want = rows === "thread" ? ["layernorm_forward_rows", "layernorm_backward_input_rows"] : [
        "layernorm_forward",
        "layernorm_backward_input",
      ];
      assertEquals(plan.dispatches.map((d) => d.label).slice(0, 2), want);
      plan.run();

      const ref = layernormForwardRef(x, w, b, N, C, EPS);
      const tag = `N=${N} C=${C}`;
      assertClose(`layernorm out ${tag}`, await gpu.read(ty), ref.out, { rtol: 1e-5, atol: 2e-6 });
      assertClose(`layernorm mean ${tag}`, await gpu.read(tmean), ref.mean, { rtol: 1e-5, atol: 1e-6 });
      assertClose(`layernorm rstd ${tag}`, await gpu.read(trstd), ref.rstd, { rtol: 1e-5, atol: 1e-6 });
      const g = layernormBackwardRef(dy, x, w, N, C, EPS);
      const plus = (a: Float32Array, d: Float64Array) => d.map((v, i) => v + a[i]);
      assertClose(`layernorm dinp ${tag}`, await gpu.read(tdx), plus(dx0, g.dinp), {
        rtol: 1e-4,
        atol: 1e-5,
      });
      assertClose(`layernorm dweight ${tag}`, await gpu.read(tdw), plus(dw0, g.dweight), {
        rtol: 1e-4,
        atol: 1e-5,
      });
      assertClose(`layernorm dbias ${tag}`, await gpu.read(tdb), plus(db0, g.dbias), {
        rtol: 1e-4,
        atol: 1e-5,
      });
      for (const v of [tx, tw, tb, tdy, tdx, tdw, tdb, ty, tmean, trstd]) gpu.free(v);
    }
  });
}
