/**
 * Hugging Face GPT-2 checkpoints: `config.json` and `model.safetensors` in the names and layout that
 * `GPT2LMHeadModel.save_pretrained` uses, so transformers (and the BabyLM evaluation pipeline) load our
 * checkpoints as they are and we load theirs.
 *
 * Everything here is pure (strings and bytes in, values out) so the browser uses it as is; reading and
 * writing directories (`loadCheckpoint`, `saveCheckpoint`) is the Deno edge's, in `cli/files.ts`.
 * @module
 */
import { type DropoutRates, GPT2_124M, GPT2_DROPOUT, type GPT2Config, validateConfig } from "./config.ts";
import { numel, paramTable } from "./params.ts";
import { decodeTensor, parseSafetensorsHeader, serializeSafetensors } from "./safetensors.ts";

/** The model configuration file inside a checkpoint directory. */
export const CONFIG_FILE = "config.json";
/** The weights file inside a checkpoint directory. */
export const WEIGHTS_FILE = "model.safetensors";

/** Prefix transformers gives the body of GPT2LMHeadModel. */
const PREFIX = "transformer.";

/** Fields read from config.json; a missing one takes transformers' GPT2Config default (GPT-2 124M). */
const CONFIG_FIELDS: Array<[string, Exclude<keyof GPT2Config, "dropout">]> = [
  ["vocab_size", "vocabSize"],
  ["n_positions", "nPositions"],
  ["n_embd", "nEmbd"],
  ["n_layer", "nLayer"],
  ["n_head", "nHead"],
  ["layer_norm_epsilon", "layerNormEpsilon"],
  ["bos_token_id", "bosTokenId"],
  ["eos_token_id", "eosTokenId"],
];

/** config.json's dropout rates and their {@link DropoutRates} names. */
const DROPOUT_FIELDS: Array<[string, keyof DropoutRates]> = [
  ["embd_pdrop", "embdPdrop"],
  ["attn_pdrop", "attnPdrop"],
  ["resid_pdrop", "residPdrop"],
];

/**
 * Parse a Hugging Face GPT-2 `config.json` (text or already-parsed object). Missing architecture fields
 * take transformers' defaults, as transformers would; options that change the model's math away from
 * the one this engine computes (another activation, untied head, another MLP width, other attention
 * scaling) are refused with the field's name. `where` names the file in errors.
 */
export function parseHfConfig(json: string | unknown, where = CONFIG_FILE): GPT2Config {
  let obj: unknown = json;
  if (typeof json === "string") {
    try {
      obj = JSON.parse(json);
    } catch (e) {
      throw new Error(`${where}: not valid JSON: ${(e as Error).message}`);
    }
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    throw new Error(`${where}: expected a JSON object, found ${Array.isArray(obj) ? "an array" : obj}`);
  }
  const o = obj as Record<string, unknown>;
  const requireValue = (key: string, ok: (v: unknown) => boolean, expected: string) => {
    if (key in o && !ok(o[key])) {
      throw new Error(
        `${where}: ${key} must be ${expected} for a GPT-2 this engine runs, found ${JSON.stringify(o[key])}`,
      );
    }
  };
  requireValue("model_type", (v) => v === "gpt2", `"gpt2"`);
  // gelu_pytorch_tanh is the same tanh approximation as gelu_new.
  requireValue("activation_function", (v) => v === "gelu_new" || v === "gelu_pytorch_tanh", `"gelu_new"`);
  requireValue("tie_word_embeddings", (v) => v === true, "true (the LM head is tied to wte)");
  requireValue("scale_attn_weights", (v) => v === true, "true");
  requireValue("scale_attn_by_inverse_layer_idx", (v) => v === false, "false");
  requireValue("add_cross_attention", (v) => v === false, "false");

  const config = { ...GPT2_124M };
  for (const [key, field] of CONFIG_FIELDS) {
    if (!(key in o)) continue;
    const v = o[key];
    if (typeof v !== "number") {
      throw new Error(`${where}: ${key} must be a number, found ${JSON.stringify(v)}`);
    }
    config[field] = v;
  }
  requireValue(
    "n_inner",
    (v) => v === null || v === 4 * config.nEmbd,
    `null or 4 * n_embd = ${4 * config.nEmbd}`,
  );
  // Dropout rates: as transformers reads them, 0.1 where absent.
  const dropout = { ...GPT2_DROPOUT };
  for (const [key, field] of DROPOUT_FIELDS) {
    if (!(key in o)) continue;
    const v = o[key];
    if (typeof v !== "number" || !(v >= 0 && v < 1)) {
      throw new Error(`${where}: ${key} must be a dropout rate in [0, 1), found ${JSON.stringify(v)}`);
    }
    dropout[field] = v;
  }
  config.dropout = dropout;
  return validateConfig(config, where);
}

