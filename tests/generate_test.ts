/**
 * KV-cached generation: every cached step's logits against a full forward pass of the same prefix,
 * greedy continuations against PyTorch (float64, tests/make_fixtures.py `gen.*`), sampled frequencies
 * against the exact top-p distribution, seeding, batching, min_tokens and stopping at EOS.
 *
 * The sampler's own distribution tests (temperature, top-k, top-p, EOS suppression, chi-square on
 * synthetic logits) are in tests/sampling_test.ts; here the sampler runs end to end through generate().
 */
import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert/strict";
import {
  generate,
  type GenerateOptions,
  type Generation,
  Generator,
  planBatches,
} from "../model/generate.ts";
import { GPT2, initWeights, Workspace } from "../model/gpt2.ts";
import type { GPT2Config } from "../model/config.ts";
import { loadCheckpoint, loadTokenizer, saveCheckpoint } from "../cli/files.ts";
import { BYTE_TO_CHAR } from "../model/bpe_format.ts";
import { parseSafetensors, type Tensor } from "../model/safetensors.ts";
import { tokenizerJsonFromGpt2Files } from "../model/tokenizer.ts";
import { runGenerate } from "../cli/generate.ts";
import { UsageError } from "../cli/common.ts";
import { samplingDistributionRef } from "./reference/sampling.ts";
import { assertClose, testGpu } from "./util.ts";

const FIXTURE = new URL("./fixtures/gpt2_tiny/", import.meta.url).pathname;

interface GenCase {
  model: GPT2;
  contexts: number[][];
  greedy: number[][];
}

let genCase: Promise<GenCase> | undefined;
/** The fixture's generation case: its own weights on the tiny config, 3 contexts, PyTorch greedy output. */
function loadGenCase(): Promise<GenCase> {
  genCase ??= (async () => {
    const gpu = await testGpu();
    const { config } = await loadCheckpoint(FIXTURE);
    const ref = parseSafetensors(await Deno.readFile(FIXTURE + "reference.safetensors"), "reference")
      .tensors;
    const get = (name: string): Tensor => {
      const t = ref.get(name);
      if (!t) throw new Error(`reference.safetensors has no ${name} (rerun tests/make_fixtures.py)`);
      return t;
    };
    const weights = new Map<string, Float32Array>();
    for (const [name, t] of ref) {
      if (name.startsWith("gen.weight.")) weights.set(name.slice(11), Float32Array.from(t.data));
    }
    const rows = (t: Tensor) => {
      const [n, w] = t.shape;
      return Array.from({ length: n }, (_, i) => Array.from(t.data.slice(i * w, (i + 1) * w), Number));
    };
    const lengths = Array.from(get("gen.context_lengths").data, Number);
    const contexts = rows(get("gen.contexts")).map((r, i) => r.slice(0, lengths[i]));
    return { model: GPT2.create(gpu, config, weights), contexts, greedy: rows(get("gen.greedy")) };
  })();
  return genCase;
}

/**
 * Reference log-probabilities from one Workspace forward pass over `seq` (no cache): for each position
 * t < seq.length - 1, log p(v | seq[0..t]) for the K ids v in `candidates[t]`. Copy c of the sequence
 * has target candidates[t][c] at position t, and the workspace's lp is log softmax at the target.
 */
async function referenceLogprobs(
  model: GPT2,
  seq: number[],
  candidates: number[][],
): Promise<Float32Array[]> {
  const T = seq.length - 1, K = candidates[0].length;
  const ws = new Workspace(model, K, T);
  const inputs = new Uint32Array(K * T), targets = new Uint32Array(K * T);
  for (let c = 0; c < K; c++) {
    inputs.set(seq.slice(0, T), c * T);
    for (let t = 0; t < T; t++) targets[c * T + t] = candidates[t][c];
  }
  ws.setBatch(inputs, targets);
  ws.forward.run();
  const lp = await model.gpu.read(ws.lp);
  ws.destroy();
  return Array.from({ length: T }, (_, t) => Float32Array.from({ length: K }, (_, c) => lp[c * T + t]));
}

/** K = 8 ids per position, spread over the vocabulary, starting with the token that came next. */
function spreadCandidates(seq: number[], V: number, K = 8): number[][] {
  const stride = Math.floor(V / K);
  return seq.slice(1).map((next) => Array.from({ length: K }, (_, j) => (next + j * stride) % V));
}

/** log softmax of a row, in float64. */
function logSoftmax(z: ArrayLike<number>): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < z.length; i++) m = Math.max(m, z[i]);
  let s = 0;
  for (let i = 0; i < z.length; i++) s += Math.exp(z[i] - m);
  const lse = m + Math.log(s);
  return Float64Array.from(z as ArrayLike<number>, (v) => v - lse);
}

