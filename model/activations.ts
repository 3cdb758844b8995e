/**
 * The activation table: every tensor a {@link Workspace} allocates for one batch shape, with its shape
 * and what it is for, like llm.c's activation table beside its parameter table. The workspace allocates
 * from it and `deno task bench` reports memory from it, so the two cannot disagree.
 *
 * Shapes: B sequences of T positions (N = B*T rows), width C, H heads, vocabulary V.
 * @module
 */
import type { GPT2Config } from "./config.ts";
import { numel } from "./params.ts";
import { EmbeddingGroups } from "../shaders/embedding.ts";
import { halfWords } from "../shaders/f16.ts";

/**
 * What a tensor is for: `batch` the per-row inputs and outputs (tokens, masks, lp); `kept` the forward's
 * activations that backward reads; `scratch` forward values nothing reads later; `grad` backward's
 * activation gradients and the embedding backward's token groups (training only).
 */
export type ActivationRole = "batch" | "kept" | "scratch" | "grad";

/** One tensor of the table (32-bit elements). */
export interface ActivationSpec {
  name: string;
  shape: number[];
  role: ActivationRole;
}

/** The table for one batch shape: tensors of the whole model, and those each block has one set of. */
export interface ActivationTable {
  model: ActivationSpec[];
  layer: ActivationSpec[];
  nLayer: number;
}

/** Default device memory for one chunk of logits rows ({@link logitsChunk}). */
export const DEFAULT_LOGITS_BUDGET_BYTES = 64 * 1024 * 1024;

/** How a workspace holds logits: `rows` rows at a time, row stride `stride`. */
export interface LogitsChunk {
  rows: number;
  /** V rounded up to a multiple of 4, so the LM head's backward matmuls read dlogits as vectors. */
  stride: number;
}

/**
 * The logits chunk for N rows: as many rows as fit `budgetBytes` and one storage binding (or `rows`
 * when given), at least 1; none for a prefill, which only needs each sequence's last row.
 */
export function logitsChunk(
  config: GPT2Config,
  N: number,
  maxBindingBytes: number,
  options: { rows?: number; budgetBytes?: number; prefill?: boolean } = {},
): LogitsChunk {
  const stride = Math.ceil(config.vocabSize / 4) * 4;
  const budget = options.budgetBytes ?? DEFAULT_LOGITS_BUDGET_BYTES;
  const fit = Math.floor(Math.min(budget, maxBindingBytes) / (stride * 4));
  const rows = options.prefill ? 0 : Math.max(1, Math.min(N, options.rows ?? fit));
  return { rows, stride };
}

/** What a workspace records besides the forward pass. */
export interface ActivationOptions {
  /** Backward too: the activation gradients and token groups. */
  training: boolean;
  /** Prefill for generation: no logits chunk, and each sequence's last row `last` [B, C]. */
  prefill: boolean;
  logits: LogitsChunk;
  /** Precision f16 (model/precision.ts): the f16 copies the matmuls read (two halves per element). */
  half?: boolean;
}

/** Every tensor of a workspace for B x T, in allocation order. */
export function activationTable(
  config: GPT2Config,
  B: number,
  T: number,
  options: ActivationOptions,
): ActivationTable {
  const { nEmbd: C, nHead: H, nLayer } = config;
  const N = B * T;
  const a = (name: string, shape: number[], role: ActivationRole): ActivationSpec => ({ name, shape, role });
  const model = [
    a("tokens", [N], "batch"),
    a("targets", [N], "batch"),
    /** ln p(target) per row. */
    a("lp", [N], "batch"),
    a("logitsLse", [N], "batch"),
    /** dLoss/dlp per row, written by the loss kernels. */
    a("g", [N], "batch"),
    a("lmMask", [N], "batch"),
    a("completionMask", [N], "batch"),
    a("encoded", [N, C], "kept"),
    a("lnf", [N, C], "kept"),
    a("lnfMean", [N], "kept"),
    a("lnfRstd", [N], "kept"),
    /** The attention and MLP projections before the residual add (one buffer serves both). */
    a("proj", [N, C], "scratch"),
    /** GELU's output; backward recomputes it here from fch (under f16 it is written into x16). */
    ...(options.half ? [] : [a("gelu", [N, 4 * C], "scratch")]),
    a("logits", [Math.max(1, options.logits.rows * options.logits.stride)], "kept"),
  ];
  if (options.prefill) model.push(a("last", [B, C], "batch"));
  /** f16 copy of a matmul's input: a linear's (at most [N, 4C]) or lnf for the LM head. */
  if (options.half) model.push(a("x16", [halfWords(N * 4 * C)], "scratch"));
  if (options.half && options.training) {
    model.push(
      /** f16 copy of a linear's output gradient (at most [N, 4C]) and of the dlogits chunk. */
      a("dy16", [halfWords(N * 4 * C)], "grad"),
      a("dlogits16", [halfWords(Math.max(1, options.logits.rows * options.logits.stride))], "grad"),
    );
  }
  if (options.training) {
    const groups = EmbeddingGroups.lengths(N);
    model.push(
      /** Gradient of the residual stream (accumulated). */
      a("dresidual", [N, C], "grad"),
      a("dlnf", [N, C], "grad"),
      /** Gradient of a block's C-wide linear input: ln2's output, then atty, then ln1's output. */
      a("dlinearIn", [N, C], "grad"),
      a("dqkv", [N, 3 * C], "grad"),
      a("dgelu", [N, 4 * C], "grad"),
      a("dfch", [N, 4 * C], "grad"),
      ...Object.entries(groups).map(([name, n]) => a(`tokenGroups.${name}`, [n], "grad")),
    );
  }
  // Under f16 the LayerNorm outputs, read only by matmuls, are kept as f16 (two halves per element).
  const lnShape = options.half ? [halfWords(N * C)] : [N, C];
  const layer = [
    a("ln1", lnShape, "kept"),
    a("ln1Mean", [N], "kept"),
    a("ln1Rstd", [N], "kept"),
    a("qkv", [N, 3 * C], "kept"),
    a("atty", [N, C], "kept"),
    /** Attention's log-sum-exp per (b, h, t): all backward needs to rebuild the probabilities. */
    a("attLse", [B * H * T], "kept"),
    a("res2", [N, C], "kept"),
    a("ln2", lnShape, "kept"),
    a("ln2Mean", [N], "kept"),
    a("ln2Rstd", [N], "kept"),
    a("fch", [N, 4 * C], "kept"),
    /** The block's output, the next block's input. */
    a("out", [N, C], "kept"),
  ];
  return { model, layer, nLayer };
}

/** 32-bit elements of the table's tensors, all of them or those of the given roles. */
export function activationFloats(table: ActivationTable, roles?: ActivationRole[]): number {
  const sum = (specs: ActivationSpec[]) =>
    specs.filter((s) => !roles || roles.includes(s.role)).reduce((n, s) => n + numel(s.shape), 0);
  return sum(table.model) + table.nLayer * sum(table.layer);
}
