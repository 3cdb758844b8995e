/**
 * The parameter table: one row per tensor, in Hugging Face GPT-2 names and shapes (Conv1D weights are
 * [in, out]). It drives GPU allocation, safetensors names and the optimizer's weight-decay groups.
 * @module
 */
import type { GPT2Config } from "./config.ts";

/** One parameter tensor. */
export interface ParamSpec {
  /** Hugging Face name without the `transformer.` prefix, e.g. `h.0.attn.c_attn.weight`. */
  name: string;
  shape: number[];
  /** AdamW weight decay applies (matmul and embedding weights, not biases or LayerNorm). */
  decay: boolean;
}

/** All parameters of a GPT-2 model in a fixed order. */
export function paramTable(c: GPT2Config): ParamSpec[] {
  const C = c.nEmbd;
  const t: ParamSpec[] = [
    { name: "wte.weight", shape: [c.vocabSize, C], decay: true },
    { name: "wpe.weight", shape: [c.nPositions, C], decay: true },
  ];
  for (let l = 0; l < c.nLayer; l++) {
    const p = `h.${l}.`;
    t.push(
      { name: p + "ln_1.weight", shape: [C], decay: false },
      { name: p + "ln_1.bias", shape: [C], decay: false },
      { name: p + "attn.c_attn.weight", shape: [C, 3 * C], decay: true },
      { name: p + "attn.c_attn.bias", shape: [3 * C], decay: false },
      { name: p + "attn.c_proj.weight", shape: [C, C], decay: true },
      { name: p + "attn.c_proj.bias", shape: [C], decay: false },
      { name: p + "ln_2.weight", shape: [C], decay: false },
      { name: p + "ln_2.bias", shape: [C], decay: false },
      { name: p + "mlp.c_fc.weight", shape: [C, 4 * C], decay: true },
      { name: p + "mlp.c_fc.bias", shape: [4 * C], decay: false },
      { name: p + "mlp.c_proj.weight", shape: [4 * C, C], decay: true },
      { name: p + "mlp.c_proj.bias", shape: [C], decay: false },
    );
  }
  t.push(
    { name: "ln_f.weight", shape: [C], decay: false },
    { name: "ln_f.bias", shape: [C], decay: false },
  );
  return t;
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