/**
 * Generate with the logits hook, then check every step's logits against a full forward pass of the
 * context plus the tokens generated before that step. EOS is suppressed (minTokens = maxTokens) so every
 * row runs all steps.
 */
async function checkStepLogits(model: GPT2, contexts: number[][], options: GenerateOptions, name: string) {
  const V = model.config.vocabSize;
  const n = options.maxTokens;
  const seen: Float32Array[][] = contexts.map(() => []);
  const out = await generate(model, contexts, {
    ...options,
    minTokens: n,
    onStepLogits: (step, logits, seqIndices) => {
      seqIndices.forEach((i, j) => (seen[i][step] = logits.slice(j * V, (j + 1) * V)));
    },
  });
  for (let i = 0; i < contexts.length; i++) {
    assertEquals(out[i].tokens.length, n, `${name} ${i}: all ${n} tokens`);
    // Candidates include every sampled token; the cached side is a full-vocabulary log softmax, so its
    // normaliser is checked too.
    const seq = [...contexts[i], ...out[i].tokens];
    const cands = spreadCandidates(seq, V);
    const full = await referenceLogprobs(model, seq, cands);
    const K = cands[0].length;
    const cached = new Float64Array(n * K), want = new Float64Array(n * K);
    for (let k = 0; k < n; k++) {
      const t = contexts[i].length - 1 + k;
      const row = logSoftmax(seen[i][k]);
      cands[t].forEach((v, c) => (cached[k * K + c] = row[v]));
      want.set(full[t], k * K);
    }
    assertClose(`${name} seq ${i} (ctx ${contexts[i].length})`, cached, want, { rtol: 0, atol: 1e-4 });
  }
  return out;
}

/** A random model with matrices scaled up (std 0.5, wte std 1) so logits depend strongly on the context. */
async function sharpModel(config: GPT2Config, seed: number): Promise<GPT2> {
  const w = initWeights(config, seed);
  for (const [name, a] of w) {
    if (name.endsWith(".weight") && !name.includes("ln_")) {
      const scale = name === "wte.weight" ? 50 : 25; // initWeights' std is 0.02 (c_proj: less)
      for (let i = 0; i < a.length; i++) a[i] *= scale;
    }
  }
  return GPT2.create(await testGpu(), config, w);
}

const WIDE: GPT2Config = {
  vocabSize: 97,
  nPositions: 48,
  nEmbd: 64,
  nLayer: 2,
  nHead: 4,
  layerNormEpsilon: 1e-5,
  bosTokenId: 96,
  eosTokenId: 96,
};

Deno.test("cached decode logits equal a full forward pass of each prefix (fixture model, split batches)", async () => {
  const { model, contexts } = await loadGenCase();
  // batchSize 2: the 3 contexts run as two batches of different shapes (state rebuilt in between).
  await checkStepLogits(model, contexts, { maxTokens: 8, temperature: 1, seed: 5, batchSize: 2 }, "fixture");
});

Deno.test("cached decode logits equal a full forward pass (C=64, 4 heads, padded prefill, 20 steps)", async () => {
  const model = await sharpModel(WIDE, 3);
  const r = (n: number, s: number) => Array.from({ length: n }, (_, i) => (i * 37 + s * 11) % 96);
  // Lengths 1, 9 and 23: the prefill pads to 23 rounded up to 32, capped at 48 - 20 = 28.
  const contexts = [[96], [96, ...r(8, 1)], [96, ...r(22, 2)]];
  await checkStepLogits(model, contexts, { maxTokens: 20, temperature: 1.5, topK: 20, seed: 9 }, "wide");
});

Deno.test("greedy continuations equal PyTorch's token for token", async () => {
  const { model, contexts, greedy } = await loadGenCase();
  const eos = model.config.eosTokenId;
  const out = await generate(model, contexts, { maxTokens: 8, temperature: 0 });
  out.forEach((g, i) => {
    const stop = greedy[i].indexOf(eos);
    const want: Generation = stop >= 0
      ? { tokens: greedy[i].slice(0, stop), finishReason: "stop" }
      : { tokens: greedy[i], finishReason: "length" };
    console.log(`  context ${contexts[i].length} tokens: ${g.tokens.join(" ")} (${g.finishReason})`);
    assertEquals(g, want, `context ${i}`);
  });
});

