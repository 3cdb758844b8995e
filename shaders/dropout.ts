/**
 * Dropout as GPT-2 trains with it (transformers' train mode): zero each element with probability p and
 * scale the kept ones by 1/(1-p). The masks are never stored: a counter-based generator turns
 * (seed, step, site, row, column) into 32 bits, so forward and backward (and the PyTorch fixture, whose
 * script implements the same function) regenerate exactly the same mask.
 *
 * The generator, on u32 with wrapping arithmetic:
 *
 *     mix(x)     = x ^= x >> 16; x *= 0x21f0aaad; x ^= x >> 15; x *= 0x735a2d97; x ^= x >> 15
 *     stream     = mix(mix(mix(seed ^ 0x9e3779b9) ^ step) ^ site)
 *     bits       = mix(mix(stream ^ row) ^ column)
 *     keep       iff bits >= ceil(p * 2^32)
 *
 * `bits / 2^32` is the uniform draw in [0, 1); comparing the integer with ceil(p * 2^32) (exact in float64)
 * is the same test as `bits / 2^32 >= p` with no float rounding. `mix` is a bijection of u32, so the
 * elements of one row never share their bits. `step` is the optimiser step being taken (AdamW's t,
 * 1-based), which a resumed run restores, so it regenerates the masks of the uninterrupted one.
 *
 * Sites and positions ({@link DROPOUT_SITE}): site 0 is the embedding output (`x = wte[ids] + wpe`),
 * row = b*T + t, column = channel; for layer l, site 3l+1 is the attention probabilities, row =
 * (b*H + h)*T + query, column = key; 3l+2 the attention projection and 3l+3 the MLP projection before
 * their residual adds, rows and columns as the embedding's.
 * @module
 */
import {
  computeMain,
  type Gpu,
  type Plan,
  storage,
  type StorageDecl,
  type TensorView,
  uniformLayout,
} from "./gpu.ts";

/** Threads per workgroup of the elementwise kernels. */
const WG = 256;

/** The dropout sites of a GPT-2, numbered as the generator's `site` word. */
export const DROPOUT_SITE = {
  embd: 0,
  attn: (layer: number) => 3 * layer + 1,
  attnResid: (layer: number) => 3 * layer + 2,
  mlpResid: (layer: number) => 3 * layer + 3,
} as const;

/** The generator's mixing function (a bijection of u32). */
export function mix32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x21f0aaad) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x735a2d97) >>> 0;
  return (x ^ (x >>> 15)) >>> 0;
}

/** The 32 random bits of one element (see the module doc). */
export function dropoutBits(seed: number, step: number, site: number, row: number, col: number): number {
  const stream = mix32(mix32(mix32((seed ^ 0x9e3779b9) >>> 0) ^ step) ^ site);
  return mix32(mix32(stream ^ row) ^ col);
}

/** Check a dropout rate: a number in [0, 1). `where` names it in the error. */
export function checkRate(p: number, where: string): number {
  if (!(typeof p === "number" && p >= 0 && p < 1)) {
    throw new Error(`${where}: a dropout rate must be a number in [0, 1), got ${JSON.stringify(p)}`);
  }
  return p;
}

/** ceil(p * 2^32): an element is kept iff its bits are at least this. */
export function keepThreshold(p: number): number {
  checkRate(p, "keepThreshold");
  const t = Math.ceil(p * 2 ** 32);
  if (t > 0xffffffff) throw new Error(`keepThreshold: rate ${p} is too close to 1 for 32-bit draws`);
  return t;
}

/** Whether element (row, col) of `site` survives dropout at rate p. */
export function keeps(
  seed: number,
  step: number,
  site: number,
  row: number,
  col: number,
  p: number,
): boolean {
  return dropoutBits(seed, step, site, row, col) >= keepThreshold(p);
}

/**
 * The per-step key every dropout kernel binds: a uniform block {seed, step} that the trainer rewrites
 * before each step (so recorded plans stay valid).
 */
export class DropoutKey {
  readonly view: TensorView;
  /** The run's seed as the generator's u32 word. */
  readonly seed: number;
  readonly #gpu: Gpu;
  constructor(gpu: Gpu, seed: number) {
    if (!Number.isInteger(seed)) throw new Error(`dropout seed must be an integer, got ${seed}`);
    this.#gpu = gpu;
    this.seed = seed >>> 0;
    this.view = gpu.uniform(new Uint32Array([this.seed, 0, 0, 0]), "dropout.key");
  }

  /** Key the work submitted next to optimiser step `step`. */
  setStep(step: number): void {
    this.#gpu.writeBytes(this.view.buffer, this.view.offset, new Uint32Array([this.seed, step >>> 0]));
  }

  /** Free the key's buffer. */
  destroy(): void {
    this.#gpu.free(this.view);
  }
}

/**
 * WGSL of the generator for kernels that drop: `dropStream(site)` once per thread, `dropRow(stream, row)`
 * once per row, `dropKeep(rowKey, col, threshold)` per element. Needs the key bound as `dkey`.
 */
