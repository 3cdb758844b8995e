/**
 * The whole model against PyTorch: logits, loss, every parameter gradient, the weights after 3 AdamW
 * steps, and the SimPO + LM loss with its gradients. Fixtures come from tests/make_fixtures.py.
 */
import { GPT2, Workspace } from "../model/gpt2.ts";
import { Trainer } from "../model/trainer.ts";
import { loadCheckpoint } from "../cli/files.ts";
import { parseSafetensors, type Tensor, type TensorData } from "../model/safetensors.ts";
import { assertClose, testGpu } from "./util.ts";

const FIXTURE = new URL("./fixtures/gpt2_tiny/", import.meta.url).pathname;

async function loadReference(): Promise<Map<string, Tensor>> {
  const bytes = await Deno.readFile(FIXTURE + "reference.safetensors");
  return parseSafetensors(bytes, "reference.safetensors").tensors;
}

function u32(a: TensorData): Uint32Array {
  return Uint32Array.from(a);
}

function f32(a: TensorData): Float32Array {
  return Float32Array.from(a);
}

Deno.test("GPT-2 forward, loss and every gradient match PyTorch", async () => {
  const gpu = await testGpu();
  const { config, weights } = await loadCheckpoint(FIXTURE);
  const ref = await loadReference();
  const model = GPT2.create(gpu, config, weights);
  const [B, T] = ref.get("lm.inputs")!.shape;
  const trainer = new Trainer(model, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, clipNorm: 1 });
  const batch = {
    nSeq: B,
    T,
    inputs: u32(ref.get("lm.inputs")!.data),
    targets: u32(ref.get("lm.targets")!.data),
    lmMask: f32(ref.get("lm.mask")!.data),
  };
  const m = await trainer.computeGradients(batch, { kind: "lm" });
  assertClose("lm.loss", [m.loss], ref.get("lm.loss")!.data, { rtol: 1e-4, atol: 1e-6 });
  const grads = await trainer.getGradients();
  for (const [name, g] of grads) {
    const want = ref.get("lm.grad." + name);
    if (!want) throw new Error(`fixture has no gradient for ${name}`);
    assertClose(`grad ${name}`, g, want.data, { rtol: 1e-3, atol: 1e-6 });
  }
  // Logits: a scoring workspace with all rows in one chunk leaves lp; compare log-softmax at targets.
  const ws = new Workspace(model, B, T);
  ws.setBatch(batch.inputs, batch.targets);
  ws.forward.run();
  const lp = await gpu.read(ws.lp);
  const logits = ref.get("lm.logits")!.data as Float32Array;
  const V = config.vocabSize;
  const wantLp = new Float64Array(B * T);
  for (let r = 0; r < B * T; r++) {
    const row = logits.subarray(r * V, (r + 1) * V);
    const max = Math.max(...row);
    let s = 0;
    for (const z of row) s += Math.exp(z - max);
    wantLp[r] = row[batch.targets[r]] - max - Math.log(s);
  }
  assertClose("log p(target) from logits", lp, wantLp, { rtol: 1e-4, atol: 1e-5 });
  ws.destroy();
});

Deno.test("3 AdamW steps with clipping and weight decay match torch.optim.AdamW", async () => {
  const gpu = await testGpu();
  const { config, weights } = await loadCheckpoint(FIXTURE);
  const ref = await loadReference();
  const model = GPT2.create(gpu, config, weights);
  const [B, T] = ref.get("lm.inputs")!.shape;
  const trainer = new Trainer(model, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, clipNorm: 1 });
  const batch = {
    nSeq: B,
    T,
    inputs: u32(ref.get("lm.inputs")!.data),
    targets: u32(ref.get("lm.targets")!.data),
    lmMask: f32(ref.get("lm.mask")!.data),
  };
  const losses: number[] = [];
  for (let i = 0; i < 3; i++) losses.push((await trainer.trainStep(batch, { kind: "lm" }, 1e-2)).loss);
  assertClose("losses before each step", losses, ref.get("lm.adamw.losses")!.data, {
    rtol: 1e-4,
    atol: 1e-6,
  });
  const after = await model.getWeights();
  const C = config.nEmbd;
  for (const [name, w] of after) {
    const want = ref.get("lm.adamw3." + name)!.data;
    if (name.endsWith("attn.c_attn.bias")) {
      // The key bias has an exactly zero gradient (it shifts every score of a row equally, which softmax
      // ignores), so both sides only see rounding noise, which Adam's m / sqrt(v) turns into +-lr steps of
      // arbitrary sign. Compare the query and value biases; the key bias must stay within those steps.
      const qv = (a: ArrayLike<number>) => [...Array.from(a).slice(0, C), ...Array.from(a).slice(2 * C)];
      assertClose(`adamw3 ${name} (q, v)`, qv(w), qv(want), { rtol: 1e-3, atol: 1e-6 });
      assertClose(`adamw3 ${name} (k)`, w.slice(C, 2 * C), Array.from(want).slice(C, 2 * C), {
        rtol: 0,
        atol: 3 * 1e-2,
      });
      continue;
    }
    assertClose(`adamw3 ${name}`, w, want, { rtol: 1e-3, atol: 1e-6 });
  }
});

Deno.test("SimPO + 0.2 * LM loss and gradients match PyTorch", async () => {
  const gpu = await testGpu();
  const { config, weights } = await loadCheckpoint(FIXTURE);
  const ref = await loadReference();
  const model = GPT2.create(gpu, config, weights);
  const [nSeq, T] = ref.get("simpo.inputs")!.shape;
  const trainer = new Trainer(model);
  const m = await trainer.computeGradients({
    nSeq,
    T,
    inputs: u32(ref.get("simpo.inputs")!.data),
    targets: u32(ref.get("simpo.targets")!.data),
    lmMask: f32(ref.get("simpo.lm_mask")!.data),
    completionMask: f32(ref.get("simpo.comp_mask")!.data),
  }, { kind: "simpo", beta: 2, gamma: 1, lmWeight: 0.2 });
  assertClose("simpo total loss", [m.loss], ref.get("simpo.loss")!.data, { rtol: 1e-4, atol: 1e-6 });
  assertClose("simpo lm loss", [m.lmLoss], ref.get("simpo.loss_lm")!.data, { rtol: 1e-4, atol: 1e-6 });
  assertClose("simpo preference loss", [m.simpoLoss!], ref.get("simpo.loss_simpo")!.data, {
    rtol: 1e-4,
    atol: 1e-6,
  });
  // Every pair's rewards as the loss used them: chosen then rejected, the sequences' order.
  const rewards = [...m.chosenRewards!, ...m.rejectedRewards!];
  assertClose("simpo per-sequence rewards", rewards, ref.get("simpo.rewards")!.data, {
    rtol: 1e-4,
    atol: 1e-6,
  });
  for (const [name, g] of await trainer.getGradients()) {
    assertClose(`simpo grad ${name}`, g, ref.get("simpo.grad." + name)!.data, { rtol: 1e-3, atol: 1e-6 });
  }
});
