/**
 * The padding mask of left-padded classification batches: attention with a per-sequence key start
 * against float64. Under the mask a sequence is two independent causal sequences, its padding
 * [0, ks) and its text [ks, T), so the reference runs the plain float64 attention on each piece.
 */
import { Plan } from "../shaders/gpu.ts";
import { attentionBackward, attentionForward } from "../shaders/attention.ts";
import { DropoutKey, keeps } from "../shaders/dropout.ts";
import { maskedAttentionRef, type ProbabilityMask } from "./reference/attention.ts";
import { assertClose, randn, testGpu } from "./util.ts";

const TOL = { rtol: 1e-4, atol: 1e-5 };

interface Case {
  B: number;
  T: number;
  C: number;
  H: number;
  /** First real position per sequence (0: no padding). */
  ks: number[];
}

// Starts on and off the 4-key groups and the rows of one thread, a sequence with one real token, T not a
// multiple of anything, and more rows than one workgroup.
const CASES: Case[] = [
  { B: 3, T: 13, C: 16, H: 2, ks: [0, 5, 12] },
  { B: 2, T: 70, C: 64, H: 4, ks: [3, 64] },
  { B: 2, T: 131, C: 32, H: 2, ks: [130, 1] },
];

for (const R of [1, 4]) {
  for (const rate of [0, 0.2]) {
    Deno.test(`left-padded attention (R=${R}, dropout ${rate}): forward and backward match float64`, async () => {
      const gpu = await testGpu();
      const seed = 9, step = 3, site = 4;
      const key = new DropoutKey(gpu, seed);
      key.setStep(step);
      for (const c of CASES) {
        const { B, T, C, H } = c;
        const name = `B=${B} T=${T} C=${C} H=${H} ks=${c.ks} R=${R} p=${rate}`;
        const qkv = randn(B * T * 3 * C, 500 + T), dy = randn(B * T * C, 600 + T);
        const tqkv = gpu.tensor(qkv.length), ty = gpu.tensor(B * T * C), tlse = gpu.tensor(B * H * T);
        const tdy = gpu.tensor(dy.length), tdqkv = gpu.tensor(qkv.length), tks = gpu.tensor(B);
        gpu.write(tqkv, qkv);
        gpu.write(tdy, dy);
        gpu.write(tdqkv, randn(qkv.length, 7));
        gpu.write(tks, Uint32Array.from(c.ks));
        const dropout = rate > 0 ? { key, site, rate } : undefined;
        const shape = { B, T, C, H, candidate: `w64-r${R}`, keyStart: tks, dropout };
        const plan = new Plan(gpu);
        attentionForward(plan, { y: ty, lse: tlse, qkv: tqkv, ...shape });
        attentionBackward(plan, { dqkv: tdqkv, dy: tdy, qkv: tqkv, y: ty, lse: tlse, ...shape });
        plan.run();
        const mask: ProbabilityMask | undefined = rate > 0
          ? (b, h, i, j) => keeps(seed, step, site, (b * H + h) * T + i, j, rate) ? 1 / (1 - rate) : 0
          : undefined;
        const ref = maskedAttentionRef(qkv, dy, c, mask);
        assertClose(`masked y ${name}`, await gpu.read(ty), ref.y, TOL);
        assertClose(`masked lse ${name}`, await gpu.read(tlse), ref.lse, TOL);
        assertClose(`masked dqkv ${name}`, await gpu.read(tdqkv), ref.dqkv, TOL);
        plan.destroy();
        for (const t of [tqkv, ty, tlse, tdy, tdqkv, tks]) gpu.free(t);
      }
      key.destroy();
    });
  }
}
