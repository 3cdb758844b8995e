import assert from "node:assert/strict";
import {
  hfConfigJson,
  parseHfConfig,
  safetensorsFromWeights,
  weightsFromSafetensors,
} from "../model/checkpoint.ts";
import { loadCheckpoint, saveCheckpoint } from "../cli/files.ts";
import { GPT2_124M, GPT2_DROPOUT, type GPT2Config } from "../model/config.ts";
import { numel, paramTable } from "../model/params.ts";
import { parseSafetensors, serializeSafetensors, type TensorToWrite } from "../model/safetensors.ts";

const DIR = new URL("./fixtures/gpt2_tiny/", import.meta.url).pathname;
const TINY: GPT2Config = {
  vocabSize: 61,
  nPositions: 16,
  nEmbd: 16,
  nLayer: 2,
  nHead: 2,
  layerNormEpsilon: 1e-5,
  bosTokenId: 60,
  eosTokenId: 60,
  dropout: GPT2_DROPOUT,
};

/** The fixture's tensors by their stored names, as written by tests/make_fixtures.py. */
async function fixtureTensors(): Promise<Map<string, TensorToWrite>> {
  const { tensors } = parseSafetensors(await Deno.readFile(DIR + "model.safetensors"));
  return new Map([...tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data as Float32Array }]));
}

/** Safetensors bytes from the fixture's tensors after `edit` (rename, drop, add). */
async function edited(edit: (m: Map<string, TensorToWrite>) => void): Promise<Uint8Array> {
  const m = await fixtureTensors();
  edit(m);
  return serializeSafetensors(m);
}

function mean(a: Float32Array): number {
  return a.reduce((s, x) => s + x, 0) / a.length;
}

function std(a: Float32Array): number {
  const m = mean(a);
  return Math.sqrt(a.reduce((s, x) => s + (x - m) ** 2, 0) / a.length);
}

Deno.test("checkpoint: config.json parses, and hfConfigJson writes what the fixture (transformers format) holds", async () => {
  const text = await Deno.readTextFile(DIR + "config.json");
  const config = parseHfConfig(text, "fixture config.json");
  assert.deepEqual(config, TINY);
  assert.deepEqual(hfConfigJson(config), JSON.parse(text));
  assert.deepEqual(
    Object.keys(hfConfigJson(config)),
    Object.keys(JSON.parse(text)),
    "same (sorted) key order",
  );
  assert.deepEqual(parseHfConfig(hfConfigJson(GPT2_124M)), GPT2_124M);
  // Missing fields take transformers' GPT2Config defaults.
  assert.deepEqual(parseHfConfig("{}"), GPT2_124M);
  assert.deepEqual(parseHfConfig({ n_layer: 3, activation_function: "gelu_pytorch_tanh" }), {
    ...GPT2_124M,
    nLayer: 3,
  });
  // Dropout rates are read and written as they are; absent ones are transformers' 0.1.
  const rates = { embdPdrop: 0, attnPdrop: 0.25, residPdrop: 0.05 };
  const json = hfConfigJson({ ...TINY, dropout: rates });
  assert.deepEqual([json.embd_pdrop, json.attn_pdrop, json.resid_pdrop], [0, 0.25, 0.05]);
  assert.deepEqual(parseHfConfig(json).dropout, rates);
  assert.deepEqual(parseHfConfig({ attn_pdrop: 0 }).dropout, { ...GPT2_DROPOUT, attnPdrop: 0 });
  const { dropout: _, ...unstated } = TINY;
  assert.equal(hfConfigJson(unstated).resid_pdrop, 0.1);
});

