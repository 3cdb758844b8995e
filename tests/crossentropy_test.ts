import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { Plan } from "../shaders/gpu.ts";
import { crossEntropyBackward, crossEntropyForward } from "../shaders/crossentropy.ts";
import { crossEntropyBackwardRef, crossEntropyForwardRef } from "./reference/crossentropy.ts";
import { assertClose, randint, randn, testGpu } from "./util.ts";
import { uniforms } from "../model/random.ts";

/** Logits uniform in [-30, 30]: exp of the largest overflows f32 unless the kernel subtracts the max. */
function extremeLogits(n: number, seed: number): Float32Array {
  const r = uniforms(seed);
  return Float32Array.from({ length: n }, () => 60 * r() - 30);
}

const SENTINEL = 123.5;

const cases = [
  // Sizes that are not multiples of the workgroup; a chunk in the middle of the batch's row buffers.
  { name: "R=5 V=61", R: 5, V: 61, rowOffset: 3, nTotal: 10, logits: randn(5 * 61, 11, 3) },
  // The real vocabulary with extreme logits; the last row's target is its largest logit.
  { name: "R=3 V=50257", R: 3, V: 50257, rowOffset: 1, nTotal: 4, logits: extremeLogits(3 * 50257, 12) },
  // The real vocabulary with the workspace's padded stride (a multiple of 4): the row kernel's case.
  {
    name: "R=3 V=50257 ld=50260",
    R: 3,
    V: 50257,
    ld: 50260,
    rowOffset: 0,
    nTotal: 3,
    logits: extremeLogits(3 * 50260, 14),
  },
  // A row stride padded past V (as the workspace pads it to a multiple of 4); the padding is untouched.
  { name: "R=4 V=61 ld=64", R: 4, V: 61, ld: 64, rowOffset: 0, nTotal: 4, logits: randn(4 * 64, 13, 3) },
];

for (const rows of ["workgroup", "thread"] as const) {
  Deno.test(`cross-entropy forward (one row per ${rows}) and backward match the float64 reference`, async () => {
    const gpu = await testGpu();
    for (const c of cases) {
      const { R, V, rowOffset, nTotal } = c;
      const name = `${c.name} ${rows}`;
      const ld = c.ld ?? V;
      // The reference sees dense [R, V] rows; the GPU sees rows of stride ld.
      const logits = Float32Array.from(
        { length: R * V },
        (_, i) => c.logits[Math.floor(i / V) * ld + (i % V)],
      );
      const targets = randint(nTotal, V, 20 + V);
      const last = (R - 1) * V;
      targets[rowOffset + R - 1] = logits.subarray(last, last + V).indexOf(
        Math.max(...logits.subarray(last)),
      );
      const g = randn(nTotal, 30 + V);
      g[rowOffset + 1] = 0; // a row outside the loss must get exact zeros

      const [tLogits, tLp, tLse, tTargets, tG] = [R * ld, nTotal, nTotal, nTotal, nTotal].map((n) =>
        gpu.tensor(n)
      );
      gpu.write(tLogits, c.logits.subarray(0, R * ld));
      gpu.write(tTargets, targets);
      gpu.write(tG, g);
      gpu.write(tLp, new Float32Array(nTotal).fill(SENTINEL));
      gpu.write(tLse, new Float32Array(nTotal).fill(SENTINEL));
      const plan = new Plan(gpu);
      crossEntropyForward(plan, {
        lp: tLp,
        lse: tLse,
        logits: tLogits,
        targets: tTargets,
        R,
        V,
        rowOffset,
        ld,
        rows,
      });
      crossEntropyBackward(plan, {
        logits: tLogits,
        lse: tLse,
        targets: tTargets,
        g: tG,
        R,
        V,
        rowOffset,
        ld,
      });
      // The row kernel needs a stride that is a multiple of 4; other strides take the workgroup kernel.
      const rowKernel = rows === "thread" && ld % 4 === 0;
      assertEquals(
        plan.dispatches[0].label,
        rowKernel ? "crossentropy_forward_rows" : "crossentropy_forward",
      );
      plan.run();

      const chunkTargets = targets.subarray(rowOffset, rowOffset + R);
      const ref = crossEntropyForwardRef(logits, chunkTargets, R, V);
      // Rows outside the chunk keep their values; rows inside get lp and lse.
      const expect = (values: Float64Array) =>
        Float64Array.from(
          { length: nTotal },
          (_, i) => i >= rowOffset && i < rowOffset + R ? values[i - rowOffset] : SENTINEL,
        );
      assertClose(`ce_forward lp ${name}`, await gpu.read(tLp), expect(ref.lp), { rtol: 1e-5, atol: 2e-5 });
      assertClose(`ce_forward lse ${name}`, await gpu.read(tLse), expect(ref.lse), {
        rtol: 1e-6,
        atol: 1e-5,
      });
      const dRef = crossEntropyBackwardRef(logits, chunkTargets, g.subarray(rowOffset, rowOffset + R), R, V);
      const dPadded = await gpu.read(tLogits);
      const d = Float32Array.from({ length: R * V }, (_, i) => dPadded[Math.floor(i / V) * ld + (i % V)]);
      assertClose(`ce_backward ${name}`, d, dRef, { rtol: 1e-4, atol: 1e-7 });
      if (d.subarray(V, 2 * V).some((x) => !Object.is(x, 0))) {
        throw new Error(`ce_backward ${name}: the row with g = 0 should be all +0`);
      }
      for (let r = 0; r < R; r++) {
        for (let j = V; j < ld; j++) {
          if (dPadded[r * ld + j] !== c.logits[r * ld + j]) {
            throw new Error(`ce_backward ${name}: padding element (${r}, ${j}) was overwritten`);
          }
        }
      }
      for (const t of [tLogits, tLp, tLse, tTargets, tG]) gpu.free(t);
    }
  });
}
