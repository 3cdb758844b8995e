import { Plan, type TensorView } from "../shaders/gpu.ts";
import {
  embeddingBackward,
  embeddingForward,
  EmbeddingGroups,
  groupPositionsByToken,
} from "../shaders/embedding.ts";
import { embeddingBackwardRef, embeddingForwardRef } from "./reference/embedding.ts";
import { assertClose, randint, randn, testGpu } from "./util.ts";

Deno.test("groupPositionsByToken lists ascending ids and, per id, its positions in order", () => {
  const tokens = Uint32Array.of(5, 2, 5, 9, 2, 2, 0, 5);
  const g = groupPositionsByToken(tokens);
  const expected = [[0, [6]], [2, [1, 4, 5]], [5, [0, 2, 7]], [9, [3]]] as const;
  const got = Array.from(
    g.ids,
    (id, k) => [id, Array.from(g.positions.subarray(g.offsets[k], g.offsets[k + 1]))],
  );
  if (JSON.stringify(got) !== JSON.stringify(expected) || g.offsets[g.ids.length] !== tokens.length) {
    throw new Error(
      `groups ${JSON.stringify(got)} offsets ${g.offsets}, expected ${JSON.stringify(expected)}`,
    );
  }
});

Deno.test("embedding forward and backward over 2 uneven wte chunks match float64; backward is bit-stable", async () => {
  const gpu = await testGpu();
  const [B, T, C, V, maxT] = [3, 5, 50, 23, 7];
  const bounds = [[0, 9], [9, V]]; // uneven chunks
  const wte = randn(V * C, 1), wpe = randn(maxT * C, 2), dout = randn(B * T * C, 3);
  const dwte0 = randn(V * C, 4), dwpe0 = randn(maxT * C, 5); // backward accumulates onto these
  const up = (a: Float32Array | Uint32Array) => {
    const v = gpu.tensor(a.length);
    gpu.write(v, a);
    return v;
  };
  const chunks = (a: Float32Array) =>
    bounds.map(([v0, v1]) => ({ view: up(a.subarray(v0 * C, v1 * C)), v0, v1 }));
  const wteChunks = chunks(wte), dwteChunks = chunks(dwte0);
  const [twpe, tdout, tdwpe] = [wpe, dout, dwpe0].map(up);
  const tout = gpu.tensor(B * T * C), ttokens = gpu.tensor(B * T);
  const groups = new EmbeddingGroups(gpu, B * T);

  const fwd = new Plan(gpu);
  embeddingForward(fwd, { out: tout, tokens: ttokens, wte: wteChunks, wpe: twpe, B, T, C });
  const bwd = new Plan(gpu);
  embeddingBackward(bwd, { dwte: dwteChunks, dwpe: tdwpe, dout: tdout, groups, B, T, C });
  const readChunks = async (cs: { view: TensorView }[]) => {
    const parts = await Promise.all(cs.map((c) => gpu.read(c.view)));
    const all = new Float32Array(V * C);
    parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
    return all;
  };
  const reset = () => {
    dwteChunks.forEach(({ view, v0, v1 }) => gpu.write(view, dwte0.subarray(v0 * C, v1 * C)));
    gpu.write(tdwpe, dwpe0);
  };

  // Two batches through the same recorded plans: repeated tokens, tokens at both chunk edges; then fewer
  // unique tokens than before (stale groups past count must be ignored).
  const batches = [
    Uint32Array.of(0, 8, 9, 22, 8, 8, 3, 22, 0, 9, 15, 15, 15, 1, 8),
    randint(B * T, 3, 77).map((t) => t * 10), // ids 0, 10, 20 only
  ];
  for (const [k, tokens] of batches.entries()) {
    gpu.write(ttokens, tokens);
    groups.upload(tokens);
    reset();
    fwd.run();
    bwd.run();
    assertClose(
      `embedding forward batch ${k}`,
      await gpu.read(tout),
      embeddingForwardRef(tokens, wte, wpe, B, T, C),
      {
        rtol: 6e-8,
        atol: 0,
      },
    );
    const ref = embeddingBackwardRef(tokens, dout, V, B, T, C);
    const dwte = await readChunks(dwteChunks);
    assertClose(`embedding dwte batch ${k}`, dwte, ref.dwte.map((v, i) => v + dwte0[i]), {
      rtol: 1e-5,
      atol: 1e-6,
    });
    const dwpe = await gpu.read(tdwpe);
    // Rows t >= T of dwpe get no gradient.
    const dwpeRef = Float64Array.from(dwpe0, (v, i) => v + (i < T * C ? ref.dwpe[i] : 0));
    assertClose(`embedding dwpe batch ${k}`, dwpe, dwpeRef, { rtol: 1e-5, atol: 1e-6 });

    reset();
    bwd.run();
    const again = await readChunks(dwteChunks);
    const firstDiff = again.findIndex((v, i) => !Object.is(v, dwte[i]));
    if (firstDiff >= 0) {
      throw new Error(
        `dwte differs between two runs at ${firstDiff}: ${dwte[firstDiff]} vs ${again[firstDiff]}`,
      );
    }
  }
});

Deno.test("embedding backward: one token at every one of 8193 positions, C=2048 (past llvmpipe's loop budget if a thread looped over columns too)", async () => {
  const gpu = await testGpu();
  const [B, T, C, V] = [2731, 3, 2048, 2];
  const N = B * T;
  const dout = randn(N * C, 9);
  const tokens = new Uint32Array(N).fill(1);
  const up = (a: Float32Array) => {
    const v = gpu.tensor(a.length);
    gpu.write(v, a);
    return v;
  };
  const tdout = up(dout), tdwte = gpu.tensor(V * C), tdwpe = gpu.tensor(T * C);
  const groups = new EmbeddingGroups(gpu, N);
  groups.upload(tokens);
  const plan = new Plan(gpu);
  embeddingBackward(plan, {
    dwte: [{ view: tdwte, v0: 0, v1: V }],
    dwpe: tdwpe,
    dout: tdout,
    groups,
    B,
    T,
    C,
  });
  plan.run();
  const ref = new Float64Array(C);
  for (let i = 0; i < N; i++) for (let c = 0; c < C; c++) ref[c] += dout[i * C + c];
  const dwte = await gpu.read(tdwte);
  assertClose("dwte row of the repeated token", dwte.subarray(C, 2 * C), ref, { rtol: 1e-4, atol: 1e-3 });
  assertClose("dwte row of the absent token", dwte.subarray(0, C), new Float64Array(C), { rtol: 0, atol: 0 });
  for (const v of [tdout, tdwte, tdwpe]) gpu.free(v);
});
