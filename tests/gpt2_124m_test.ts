/**
 * GPT-2 at full 124M width on this adapter: vocabulary 50257, width 768, 12 heads, 1024 positions (one
 * layer, so it runs in seconds on a software adapter). With bindings capped at 128 MiB the 154 MB token
 * embedding, its gradient and both Adam moments are split into chunks; the loss, the log-probs and the
 * gradients (every tensor but wte, and wte rows on both sides of the split) must match a float64 CPU
 * GPT-2 (tests/reference/gpt2.ts).
 */
import assert from "node:assert/strict";
import { Gpu } from "../shaders/gpu.ts";
import { GPT2, initWeights } from "../model/gpt2.ts";
import { Trainer } from "../model/trainer.ts";
import { GPT2_124M, type GPT2Config } from "../model/config.ts";
import { gpt2Ref } from "./reference/gpt2.ts";
import { assertClose } from "./util.ts";

/** The common WebGPU binding limit; adapters that allow more are capped to it so the split is tested. */
const BINDING_CAP = 128 * 1024 * 1024;

/** A device whose maxStorageBufferBindingSize is at most {@link BINDING_CAP}. */
async function cappedGpu(): Promise<Gpu> {
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new Error("no WebGPU adapter");
  if (adapter.limits.maxStorageBufferBindingSize <= BINDING_CAP) return await Gpu.create({ adapter });
  // Gpu.create requests the adapter's limits; show it a smaller binding limit to request.
  const limits = new Proxy(adapter.limits, {
    get: (t, k) => (k === "maxStorageBufferBindingSize" ? BINDING_CAP : Reflect.get(t, k)),
  });
  const capped = {
    limits,
    info: adapter.info,
    requestDevice: (d?: GPUDeviceDescriptor) => adapter.requestDevice(d),
  } as unknown as GPUAdapter; // only the members Gpu.create uses
  return await Gpu.create({ adapter: capped });
}

Deno.test("GPT-2 124M-shaped (1 layer) forward and backward match a float64 reference", async () => {
  const gpu = await cappedGpu();
  const config: GPT2Config = { ...GPT2_124M, nLayer: 1 };
  const B = 1, T = 8, C = config.nEmbd;
  const weights = initWeights(config, 1234);
  const model = GPT2.create(gpu, config, weights);
  const trainer = new Trainer(model);
  const wteParts = model.byName.get("wte.weight")!.parts;
  const split = wteParts[0].v1;
  console.log(`  binding limit ${gpu.limits.maxStorageBufferBindingSize}, wte chunks ${wteParts.length}`);
  assert.ok(wteParts.length >= 2, `wte should be split into >= 2 chunks, got ${wteParts.length}`);
  for (const set of [trainer.grads, trainer.m, trainer.v]) {
    assert.equal(set.find((p) => p.spec.name === "wte.weight")!.parts.length, wteParts.length);
  }
  // Tokens on both sides of the split, one repeated, the last vocabulary id included; the last position
  // is padding (mask 0).
  const inputs = Uint32Array.of(50256, 17, split + 5, 17, split - 1, 40000, 3, 50256);
  const targets = Uint32Array.of(17, split + 5, 17, split - 1, 40000, 3, 29000, 0);
  const mask = Float32Array.of(1, 1, 1, 1, 1, 1, 1, 0);
  const m = await trainer.computeGradients({ nSeq: B, T, inputs, targets, lmMask: mask }, { kind: "lm" });
  // Backward leaves the forward pass's per-row log-probs in place.
  const lp = await gpu.read(trainer.workspace(B, T).lp);
  const grads = await trainer.getGradients();

  // wte rows: inputs and targets on both sides of the split, rows at the split's edges, two unused rows.
  const rows = [17, split - 1, split, split + 5, 40000, 29000, 50256, 0, 1000, 45000];
  const ref = gpt2Ref(config, weights, inputs, targets, mask, B, T, rows);
  const tol = { rtol: 1e-3, atol: 1e-6 };
  assertClose("loss", [m.loss], [ref.loss], { rtol: 1e-4, atol: 1e-6 });
  assertClose("log p(target)", lp, ref.lp, { rtol: 1e-4, atol: 1e-5 });
  const dwte = grads.get("wte.weight")!;
  for (const r of rows) {
    const side = r < split ? "chunk 0" : "chunk 1";
    assertClose(`grad wte row ${r} (${side})`, dwte.subarray(r * C, (r + 1) * C), ref.wteRows.get(r)!, tol);
  }
  for (const [name, want] of ref.grads) {
    const got = grads.get(name)!;
    // Gradient entries far below the tensor's scale are rounding noise in f32 (the key bias's gradient
    // is exactly 0); judge them against the scale.
    let scale = 0;
    for (const x of want) scale = Math.max(scale, Math.abs(x));
    assertClose(`grad ${name}`, got, want, { rtol: 1e-3, atol: 1e-5 * scale });
  }
  // wpe rows past T get nothing.
  const dwpe = grads.get("wpe.weight")!;
  assert.ok(dwpe.subarray(T * C).every((x) => x === 0), "wpe rows >= T have zero gradient");
});
