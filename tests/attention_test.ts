import { Plan } from "../shaders/gpu.ts";
import { attentionBackward, attentionDecode, attentionForward } from "../shaders/attention.ts";
import { attentionBackwardRef, attentionForwardRef, type AttentionShape } from "./reference/attention.ts";
import { assertClose, randn, testGpu } from "./util.ts";

const TOL = { rtol: 1e-4, atol: 1e-5 };

// T not a multiple of the 256-row workgroups (CPU adapters), the 4-row threads or the 4-key groups; head
// sizes 8, 8, 16, 64 and 16.
const SHAPES: AttentionShape[] = [
  { B: 2, T: 7, C: 16, H: 2 },
  { B: 1, T: 33, C: 24, H: 3 },
  { B: 2, T: 70, C: 64, H: 4 },
  { B: 1, T: 40, C: 128, H: 2 },
  // More rows than one workgroup's 64 threads (GPUs), odd so a thread's last rows fall past T.
  { B: 1, T: 131, C: 32, H: 2 },
];

Deno.test("attention reference backward matches finite differences of its forward", () => {
  const s = { B: 1, T: 4, C: 4, H: 2 };
  const qkv = Float64Array.from(randn(s.B * s.T * 3 * s.C, 11));
  const dy = randn(s.B * s.T * s.C, 12);
  const loss = (x: Float64Array) => attentionForwardRef(x, s).y.reduce((acc, v, i) => acc + v * dy[i], 0);
  const numeric = new Float64Array(qkv.length);
  const h = 1e-6;
  for (let i = 0; i < qkv.length; i++) {
    const up = qkv.slice(), down = qkv.slice();
    up[i] += h;
    down[i] -= h;
    numeric[i] = (loss(up) - loss(down)) / (2 * h);
  }
  assertClose("reference dqkv vs finite differences", attentionBackwardRef(qkv, dy, s), numeric, {
    rtol: 1e-6,
    atol: 1e-8,
  });
});

// The adapter's own kernels (on GPUs the untuned default); attention_tune_test.ts checks every candidate.
Deno.test("attention forward and backward match the float64 reference", async () => {
  const gpu = await testGpu();
  for (const s of SHAPES) {
    const { B, T, C, H } = s;
    const name = `B=${B} T=${T} C=${C} H=${H}`;
    const qkv = randn(B * T * 3 * C, 100 + T);
    const dy = randn(B * T * C, 200 + T);
    const tqkv = gpu.tensor(qkv.length), ty = gpu.tensor(B * T * C), tlse = gpu.tensor(B * H * T);
    const tdy = gpu.tensor(dy.length), tdqkv = gpu.tensor(qkv.length);
    gpu.write(tqkv, qkv);
    gpu.write(tdy, dy);
    // Stale values must be overwritten, not accumulated into.
    gpu.write(tdqkv, randn(qkv.length, 7));
    const plan = new Plan(gpu);
    attentionForward(plan, { y: ty, lse: tlse, qkv: tqkv, B, T, C, H });
    attentionBackward(plan, {
      dqkv: tdqkv,
      dy: tdy,
      qkv: tqkv,
      y: ty,
      lse: tlse,
      B,
      T,
      C,
      H,
    });
    plan.run();
    const ref = attentionForwardRef(qkv, s);
    assertClose(`attention y ${name}`, await gpu.read(ty), ref.y, TOL);
    assertClose(`attention lse ${name}`, await gpu.read(tlse), ref.lse, TOL);
    const dqkv = await gpu.read(tdqkv);
    assertClose(`attention dqkv ${name}`, dqkv, attentionBackwardRef(qkv, dy, s), TOL);
    // Replaying the plan gives the same bits: every sum has a fixed order.
    plan.run();
    const again = await gpu.read(tdqkv);
    if (!again.every((v, i) => Object.is(v, dqkv[i]))) {
      throw new Error(`attention dqkv ${name}: not deterministic`);
    }
    for (const t of [tqkv, ty, tlse, tdy, tdqkv]) gpu.free(t);
  }
});

Deno.test("attention decode matches the full forward's row at each sequence's last position", async () => {
  const gpu = await testGpu();
  for (
    const { C, H, lengths } of [{ C: 32, H: 2, lengths: [1, 5, 13] }, { C: 128, H: 2, lengths: [70, 1, 33] }]
  ) {
    const nSeq = lengths.length, T = Math.max(...lengths), maxT = T + 3;
    const s = { B: nSeq, T, C, H };
    const qkv = randn(nSeq * T * 3 * C, 300 + C);
    const ref = attentionForwardRef(qkv, s).y;
    // Positions at or past a sequence's length hold garbage that must not be attended to.
    const kCache = randn(nSeq * maxT * C, 1, 50), vCache = randn(nSeq * maxT * C, 2, 50);
    const q = new Float32Array(nSeq * C), expected = new Float64Array(nSeq * C);
    lengths.forEach((len, i) => {
      for (let t = 0; t < len; t++) {
        const row = (i * T + t) * 3 * C;
        kCache.set(qkv.subarray(row + C, row + 2 * C), (i * maxT + t) * C);
        vCache.set(qkv.subarray(row + 2 * C, row + 3 * C), (i * maxT + t) * C);
      }
      const last = i * T + len - 1;
      q.set(qkv.subarray(last * 3 * C, last * 3 * C + C), i * C);
      expected.set(ref.subarray(last * C, last * C + C), i * C);
    });
    const [ty, tq, tk, tv, tlen] = [nSeq * C, nSeq * C, kCache.length, vCache.length, nSeq].map((n) =>
      gpu.tensor(n)
    );
    gpu.write(tq, q);
    gpu.write(tk, kCache);
    gpu.write(tv, vCache);
    gpu.write(tlen, Uint32Array.from(lengths));
    const plan = new Plan(gpu);
    attentionDecode(plan, { y: ty, q: tq, kCache: tk, vCache: tv, lengths: tlen, nSeq, C, H, maxT });
    plan.run();
    assertClose(`attention decode C=${C} lengths=${lengths}`, await gpu.read(ty), expected, TOL);
    for (const t of [ty, tq, tk, tv, tlen]) gpu.free(t);
  }
});