Deno.test("checkpoint: unsupported or invalid config.json values are refused with the field name", () => {
  const base = hfConfigJson(TINY);
  const cases: Array<[Record<string, unknown> | string, RegExp]> = [
    ["{not json", /c\.json: not valid JSON/],
    ["[1]", /c\.json: expected a JSON object, found an array/],
    [{ ...base, model_type: "llama" }, /model_type must be "gpt2".*found "llama"/],
    [{ ...base, activation_function: "relu" }, /activation_function must be "gelu_new".*found "relu"/],
    [{ ...base, tie_word_embeddings: false }, /tie_word_embeddings must be true/],
    [{ ...base, n_inner: 32 }, /n_inner must be null or 4 \* n_embd = 64.*found 32/],
    [{ ...base, scale_attn_by_inverse_layer_idx: true }, /scale_attn_by_inverse_layer_idx must be false/],
    [{ ...base, n_head: 3 }, /nEmbd \(16\) must be divisible by nHead \(3\)/],
    [{ ...base, n_layer: "2" }, /n_layer must be a number, found "2"/],
    [{ ...base, eos_token_id: 61 }, /eosTokenId must be a token id in \[0, 61\), got 61/],
    [{ ...base, vocab_size: 0 }, /vocabSize must be a positive integer, got 0/],
    [{ ...base, resid_pdrop: 1 }, /c\.json: resid_pdrop must be a dropout rate in \[0, 1\), found 1/],
    [{ ...base, attn_pdrop: "0.1" }, /attn_pdrop must be a dropout rate/],
  ];
  for (const [json, pattern] of cases) {
    assert.throws(() => parseHfConfig(json, "c.json"), pattern, JSON.stringify(json).slice(0, 60));
  }
});

Deno.test("checkpoint: loads the tiny fixture with every parameter in its shape", async () => {
  const { config, weights } = await loadCheckpoint(DIR);
  assert.deepEqual(config, TINY);
  const table = paramTable(config);
  assert.deepEqual([...weights.keys()].sort(), table.map((s) => s.name).sort());
  for (const s of table) assert.equal(weights.get(s.name)!.length, numel(s.shape), s.name);
  // The values are the ones make_fixtures.py drew: LayerNorm weights 1 + N(0, 0.2), c_attn N(0, 0.3),
  // other matrices N(0, 0.02). Loose bounds that a shuffled or misread tensor would miss.
  const ln = weights.get("h.1.ln_2.weight")!;
  assert.ok(
    Math.abs(mean(ln) - 1) < 0.15 && std(ln) > 0.1 && std(ln) < 0.3,
    `ln mean ${mean(ln)} std ${std(ln)}`,
  );
  const attn = std(weights.get("h.0.attn.c_attn.weight")!);
  assert.ok(attn > 0.25 && attn < 0.35, `c_attn std ${attn}`);
  const wte = std(weights.get("wte.weight")!);
  assert.ok(wte > 0.017 && wte < 0.023, `wte std ${wte}`);
  // Same floats as a plain read of the stored tensor.
  const stored = (await fixtureTensors()).get("transformer.h.1.mlp.c_proj.weight")!.data;
  assert.deepEqual(weights.get("h.1.mlp.c_proj.weight"), stored);
});

Deno.test("checkpoint: safetensorsFromWeights writes the fixture's bytes exactly (transformer. names, no lm_head)", async () => {
  const bytes = await Deno.readFile(DIR + "model.safetensors");
  const weights = weightsFromSafetensors(bytes, TINY);
  const written = safetensorsFromWeights(weights, TINY);
  assert.deepEqual(written, bytes);
  const names = [...parseSafetensors(written).tensors.keys()];
  assert.ok(names.every((n) => n.startsWith("transformer.")), names.join());
  assert.ok(!names.includes("lm_head.weight"));
  assert.deepEqual(weightsFromSafetensors(written, TINY), weights);
});

Deno.test("checkpoint: accepts names without the prefix and skips mask buffers and a tied lm_head", async () => {
  const reference = weightsFromSafetensors(await Deno.readFile(DIR + "model.safetensors"), TINY);
  const bytes = await edited((m) => {
    const wte = m.get("transformer.wte.weight")!;
    for (const [k, v] of [...m]) {
      m.delete(k);
      m.set(k.slice("transformer.".length), v);
    }
    m.set("lm_head.weight", wte);
    m.set("h.0.attn.bias", { shape: [1, 1, 16, 16], data: new Float32Array(256) });
    m.set("transformer.h.1.attn.masked_bias", { shape: [], data: Float32Array.of(-1e4) });
  });
  assert.deepEqual(weightsFromSafetensors(bytes, TINY), reference);
});