Deno.test("same seed, same tokens; alone or in any batch split, a sequence gets the same tokens", async () => {
  const { model, contexts } = await loadGenCase();
  const opts: GenerateOptions = { maxTokens: 8, temperature: 1.3, topP: 0.95, topK: 30, seed: 11 };
  const a = await generate(model, contexts, opts);
  assertEquals(await generate(model, contexts, opts), a, "rerun");
  assertEquals(await generate(model, contexts, { ...opts, batchSize: 1 }), a, "one per batch");
  // Alone, each context keeps its sequence id through firstId.
  for (let i = 0; i < contexts.length; i++) {
    assertEquals(await generate(model, [contexts[i]], opts, i), [a[i]], `context ${i} alone`);
  }
  const other = await generate(model, contexts, { ...opts, seed: 12 });
  assert(JSON.stringify(other) !== JSON.stringify(a), "another seed gives other tokens");
  const all = a.map((g) => g.tokens.join(" "));
  console.log(`  seed 11: ${all.join(" | ")}`);
  assert(new Set(all).size > 1, "sampled continuations differ between contexts");
});

Deno.test("a Generator keeps its buffers across calls of one shape", async () => {
  const { model, contexts } = await loadGenCase();
  const gpu = model.gpu;
  const g = new Generator(model);
  const opts: GenerateOptions = { maxTokens: 6, temperature: 1, seed: 3 };
  const first = await g.generate(contexts, opts);
  const bytes = gpu.allocatedBytes;
  for (let i = 0; i < 3; i++) assertEquals(await g.generate(contexts, opts), first, `call ${i}`);
  assertEquals(gpu.allocatedBytes, bytes, "no allocation for a repeated shape");
  // A new shape frees the old state, uniforms included: back to the same bytes after returning.
  await g.generate(contexts.slice(0, 1), { ...opts, maxTokens: 3 });
  assertEquals(await g.generate(contexts, opts), first);
  assertEquals(gpu.allocatedBytes, bytes, "shape changes leave nothing behind");
  // A cache sized for longer contexts (another stride) changes nothing; shorter contexts then reuse it.
  const sized = { ...opts, maxContextTokens: 10 };
  assertEquals(await g.generate(contexts, sized), first, "cache for 10-token contexts");
  const short = contexts.map((c) => c.slice(0, 2));
  assertEquals(await g.generate(short, sized), await generate(model, short, opts), "short contexts");
  g.destroy();
  assertEquals(await generate(model, contexts, opts), first, "a fresh generator agrees");
});

Deno.test("min_tokens suppresses EOS; EOS stops a row with finish_reason stop", async () => {
  const { model, contexts, greedy } = await loadGenCase();
  const g = greedy[0]; // 14 34 35 ...: take the third greedy token as EOS
  assert(g[0] !== g[2] && g[1] !== g[2], "fixture: the third greedy token is new");
  const eosId = g[2];
  const stopped = await generate(model, [contexts[0]], { maxTokens: 8, temperature: 0, eosId });
  assertEquals(stopped, [{ tokens: g.slice(0, 2), finishReason: "stop" }]);
  const held = await generate(model, [contexts[0]], { maxTokens: 8, temperature: 0, eosId, minTokens: 4 });
  const t = held[0].tokens;
  assert(t.length >= 4 && !t.slice(0, 4).includes(eosId), `min 4 tokens without EOS: ${t}`);
  assertEquals(t.slice(0, 2), g.slice(0, 2));
  // Sampling: EOS at temperature 1 with min_tokens = max_tokens never ends a row early.
  const sampled = await generate(model, contexts, { maxTokens: 8, minTokens: 8, eosId, seed: 1 });
  for (const s of sampled) {
    assertEquals([s.tokens.length, s.finishReason, s.tokens.includes(eosId)], [8, "length", false]);
  }
});

Deno.test("a batch whose rows have all stopped ends early with the right tokens", async () => {
  const model = await sharpModel(WIDE, 4);
  const ctx = [96, 5, 7];
  const [free] = await generate(model, [ctx], { maxTokens: 40, temperature: 0 });
  // EOS = the 18th greedy token: the row stops at its first occurrence, seen by the history read after
  // the first 16-step submission or the next, while another submission is in flight.
  const eosId = free.tokens[17];
  const stop = free.tokens.indexOf(eosId);
  const out = await generate(model, [ctx, ctx], { maxTokens: 40, temperature: 0, eosId });
  for (const o of out) assertEquals(o, { tokens: free.tokens.slice(0, stop), finishReason: "stop" });
});

