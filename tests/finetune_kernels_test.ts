/**
 * The classification kernels (shaders/classifier.ts) against float64 on sizes that are no multiple of the
 * workgroups: the scatter of pooled rows' gradients, the shifted position-embedding gradient, and the mean
 * cross-entropy over a few labels (with a micro-batch's share of a larger batch).
 */
import { Plan } from "../shaders/gpu.ts";
import { classificationLoss, positionBackward, scatterRows } from "../shaders/classifier.ts";
import { assertClose, randint, randn, testGpu } from "./util.ts";

Deno.test("scatterRows writes each pooled row at its index and zeros elsewhere", async () => {
  const gpu = await testGpu();
  const B = 3, T = 7, C = 13;
  const x = randn(B * C, 1), idx = Uint32Array.of(6, 0, 3);
  const [tout, tx, tidx] = [B * T * C, B * C, B].map((n) => gpu.tensor(n));
  gpu.write(tout, randn(B * T * C, 2));
  gpu.write(tx, x);
  gpu.write(tidx, idx);
  const plan = new Plan(gpu);
  scatterRows(plan, { out: tout, x: tx, idx: tidx, B, T, C });
  plan.run();
  const want = new Float64Array(B * T * C);
  for (let b = 0; b < B; b++) for (let c = 0; c < C; c++) want[(b * T + idx[b]) * C + c] = x[b * C + c];
  assertClose("scatterRows", await gpu.read(tout), want, { rtol: 0, atol: 0 });
  plan.destroy();
  for (const t of [tout, tx, tidx]) gpu.free(t);
});

Deno.test("positionBackward accumulates each text row at its position counted from its start", async () => {
  const gpu = await testGpu();
  const B = 4, T = 11, C = 9;
  const dout = randn(B * T * C, 3), before = randn(T * C, 4), start = Uint32Array.of(0, 4, 10, 7);
  const [tdwpe, tdout, tstart] = [T * C, B * T * C, B].map((n) => gpu.tensor(n));
  gpu.write(tdwpe, before);
  gpu.write(tdout, dout);
  gpu.write(tstart, start);
  const plan = new Plan(gpu);
  positionBackward(plan, { dwpe: tdwpe, dout: tdout, start: tstart, B, T, C });
  plan.run();
  const want = Float64Array.from(before);
  for (let b = 0; b < B; b++) {
    for (let t = start[b]; t < T; t++) {
      for (let c = 0; c < C; c++) want[(t - start[b]) * C + c] += dout[(b * T + t) * C + c];
    }
  }
  assertClose("positionBackward", await gpu.read(tdwpe), want, { rtol: 1e-6, atol: 1e-6 });
  plan.destroy();
  for (const t of [tdwpe, tdout, tstart]) gpu.free(t);
});

Deno.test("classificationLoss: per-example cross-entropy and the gradient of the batch mean", async () => {
  const gpu = await testGpu();
  const B = 67, L = 3, total = 100;
  const logits = randn(B * L, 5, 3), labels = randint(B, L, 6);
  const [tloss, tdl, tlogits, tlabels] = [B, B * L, B * L, B].map((n) => gpu.tensor(n));
  gpu.write(tlogits, logits);
  gpu.write(tlabels, labels);
  const plan = new Plan(gpu);
  classificationLoss(plan, { loss: tloss, dlogits: tdl, logits: tlogits, labels: tlabels, B, L, total });
  plan.run();
  const loss = new Float64Array(B), dl = new Float64Array(B * L);
  for (let b = 0; b < B; b++) {
    const row = Array.from(logits.subarray(b * L, (b + 1) * L));
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, z) => s + Math.exp(z - m), 0));
    loss[b] = lse - row[labels[b]];
    for (let k = 0; k < L; k++) dl[b * L + k] = (Math.exp(row[k] - lse) - (k === labels[b] ? 1 : 0)) / total;
  }
  assertClose("classification loss", await gpu.read(tloss), loss, { rtol: 1e-5, atol: 1e-6 });
  assertClose("classification dlogits", await gpu.read(tdl), dl, { rtol: 1e-5, atol: 1e-8 });
  plan.destroy();
  for (const t of [tloss, tdl, tlogits, tlabels]) gpu.free(t);
});