Deno.test("checkpoint: widens BF16 weights to f32 (F16 decoding is checked in safetensors_test.ts)", async () => {
  const weights = weightsFromSafetensors(await Deno.readFile(DIR + "model.safetensors"), TINY);
  // Store every weight as BF16 (the top 16 bits), then expect exactly those truncated values back.
  const entries = paramTable(TINY).map((s) => {
    const bits = new Uint32Array(weights.get(s.name)!.slice().buffer);
    return { name: "transformer." + s.name, shape: s.shape, half: Uint16Array.from(bits, (b) => b >>> 16) };
  });
  let at = 0;
  const header: Record<string, unknown> = {};
  for (const e of entries) {
    header[e.name] = { dtype: "BF16", shape: e.shape, data_offsets: [at, at + 2 * e.half.length] };
    at += 2 * e.half.length;
  }
  const h = new TextEncoder().encode(JSON.stringify(header));
  const file = new Uint8Array(8 + h.length + at);
  new DataView(file.buffer).setBigUint64(0, BigInt(h.length), true);
  file.set(h, 8);
  let p = 8 + h.length;
  for (const e of entries) {
    file.set(new Uint8Array(e.half.buffer), p);
    p += e.half.byteLength;
  }
  const loaded = weightsFromSafetensors(file, TINY);
  for (const e of entries) {
    const expected = new Float32Array(Uint32Array.from(e.half, (x) => x << 16).buffer);
    assert.deepEqual(loaded.get(e.name.slice("transformer.".length)), expected, e.name);
  }
});

Deno.test("checkpoint: weight errors name the tensor (missing, unexpected, duplicate, shape, dtype)", async () => {
  const cases: Array<[(m: Map<string, TensorToWrite>) => void, RegExp]> = [
    [(m) => m.delete("transformer.h.1.ln_2.bias"), /w\.st: missing tensor "transformer\.h\.1\.ln_2\.bias"/],
    [
      (m) => m.set("transformer.h.2.ln_1.weight", { shape: [16], data: new Float32Array(16) }),
      /w\.st: unexpected tensor "transformer\.h\.2\.ln_1\.weight": not a parameter of GPT-2 with 2 layers/,
    ],
    [
      (m) => m.set("wpe.weight", m.get("transformer.wpe.weight")!),
      /w\.st: tensor "wpe\.weight" duplicates "transformer\.wpe\.weight"/,
    ],
    [
      (m) => m.set("transformer.h.0.attn.c_attn.weight", { shape: [48, 16], data: new Float32Array(768) }),
      /tensor "transformer\.h\.0\.attn\.c_attn\.weight" has shape \[48,16\], expected \[16,48\]/,
    ],
    [
      (m) => m.set("transformer.ln_f.bias", { shape: [16], data: new Int32Array(16) }),
      /tensor "transformer\.ln_f\.bias" has dtype I32, expected F32, F16 or BF16/,
    ],
  ];
  for (const [edit, pattern] of cases) {
    const bytes = await edited(edit);
    assert.throws(() => weightsFromSafetensors(bytes, TINY, "w.st"), pattern);
  }
  // Config mismatch: a 3-layer config finds layer 2 missing; a wider vocabulary finds wte too small.
  const fixture = await Deno.readFile(DIR + "model.safetensors");
  assert.throws(
    () => weightsFromSafetensors(fixture, { ...TINY, nLayer: 3 }),
    /missing tensor "transformer\.h\.2\.ln_1\.weight", .* and 7 more/,
  );
  assert.throws(
    () => weightsFromSafetensors(fixture, { ...TINY, vocabSize: 62 }),
    /"transformer\.wte\.weight" has shape \[61,16\], expected \[62,16\]/,
  );
  // Writer side.
  const weights = weightsFromSafetensors(fixture, TINY);
  const missing = new Map(weights);
  missing.delete("ln_f.weight");
  assert.throws(() => safetensorsFromWeights(missing, TINY), /missing weight "ln_f\.weight"/);
  assert.throws(
    () => safetensorsFromWeights(new Map([...weights, ["extra", new Float32Array(1)]]), TINY),
    /unexpected weight "extra"/,
  );
  const short = new Map(weights).set("wpe.weight", new Float32Array(10));
  assert.throws(
    () => safetensorsFromWeights(short, TINY),
    /"wpe\.weight" has 10 elements, expected 256 \(\[16,16\]\)/,
  );
});