Deno.test("sampled tokens through generate follow the exact top-p distribution of the model", async () => {
  const { model } = await loadGenCase();
  // BOS alone at temperature 2 keeps 3 tokens under top-p 0.8 (cumulative mass 0.38, 0.66, 0.84: the
  // boundary is far from 0.8, so float32 rounding cannot move it).
  const n = 1200;
  const ctx = [model.config.bosTokenId];
  const V = model.config.vocabSize;
  const [lp] = await referenceLogprobs(model, [...ctx, 0], [Array.from({ length: V }, (_, v) => v)]);
  const temperature = 2, topP = 0.8;
  const probs = samplingDistributionRef(lp, { temperature, topP, topK: 0 });
  const out = await generate(model, Array.from({ length: n }, () => ctx), {
    maxTokens: 1,
    temperature,
    topP,
    minTokens: 1,
    seed: 77,
    batchSize: n,
  });
  const counts = new Float64Array(probs.length);
  for (const o of out) counts[o.tokens[0]]++;
  let stat = 0, df = -1, outside = 0;
  probs.forEach((p, j) => {
    if (p > 0) {
      stat += (counts[j] - p * n) ** 2 / (p * n);
      df++;
    } else outside += counts[j];
  });
  // Upper 0.1% point of chi-square(df), Wilson-Hilferty: df (1 - 2/(9df) + 3.09 sqrt(2/(9df)))^3.
  const crit = df * (1 - 2 / (9 * df) + 3.09 * Math.sqrt(2 / (9 * df))) ** 3;
  console.log(
    `  ${df + 1} tokens kept, chi2 = ${stat.toFixed(2)} (0.1% point ${crit.toFixed(2)}), outside ${outside}`,
  );
  assertEquals(df + 1, 3, "the nucleus keeps 3 tokens");
  assertEquals(outside, 0, "no draws outside the nucleus");
  assert(stat < crit, `chi-square ${stat} >= ${crit}`);
});

Deno.test("batch planning follows the binding limit and the memory budget", () => {
  const cfg = WIDE;
  const p = planBatches(cfg, { maxStorageBufferBindingSize: 1 << 30 }, 100, 10, 20);
  assertEquals(p.maxT, 16 + 20);
  assertEquals(p.batchSize, 64);
  const small = planBatches(cfg, { maxStorageBufferBindingSize: 1 << 30 }, 100, 10, 20, {
    memoryBytes: 5 * p.bytesPerSequence + 1,
  });
  assertEquals(small.batchSize, 5);
  // The widest per-sequence tensor is the prefill's [16, 4C] (16384 bytes; the cache row is 36 * 64 * 4).
  assertEquals(planBatches(cfg, { maxStorageBufferBindingSize: 50000 }, 100, 10, 20).batchSize, 3);
  assertThrows(() => planBatches(cfg, { maxStorageBufferBindingSize: 1000 }, 1, 10, 20), /binding/);
});

Deno.test("bad inputs fail with clear errors", async () => {
  const { model } = await loadGenCase();
  const bad = async (contexts: number[][], options: GenerateOptions, re: RegExp) => {
    let err: Error | undefined;
    try {
      await generate(model, contexts, options);
    } catch (e) {
      err = e as Error;
    }
    assert(err && re.test(err.message), `expected ${re}, got ${err?.message}`);
  };
  await bad([[60]], { maxTokens: 0 }, /maxTokens must be an integer >= 1, got 0/);
  await bad([[60]], { maxTokens: 4, minTokens: 5 }, /minTokens must be an integer in \[0, maxTokens=4\]/);
  await bad([[]], { maxTokens: 4 }, /context 0 is empty/);
  await bad([[60], [60, 61]], { maxTokens: 4 }, /context 1, position 1: token 61 is not an id in \[0, 61\)/);
  await bad([[60, 1, 2]], { maxTokens: 14 }, /context 0 has 3 tokens; with maxTokens 14 it exceeds .* 16/);
  await bad([[60]], { maxTokens: 4, topP: 0 }, /topP must be in \(0, 1\]/);
  await bad([[60]], { maxTokens: 4, eosId: 99 }, /eosId must be a token id in \[0, 61\)/);
  assertEquals(await generate(model, [], { maxTokens: 4 }), []);
});

/**
 * A model directory for the CLI. Without a tokenizer: the fixture's tiny model (61 ids). With one: a
 * random model over 257 ids saved by saveCheckpoint with a byte-level tokenizer.json whose id b is byte b
 * (no merges) and <|endoftext|> is 256 (the model's BOS and EOS).
 */
