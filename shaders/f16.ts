/**
 * The f16 side of mixed precision: the cast of f32 tensors into f16 copies (matmul operands: weights once
 * per step, activations and their gradients where a matmul reads them) and the loss-scale multiply.
 *
 * An f16 tensor is a {@link TensorView} whose 32-bit elements each hold two halves (element 2i in the low
 * 16 bits); {@link halfWords} gives its length, always a whole number of 4-half groups (8 bytes), so the
 * f16 matmul can read it as `array<vec4<f16>>`. The cast itself needs no `shader-f16`: it writes the bits
 * with `pack2x16float`.
 *
 * Overflow is kept visible: values that round past f16's largest finite value (|x| >= 65520) become
 * +-inf and NaN stays NaN, decided on the bits (so no fast-math assumption removes the test), because
 * dynamic loss scaling (model/scaler.ts) relies on an overflowed gradient reaching the norm as inf/NaN.
 * `pack2x16float` is only defined inside the finite range, so in-range values are clamped to +-65504
 * first (what round-to-nearest gives them anyway).
 * @module
 */
import { checkLengths, computeMain, type Plan, storage, type TensorView, uniformLayout } from "./gpu.ts";

const WG = 256;

/** 32-bit elements of an f16 tensor of `n` halves: whole groups of 4 halves (8 bytes). */
export function halfWords(n: number): number {
  return 2 * Math.ceil(n / 4);
}

/** `n` counts input elements. */
const CAST_PARAMS = uniformLayout({ n: "u32" });

/**
 * WGSL `fn halfBits(x: f32) -> u32`: the f16 bits of x (rounded by pack2x16float in range, +-inf past
 * it, NaN kept), for kernels that write f16 tensors (this cast, GELU's f16 output).
 */
export const HALF_BITS = /* wgsl */ `
fn halfBits(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  let sign = (bits >> 16u) & 0x8000u;
  let mag = bits & 0x7fffffffu;
  if (mag > 0x7f800000u) { return sign | 0x7e00u; }
  // 65520 (0x477ff000) and above round to infinity in f16.
  if (mag >= 0x477ff000u) { return sign | 0x7c00u; }
  return pack2x16float(vec2f(clamp(x, -65504.0, 65504.0), 0.0)) & 0xffffu;
}
`;

/**
 * Thread i casts inputs 4i .. 4i+3 (zeros past n) into out[i] (two words, low half first). `vec4`: the
 * input read as vectors (n a multiple of 4). Bindings: params, out, inp.
 */
function castSource(vec4: boolean): string {
  const read = vec4
    ? "let x = inp[i];"
    : "var x = vec4f(0.0);\n  for (var j = 0u; j < 4u; j++) { if (4u * i + j < p.n) { x[j] = inp[4u * i + j]; } }";
  return CAST_PARAMS.wgsl + HALF_BITS +
    storage({ out: "read_write array<vec2u>", inp: `read array<${vec4 ? "vec4f" : "f32"}>` }) +
    computeMain(WG) + /* wgsl */ `  let i = globalIndex;
  if (i >= (p.n + 3u) / 4u) { return; }
  ${read}
  out[i] = vec2u(halfBits(x[0]) | (halfBits(x[1]) << 16u), halfBits(x[2]) | (halfBits(x[3]) << 16u));
}
`;
}
const CAST = castSource(false);
const CAST4 = castSource(true);

/** Arguments of {@link castToHalf}. */
export interface CastArgs {
  /** f16 tensor of at least {@link halfWords}(n) words. */
  out: TensorView;
  /** f32 input, its first `n` elements cast. */
  inp: TensorView;
  n: number;
}

/** Record out (f16) = inp[0:n] (f32), rounded to nearest; +-inf past f16's range. */
export function castToHalf(plan: Plan, { out, inp, n }: CastArgs): void {
  if (n === 0) return;
  checkLengths("castToHalf", n, { inp });
  checkLengths("castToHalf", halfWords(n), { out });
  const u = plan.params(CAST_PARAMS, { n }, "cast_f16.params");
  plan.add(n % 4 === 0 ? CAST4 : CAST, [u, out, inp], Math.ceil(n / 4 / WG), "cast_f16");
}

const SCALE_PARAMS = uniformLayout({ n: "u32" });

/** x[i] *= factor[0] for i < n. Bindings: params, x, factor. */
const SCALE = SCALE_PARAMS.wgsl + storage({ x: "read_write array<f32>", factor: "read array<f32>" }) +
  computeMain(WG) + /* wgsl */ `  let i = globalIndex;
  if (i >= p.n) { return; }
  x[i] = x[i] * factor[0];
}
`;

/**
 * Record x[0:n] *= factor[0], where `factor` is a buffer the caller rewrites (the loss scale, changed
 * between steps without re-recording).
 */
export function scaleBy(
  plan: Plan,
  { x, factor, n }: { x: TensorView; factor: TensorView; n: number },
): void {
  if (n === 0) return;
  checkLengths("scaleBy", n, { x });
  checkLengths("scaleBy", 1, { factor });
  const u = plan.params(SCALE_PARAMS, { n }, "scale.params");
  plan.add(SCALE, [u, x, factor], Math.ceil(n / WG), "scale");
}