/** Names in `parent`, sorted, to see that no temporary or old directory is left behind. */
async function listDir(parent: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(parent)) names.push(e.name);
  return names.sort();
}

Deno.test("checkpoint: saveCheckpoint round trips, replaces atomically, and leaves the old one on failure", async () => {
  const parent = await Deno.makeTempDir({ prefix: "ckpt_test_" });
  try {
    const { config, weights } = await loadCheckpoint(DIR);
    const dir = `${parent}/run/checkpoint_1M`;
    await saveCheckpoint(dir, config, weights, {
      "tokenizer.json": '{"v": 1}',
      "state/opt.bin": Uint8Array.of(1, 2, 3),
    });
    assert.deepEqual(await listDir(`${parent}/run`), ["checkpoint_1M"]);
    // With a tokenizer.json come the tokenizer files that name a pad token for transformers.
    assert.deepEqual(await listDir(dir), [
      "config.json",
      "model.safetensors",
      "special_tokens_map.json",
      "state",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    assert.deepEqual(await loadCheckpoint(dir + "/"), { config, weights });
    assert.deepEqual(
      await Deno.readFile(`${dir}/model.safetensors`),
      await Deno.readFile(DIR + "model.safetensors"),
    );
    assert.deepEqual(
      JSON.parse(await Deno.readTextFile(`${dir}/config.json`)),
      JSON.parse(await Deno.readTextFile(DIR + "config.json")),
    );
    assert.deepEqual(await Deno.readFile(`${dir}/state/opt.bin`), Uint8Array.of(1, 2, 3));

    // Overwrite with new weights and no extra files: the old directory's files are gone.
    const changed = new Map(weights).set("ln_f.bias", new Float32Array(16).fill(0.5));
    await saveCheckpoint(dir, config, changed);
    assert.deepEqual(await listDir(`${parent}/run`), ["checkpoint_1M"]);
    assert.deepEqual(await listDir(dir), ["config.json", "model.safetensors"]);
    assert.deepEqual((await loadCheckpoint(dir)).weights.get("ln_f.bias"), new Float32Array(16).fill(0.5));

    // Failures before and during writing leave the previous checkpoint intact and nothing else behind.
    const before = await Deno.readFile(`${dir}/model.safetensors`);
    const bad = new Map(weights);
    bad.delete("wte.weight");
    await assert.rejects(saveCheckpoint(dir, config, bad), /missing weight "wte\.weight"/);
    await assert.rejects(
      saveCheckpoint(dir, config, weights, { "../escape": "x" }),
      /extra file "\.\.\/escape"/,
    );
    await assert.rejects(
      saveCheckpoint(dir, config, weights, { "config.json": "{}" }),
      /written by saveCheckpoint/,
    );
    // "a" as a file, then "a/b" needs "a" as a folder: fails midway, after the temporary directory exists.
    await assert.rejects(saveCheckpoint(dir, config, changed, { "a": "x", "a/b": "y" }));
    assert.deepEqual(await listDir(`${parent}/run`), ["checkpoint_1M"]);
    assert.deepEqual(await Deno.readFile(`${dir}/model.safetensors`), before);

    await Deno.writeTextFile(`${parent}/file`, "x");
    await assert.rejects(
      saveCheckpoint(`${parent}/file`, config, weights),
      /file: exists and is not a directory/,
    );
    await assert.rejects(
      loadCheckpoint(`${parent}/nothing`),
      /nothing\/config\.json: not found \(expected a Hugging Face GPT-2 directory/,
    );
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});
