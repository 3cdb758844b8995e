/**
 * Mixed precision (`--precision f16`): what is f16 and what stays f32.
 *
 * f16: the operands of every linear layer's and the tied LM head's matmuls. The weights' f16 copies
 * ({@link HalfWeights}) are written by AdamW from each updated f32 master weight in the same pass as the
 * update (shaders/adamw.ts), and cast from the masters whenever the weights are set; a matmul's
 * activation input and, in backward, its output gradient are cast into f16 scratch (`x16`, `dy16`,
 * `dlogits16` of the activation table) right before the matmul reads them.
 *
 * f32: the master weights, AdamW and its moments, the gradients, every sum inside a matmul, LayerNorm
 * (statistics included), attention, GELU, the logits, softmax / cross-entropy and the losses, the
 * activations at rest, and checkpoints (always the f32 master weights).
 *
 * f16 arithmetic, opt-in ({@link PrecisionOptions.halfSums}): the blocks' linear layers then also
 * multiply and sum in f16, over chunks of 32 k flushed into f32 sums (shaders/matmul_tiled.ts), for
 * y = x W and dx = dy W^T, whose sums run over the layer's width. The weight gradients dW = x^T dy (a sum
 * over every row of scaled gradients) and the LM head both ways (its logits feed the loss; its backward
 * sums a vocabulary's worth of scaled dlogits and, for dwte, every row) keep f32 sums.
 *
 * Gradients reach f16 scaled by the dynamic loss scale (model/scaler.ts) so that small ones do not
 * flush to zero; the trainer unscales them in the clip coefficient and skips steps whose gradients
 * overflowed.
 * @module
 */
import { type Gpu, GpuCapacityError, Plan, type TensorView } from "../shaders/gpu.ts";
import { castToHalf, halfWords } from "../shaders/f16.ts";
import type { GPT2, WteChunk } from "./gpt2.ts";

/** Numeric precision of the matmul operands. */
export type Precision = "f32" | "f16";

/** The accepted values of `--precision` and of the config key `precision`. */
export const PRECISIONS: readonly Precision[] = ["f32", "f16"];

/** Options of the matmuls' precision beside the operands' ({@link GPT2.usePrecision}). */
export interface PrecisionOptions {
  /**
   * Precision f16 only: f16 products and partial sums in the blocks' linear layers (y = x W and
   * dx = dy W^T), which GPUs run at twice the f32 FMA rate. Only the GPU kernel family's tiled matmul
   * has f16 arithmetic; the CPU family keeps f32 sums, bit for bit the plain f16 results. Default false.
   */
  halfSums?: boolean;
}

/**
 * Throw unless `halfSums` goes with `precision` (it needs f16), naming `where` (when not empty) and the
 * two settings by `names` (the config's keys, the command's flags).
 */
export function checkHalfSums(
  precision: Precision,
  halfSums: boolean,
  where: string,
  names = { precision: "precision", halfSums: "halfSums" },
): void {
  if (halfSums && precision !== "f16") {
    throw new Error(
      `${
        where ? `${where}: ` : ""
      }${names.halfSums} needs ${names.precision} f16 (f16 arithmetic on the f16 operands), ` +
        `got ${names.precision} ${precision}`,
    );
  }
}

/** Throw unless `value` is a {@link Precision}, naming `where`. */
export function parsePrecision(value: unknown, where: string): Precision {
  if (value === "f32" || value === "f16") return value;
  throw new Error(
    `${where}: precision must be one of ${PRECISIONS.join(", ")}, got ${JSON.stringify(value)}`,
  );
}

/**
 * Throw a {@link GpuCapacityError} naming the feature and the adapter unless `gpu` can run f16 kernels
 * (the device has `shader-f16`).
 */
export function checkHalfSupport(gpu: Pick<Gpu, "shaderF16" | "adapterName">): void {
  if (gpu.shaderF16) return;
  throw new GpuCapacityError(
    `precision f16 needs the WebGPU feature "shader-f16", which the adapter "${gpu.adapterName}" does not ` +
      `offer; use precision f32 (under Deno with Mesa, lavapipe on Vulkan has the feature and llvmpipe ` +
      `on GL does not: unset DENO_WEBGPU_BACKEND or set it to vulkan)`,
  );
}

/** The f16 copies of one block's linear weights. */
export interface BlockHalfWeights {
  attn: TensorView;
  attnProj: TensorView;
  fc: TensorView;
  fcProj: TensorView;
}

/**
 * f16 copies of every weight a matmul reads, one per master view (wte's per part), and the plan that
 * casts them from the f32 masters.
 */
export class HalfWeights {
  readonly blocks: BlockHalfWeights[];
  /** wte's f16 copy, chunked like wte. */
  readonly wte: WteChunk[];
  /**
   * Casts every copy from its master; run after the master weights are set (the optimiser step writes
   * the copies itself).
   */
  readonly cast: Plan;
  /**
   * f16 arithmetic in the blocks' linear layers ({@link PrecisionOptions.halfSums}); plans recorded
   * after it is set follow it.
   */
  halfSums = false;
  #owned: TensorView[] = [];
  #copies = new Map<TensorView, TensorView>();
  #gpu: Gpu;

  constructor(model: GPT2) {
    checkHalfSupport(model.gpu);
    const gpu = model.gpu;
    this.#gpu = gpu;
    this.cast = new Plan(gpu);
    const copy = (master: TensorView, label: string) => {
      const view = gpu.tensor(halfWords(master.length), label);
      this.#owned.push(view);
      this.#copies.set(master, view);
      castToHalf(this.cast, { out: view, inp: master, n: master.length });
      return view;
    };
    this.blocks = Array.from({ length: model.config.nLayer }, (_, l) => {
      const w = (box: string) => copy(model.view(`h.${l}.${box}.weight`), `f16.h.${l}.${box}.weight`);
      return {
        attn: w("attn.c_attn"),
        attnProj: w("attn.c_proj"),
        fc: w("mlp.c_fc"),
        fcProj: w("mlp.c_proj"),
      };
    });
    this.wte = model.byName.get("wte.weight")!.parts.map((part, i) => ({
      view: copy(part.view, `f16.wte.weight#${i}`),
      v0: part.v0,
      v1: part.v1,
    }));
  }

  /** The f16 copy of a master weight view of the model (a part's view), if it has one. */
  copyOf(master: TensorView): TensorView | undefined {
    return this.#copies.get(master);
  }

  /** Bytes of the copies. */
  get bytes(): number {
    return this.#owned.reduce((n, v) => n + v.length * 4, 0);
  }

  /** Free the copies and the cast plan. */
  destroy(): void {
    for (const v of this.#owned) this.#gpu.free(v);
    this.#owned = [];
    this.#copies.clear();
    this.cast.destroy();
  }
}