export const DROPOUT_WGSL = /* wgsl */ `
struct DropKey { seed: u32, step: u32 }
fn dropMix(v: u32) -> u32 {
  var x = v;
  x ^= x >> 16u; x *= 0x21f0aaadu; x ^= x >> 15u; x *= 0x735a2d97u; x ^= x >> 15u;
  return x;
}
fn dropStream(site: u32) -> u32 {
  return dropMix(dropMix(dropMix(dkey.seed ^ 0x9e3779b9u) ^ dkey.step) ^ site);
}
fn dropRow(stream: u32, row: u32) -> u32 { return dropMix(stream ^ row); }
fn dropKeep(rowKey: u32, col: u32, threshold: u32) -> bool { return dropMix(rowKey ^ col) >= threshold; }
`;

/** How an elementwise kernel combines: x in place, out = drop(x), or out = a + drop(b). */
type Form = "inplace" | "copy" | "residual";

/** n = rows * cols / W threads; the mask of element (r, c) is keyed by (site, r, c). */
const PARAMS = uniformLayout({ n: "u32", cols: "u32", site: "u32", threshold: "u32", scale: "f32" });

/**
 * One thread per `W` consecutive columns of a row (W = 4 reads vec4 when cols % 4 == 0). Bindings:
 * params, outputs, inputs, then the key.
 */
function elementwiseSource(form: Form, W: 1 | 4): string {
  const t = W === 4 ? "array<vec4f>" : "array<f32>";
  const buffers = {
    inplace: { x: `read_write ${t}` },
    copy: { out: `read_write ${t}`, x: `read ${t}` },
    residual: { out: `read_write ${t}`, a: `read ${t}`, x: `read ${t}` },
  }[form] as Record<string, StorageDecl>;
  const keep = (k: number) => `select(0.0, p.scale, dropKeep(rk, c + ${k}u, p.threshold))`;
  const mask = W === 4 ? `vec4f(${[0, 1, 2, 3].map(keep).join(", ")})` : keep(0);
  const store = {
    inplace: "x[i] = x[i] * m;",
    copy: "out[i] = x[i] * m;",
    residual: "out[i] = a[i] + x[i] * m;",
  }[form];
  const keyBinding = 1 + Object.keys(buffers).length;
  return PARAMS.wgsl + storage(buffers) + /* wgsl */ `
@group(0) @binding(${keyBinding}) var<uniform> dkey: DropKey;
${DROPOUT_WGSL}
${computeMain(WG)}
  let i = globalIndex;
  if (i >= p.n) { return; }
  let e = i * ${W}u;
  let c = e % p.cols;
  let rk = dropRow(dropStream(p.site), e / p.cols);
  let m = ${mask};
  ${store}
}
`;
}

/** Where and how much one elementwise dropout drops. */
export interface DropoutSpec {
  key: DropoutKey;
  site: number;
  /** The rate p, in (0, 1): callers record nothing at rate 0. */
  rate: number;
  /** The tensor is [rows, cols]; the mask of element (r, c) is keyed by (site, r, c). */
  rows: number;
  cols: number;
}

function record(
  plan: Plan,
  form: Form,
  views: TensorView[],
  spec: DropoutSpec,
  where: string,
): void {
  const { rows, cols, rate, site } = spec;
  if (!(rate > 0)) throw new Error(`${where}: rate ${rate} records no work; leave the dropout out instead`);
  if (!(Number.isInteger(rows) && Number.isInteger(cols) && rows >= 1 && cols >= 1)) {
    throw new Error(`${where}: shape [${rows}, ${cols}] must be positive integers`);
  }
  for (const v of views) {
    if (v.length < rows * cols) {
      throw new RangeError(`${where}: ${v.label ?? "a view"} has ${v.length} elements, needs ${rows * cols}`);
    }
  }
  const W = cols % 4 === 0 ? 4 : 1;
  const n = (rows * cols) / W;
  const u = plan.params(
    PARAMS,
    { n, cols, site, threshold: keepThreshold(rate), scale: 1 / (1 - rate) },
    "dropout.params",
  );
  plan.add(elementwiseSource(form, W), [u, ...views, spec.key.view], Math.ceil(n / WG), `dropout_${form}`);
}

/** Record x = dropout(x) in place (the embedding output forward, and its gradient in backward). */
export function dropoutInPlace(plan: Plan, x: TensorView, spec: DropoutSpec): void {
  record(plan, "inplace", [x], spec, "dropoutInPlace");
}

/** Record out = dropout(x) (`out` overwritten): the gradient of a dropped residual branch. */
export function dropoutCopy(plan: Plan, out: TensorView, x: TensorView, spec: DropoutSpec): void {
  record(plan, "copy", [out, x], spec, "dropoutCopy");
}

/** Record out = a + dropout(b): a residual add whose branch is dropped (`out` distinct from both). */
export function dropoutResidual(
  plan: Plan,
  out: TensorView,
  a: TensorView,
  b: TensorView,
  spec: DropoutSpec,
): void {
  record(plan, "residual", [out, a, b], spec, "dropoutResidual");
}