/**
 * The `config.json` object transformers writes for this model with `GPT2LMHeadModel.save_pretrained`
 * (keys sorted, as transformers sorts them). The dropout rates are the config's (transformers' defaults
 * where it states none; they do not affect inference); initializer_range is transformers' default.
 * `transformers_version` records the release whose file this mirrors.
 */
export function hfConfigJson(config: GPT2Config): Record<string, unknown> {
  const dropout = config.dropout ?? GPT2_DROPOUT;
  return {
    activation_function: "gelu_new",
    architectures: ["GPT2LMHeadModel"],
    attn_pdrop: dropout.attnPdrop,
    bos_token_id: config.bosTokenId,
    embd_pdrop: dropout.embdPdrop,
    eos_token_id: config.eosTokenId,
    initializer_range: 0.02,
    layer_norm_epsilon: config.layerNormEpsilon,
    model_type: "gpt2",
    n_embd: config.nEmbd,
    n_head: config.nHead,
    n_inner: null,
    n_layer: config.nLayer,
    n_positions: config.nPositions,
    reorder_and_upcast_attn: false,
    resid_pdrop: dropout.residPdrop,
    scale_attn_by_inverse_layer_idx: false,
    scale_attn_weights: true,
    summary_activation: null,
    summary_first_dropout: 0.1,
    summary_proj_to_labels: true,
    summary_type: "cls_index",
    summary_use_proj: true,
    tie_word_embeddings: true,
    torch_dtype: "float32",
    transformers_version: "4.46.3",
    use_cache: true,
    vocab_size: config.vocabSize,
  };
}

/** Tensors transformers may save that are not parameters here: causal-mask buffers and the tied head. */
function isIgnored(name: string): boolean {
  return name === "lm_head.weight" || /^h\.\d+\.attn\.(bias|masked_bias)$/.test(name);
}

/**
 * Read GPT-2 weights from safetensors bytes into a map keyed by `paramTable(config)` names (no
 * `transformer.` prefix), each a Float32Array (F16/BF16 are widened). Names are accepted with or
 * without the prefix; attention mask buffers and a tied `lm_head.weight` are skipped. A missing tensor,
 * an unexpected one, a duplicate, a non-float dtype or a shape that differs from the config's is an error
 * naming the tensor and `where`.
 */
export function weightsFromSafetensors(
  bytes: Uint8Array,
  config: GPT2Config,
  where = WEIGHTS_FILE,
): Map<string, Float32Array> {
  const { entries } = parseSafetensorsHeader(bytes, where);
  const specs = new Map(paramTable(config).map((s) => [s.name, s]));
  const weights = new Map<string, Float32Array>();
  const found = new Map<string, string>();
  for (const e of entries) {
    const name = e.name.startsWith(PREFIX) ? e.name.slice(PREFIX.length) : e.name;
    if (isIgnored(name)) continue;
    const spec = specs.get(name);
    if (!spec) {
      throw new Error(
        `${where}: unexpected tensor "${e.name}": not a parameter of GPT-2 with ${config.nLayer} layers ` +
          `(expected names like "${PREFIX}h.0.attn.c_attn.weight")`,
      );
    }
    const other = found.get(name);
    if (other !== undefined) throw new Error(`${where}: tensor "${e.name}" duplicates "${other}"`);
    found.set(name, e.name);
    if (e.shape.length !== spec.shape.length || e.shape.some((d, i) => d !== spec.shape[i])) {
      throw new Error(
        `${where}: tensor "${e.name}" has shape [${e.shape}], expected [${spec.shape}] ` +
          `(n_embd ${config.nEmbd}, vocab_size ${config.vocabSize}, n_positions ${config.nPositions})`,
      );
    }
    if (e.dtype !== "F32" && e.dtype !== "F16" && e.dtype !== "BF16") {
      throw new Error(`${where}: tensor "${e.name}" has dtype ${e.dtype}, expected F32, F16 or BF16`);
    }
    weights.set(name, decodeTensor(bytes, e, where) as Float32Array);
  }
  const missing = [...specs.keys()].filter((n) => !weights.has(n));
  if (missing.length > 0) {
    const list = missing.slice(0, 5).map((n) => `"${PREFIX}${n}"`).join(", ");
    throw new Error(
      `${where}: missing tensor ${list}${missing.length > 5 ? ` and ${missing.length - 5} more` : ""}`,
    );
  }
  return weights;
}