async function cliModelDir(withTokenizer: boolean): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "generate_test_" });
  if (!withTokenizer) {
    for (const f of ["config.json", "model.safetensors"]) await Deno.copyFile(FIXTURE + f, `${dir}/${f}`);
    return dir;
  }
  const config = { ...WIDE, vocabSize: 257, nEmbd: 16, bosTokenId: 256, eosTokenId: 256 };
  const vocab: Record<string, number> = Object.fromEntries(BYTE_TO_CHAR.map((c, b) => [c, b]));
  vocab["<|endoftext|>"] = 256;
  const model = await sharpModel(config, 8);
  await saveCheckpoint(`${dir}/m`, config, await model.getWeights(), {
    "tokenizer.json": tokenizerJsonFromGpt2Files(JSON.stringify(vocab), ""),
  });
  return `${dir}/m`;
}

Deno.test("deno task generate: tokens and text lines in, one JSON line per context out", async () => {
  const dir = await cliModelDir(true);
  const input = `${dir}/in.jsonl`, output = `${dir}/out.jsonl`;
  await Deno.writeTextFile(input, '{"tokens": [256, 3, 4]}\n\n{"text": "the cat."}\n{"tokens": [256]}\n');
  const args = ["--model", dir, "--input", input, "--output", output, "--max-tokens", "6"];
  await runGenerate([...args, "--temperature", "0.9", "--top-k", "20", "--seed", "4", "--batch-size", "2"]);
  const lines = (await Deno.readTextFile(output)).trimEnd().split("\n").map((l) => JSON.parse(l));
  const tok = await loadTokenizer(`${dir}/tokenizer.json`);
  const { config, weights } = await loadCheckpoint(dir);
  const contexts = [[256, 3, 4], [256, ...tok.encode("the cat.")], [256]];
  assertEquals(contexts[1], [256, ...[..."the cat."].map((c) => c.charCodeAt(0))]);
  const model = GPT2.create(await testGpu(), config, weights);
  const want = await generate(model, contexts, { maxTokens: 6, temperature: 0.9, topK: 20, seed: 4 });
  assertEquals(
    lines,
    want.map((g) => ({ tokens: g.tokens, text: tok.decode(g.tokens), finish_reason: g.finishReason })),
  );
  console.log(`  ${lines.map((l) => JSON.stringify(l.text)).join(" ")}`);
  await Deno.remove(dir.replace(/\/m$/, ""), { recursive: true });
});

Deno.test("deno task generate: errors name the file and line", async () => {
  const dir = await cliModelDir(false);
  const input = `${dir}/in.jsonl`;
  const fails = async (lines: string, extra: string[], re: RegExp) => {
    await Deno.writeTextFile(input, lines);
    let err: Error | undefined;
    try {
      await runGenerate(["--model", dir, "--input", input, "--max-tokens", "4", ...extra]);
    } catch (e) {
      err = e as Error;
    }
    assert(err instanceof UsageError && re.test(err.message), `expected ${re}, got ${err?.message}`);
  };
  const p = input.replace(/[.]/g, "\\.");
  await fails('{"tokens": [60]}\n{"tokens": [60, 1\n', [], new RegExp(`${p}:2: not valid JSON`));
  await fails(
    '\n{"tokens": [60, 61]}\n',
    [],
    new RegExp(`${p}:2: "tokens"\\[1\\] must be a token id in \\[0, 61\\), found 61`),
  );
  await fails('{"tokens": []}\n', [], new RegExp(`${p}:1: "tokens" has 0 tokens; at least 1 are needed`));
  await fails(
    '{"tokens": [1], "text": "a"}\n',
    [],
    new RegExp(`${p}:1: expected a "tokens" .* field, exactly one`),
  );
  await fails("[1, 2]\n", [], new RegExp(`${p}:1: expected an object`));
  await fails(
    '{"tokens": [1]}\n{"text": "hi"}\n',
    [],
    /in\.jsonl:2: "text" is text, but .* has no tokenizer\.json/,
  );
  await fails(
    `{"tokens": [${new Array(13).fill(1)}]}\n`,
    [],
    /:1: "tokens" has 13 tokens; with --max-tokens 4 the model's 16 positions allow at most 12/,
  );
  await fails('{"tokens": [1]}\n', ["--top-p", "0"], /--top-p must be in/);
  await fails('{"tokens": [1]}\n', ["--max-tokens", "x"], /--max-tokens must be an integer, got "x"/);
  await fails('{"tokens": [1]}\n', ["--bogus"], /Unknown option '--bogus'/);
  let err: Error | undefined;
  try {
    await runGenerate(["--model", `${dir}/none`, "--input", input]);
  } catch (e) {
    err = e as Error;
  }
  assert(err && /--model .*none: .*none\/config\.json: not found/.test(err.message), err?.message);
  await Deno.remove(dir, { recursive: true });
});