/**
 * Serialize weights (keyed by `paramTable(config)` names) as transformers saves GPT2LMHeadModel:
 * F32, `transformer.`-prefixed names, no `lm_head.weight` (tied), `__metadata__` {format: "pt"}. A
 * missing, unexpected or wrongly sized weight is an error naming it.
 */
export function safetensorsFromWeights(
  weights: ReadonlyMap<string, Float32Array>,
  config: GPT2Config,
): Uint8Array {
  const table = paramTable(config);
  const known = new Set(table.map((s) => s.name));
  for (const name of weights.keys()) {
    if (!known.has(name)) throw new Error(`weights: unexpected weight "${name}" for this GPT-2 config`);
  }
  const tensors: Array<[string, { shape: number[]; data: Float32Array }]> = table.map((s) => {
    const data = weights.get(s.name);
    if (!data) throw new Error(`weights: missing weight "${s.name}"`);
    if (data.length !== numel(s.shape)) {
      throw new Error(
        `weights: "${s.name}" has ${data.length} elements, expected ${numel(s.shape)} ([${s.shape}])`,
      );
    }
    return [PREFIX + s.name, { shape: s.shape, data }];
  });
  return serializeSafetensors(tensors);
}

/** A checkpoint in memory. */
export interface Checkpoint {
  config: GPT2Config;
  weights: Map<string, Float32Array>;
}

/**
 * Whether `name` is a temporary of the atomic writers in `cli/files.ts` (a file's `NAME.<id>.tmp`, a
 * checkpoint folder's `NAME.tmp-<id>` and `NAME.old-<id>`): what a write cut by a kill leaves, never a
 * checkpoint or a file of a run.
 */
export function isTemporaryName(name: string): boolean {
  return /\.[0-9a-f]{8}\.tmp$|\.(tmp|old)-[0-9a-f]{8}$/.test(name);
}

/** The tokenizer files transformers reads beside `tokenizer.json`. */
export const TOKENIZER_CONFIG_FILE = "tokenizer_config.json";
export const SPECIAL_TOKENS_FILE = "special_tokens_map.json";

/** Pad-token spellings looked for before falling back to EOS (GPT-2 has none and pads with EOS). */
const PAD_NAMES = ["<pad>", "<|padding|>", "[PAD]"];

/**
 * `tokenizer_config.json` and `special_tokens_map.json` for a checkpoint's `tokenizer.json`: BOS and EOS
 * as config.json's ids spell them (UNK as EOS, as GPT-2's), and a pad token (a `<pad>`-like added token,
 * else EOS), without which transformers refuses to pad a batch, so that the BabyLM pipeline's fine-tuning
 * (`padding=True`) runs on the checkpoint unchanged. `PreTrainedTokenizerFast` loads `tokenizer.json` as
 * it is.
 */
export function tokenizerConfigFiles(
  tokenizerJson: string | Uint8Array,
  config: GPT2Config,
): Record<string, string> {
  const text = typeof tokenizerJson === "string" ? tokenizerJson : new TextDecoder().decode(tokenizerJson);
  const o = JSON.parse(text) as {
    added_tokens?: { id: number; content: string }[];
    model?: { vocab?: Record<string, number> };
  };
  const byId = new Map<number, string>();
  for (const [token, id] of Object.entries(o.model?.vocab ?? {})) byId.set(id, token);
  for (const t of o.added_tokens ?? []) byId.set(t.id, t.content);
  const eos = byId.get(config.eosTokenId);
  // An id the tokenizer does not have (a toy config) leaves its entry out rather than failing the save.
  const specials = Object.fromEntries(
    Object.entries({
      bos_token: byId.get(config.bosTokenId),
      eos_token: eos,
      unk_token: eos,
      pad_token: (o.added_tokens ?? []).find((t) => PAD_NAMES.includes(t.content))?.content ?? eos,
    }).filter(([, v]) => v !== undefined),
  );
  const tokenizerConfig = {
    ...specials,
    add_prefix_space: false,
    clean_up_tokenization_spaces: false,
    model_max_length: config.nPositions,
    tokenizer_class: "PreTrainedTokenizerFast",
  };
  return {
    [TOKENIZER_CONFIG_FILE]: JSON.stringify(tokenizerConfig, null, 2) + "\n",
    [SPECIAL_TOKENS_FILE]: JSON.stringify(specials, null, 2) + "\n",
  };
}
