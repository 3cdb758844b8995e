/**
 * Kernels of sequence classification (the BabyLM pipeline's fine-tuning head) that the language model
 * does not have: GELU in its exact erf form (PyTorch's `nn.GELU()`, not GPT-2's tanh form), the scatter of
 * the pooled rows' gradient back into the sequence, the position-embedding gradient of left-padded
 * sequences whose positions start at their first real token, and the mean cross-entropy over a few labels.
 * The head's LayerNorms and linear layers are the engine's (`layernorm.ts`, `matmul.ts`).
 * @module
 */
import { checkLengths, computeMain, type Plan, storage, type TensorView, uniformLayout } from "./gpu.ts";

const WG = 256;

/** The dropout site of the head's dropout: the first after GPT-2's 3L + 1 sites (shaders/dropout.ts). */
export function classifierDropoutSite(nLayer: number): number {
  return 3 * nLayer + 1;
}

const N_PARAMS = uniformLayout({ n: "u32" });

/**
 * Φ(x), the standard normal CDF, from erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7,
 * under f32's resolution of Φ near 1), and φ(x) the density.
 */
const NORMAL_WGSL = /* wgsl */ `
fn erf_(x: f32) -> f32 {
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - poly * exp(-a * a));
}
fn cdf(x: f32) -> f32 { return 0.5 * (1.0 + erf_(x * 0.7071067811865476)); }
fn pdf(x: f32) -> f32 { return 0.3989422804014327 * exp(-0.5 * x * x); }
`;

/** out[i] = x Φ(x). Bindings: params, out, inp. */
export const GELU_ERF_FORWARD = N_PARAMS.wgsl + NORMAL_WGSL +
  storage({ out: "read_write array<f32>", inp: "read array<f32>" }) + computeMain(WG) + /* wgsl */
  `  let i = globalIndex;
  if (i >= p.n) { return; }
  let x = inp[i];
  out[i] = x * cdf(x);
}
`;

/** dinp[i] = (Φ(x) + x φ(x)) dout[i] (overwrites). Bindings: params, dinp, inp, dout. */
export const GELU_ERF_BACKWARD = N_PARAMS.wgsl + NORMAL_WGSL +
  storage({ dinp: "read_write array<f32>", inp: "read array<f32>", dout: "read array<f32>" }) +
  computeMain(WG) + /* wgsl */ `  let i = globalIndex;
  if (i >= p.n) { return; }
  let x = inp[i];
  dinp[i] = (cdf(x) + x * pdf(x)) * dout[i];
}
`;

/** Record out = x Φ(x) over n elements. */
export function geluErfForward(plan: Plan, { out, inp, n }: { out: TensorView; inp: TensorView; n: number }) {
  checkLengths("geluErfForward", n, { out, inp });
  const u = plan.params(N_PARAMS, { n }, "gelu_erf.params");
  plan.add(GELU_ERF_FORWARD, [u, out, inp], Math.ceil(n / WG), "gelu_erf_forward");
}

/** Record dinp = gelu'(inp) * dout over n elements (dinp overwritten). */
export function geluErfBackward(
  plan: Plan,
  { dinp, inp, dout, n }: { dinp: TensorView; inp: TensorView; dout: TensorView; n: number },
) {
  checkLengths("geluErfBackward", n, { dinp, inp, dout });
  const u = plan.params(N_PARAMS, { n }, "gelu_erf.params");
  plan.add(GELU_ERF_BACKWARD, [u, dinp, inp, dout], Math.ceil(n / WG), "gelu_erf_backward");
}

const ROWS_PARAMS = uniformLayout({ B: "u32", T: "u32", C: "u32" });

/**
 * out[b*T + t, c] = x[b, c] where t = idx[b], else 0: the gradient of gathering one row per sequence,
 * written over the whole [B*T, C] (no clearing needed). Bindings: params, out, x, idx.
 */
export const SCATTER_ROWS = ROWS_PARAMS.wgsl +
  storage({ out: "read_write array<f32>", x: "read array<f32>", idx: "read array<u32>" }) + computeMain(WG) +
  /* wgsl */ `  let i = globalIndex;
  if (i >= p.B * p.T * p.C) { return; }
  let c = i % p.C;
  let row = i / p.C;
  let b = row / p.T;
  out[i] = select(0.0, x[b * p.C + c], row % p.T == idx[b]);
}
`;

/** Record out [B*T, C] = the rows x [B, C] placed at each sequence's position idx[b] (u32 [B]), zeros elsewhere. */
export function scatterRows(
  plan: Plan,
  { out, x, idx, B, T, C }: {
    out: TensorView;
    x: TensorView;
    idx: TensorView;
    B: number;
    T: number;
    C: number;
  },
): void {
  checkLengths("scatterRows", B * T * C, { out });
  checkLengths("scatterRows", B * C, { x });
  checkLengths("scatterRows", B, { idx });
  const u = plan.params(ROWS_PARAMS, { B, T, C }, "scatter_rows.params");
  plan.add(SCATTER_ROWS, [u, out, x, idx], Math.ceil((B * T * C) / WG), "scatter_rows");
}

/**
 * dwpe[t, c] += Σ_b dout[b*T + t + start[b], c] over the sequences with t + start[b] < T, b in order: the
 * position gradient when sequence b's row start[b] + t sits at position t. Rows before start[b]
 * (padding) carry no gradient (nothing real attends to them), so they are left out. Bindings: params,
 * dwpe, dout, start.
 */
export const POSITION_BACKWARD = ROWS_PARAMS.wgsl +
  storage({ dwpe: "read_write array<f32>", dout: "read array<f32>", start: "read array<u32>" }) +
  computeMain(WG) + /* wgsl */ `  let i = globalIndex;
  if (i >= p.T * p.C) { return; }
  let t = i / p.C;
  let c = i % p.C;
  var s = 0.0;
  for (var b = 0u; b < p.B; b++) {
    let row = t + start[b];
    if (row < p.T) { s += dout[(b * p.T + row) * p.C + c]; }
  }
  dwpe[i] += s;
}
`;

/** Record dwpe [T, C] += the position gradient of rows shifted by start (u32 [B]); see {@link POSITION_BACKWARD}. */
export function positionBackward(
  plan: Plan,
  { dwpe, dout, start, B, T, C }: {
    dwpe: TensorView;
    dout: TensorView;
    start: TensorView;
    B: number;
    T: number;
    C: number;
  },
): void {
  checkLengths("positionBackward", T * C, { dwpe });
  checkLengths("positionBackward", B * T * C, { dout });
  checkLengths("positionBackward", B, { start });
  const u = plan.params(ROWS_PARAMS, { B, T, C }, "position_backward.params");
  plan.add(POSITION_BACKWARD, [u, dwpe, dout, start], Math.ceil((T * C) / WG), "position_backward");
}

const LOSS_PARAMS = uniformLayout({ B: "u32", L: "u32", scale: "f32" });

/**
 * One thread per example b: loss[b] = logsumexp(logits[b]) - logits[b, label[b]], and dlogits[b, k] =
 * scale (softmax(logits[b])_k - [k = label[b]]), scale = 1/B for the batch mean (PyTorch's
 * `F.cross_entropy`). Bindings: params, loss, dlogits, logits, labels.
 */
export const CLASSIFICATION_LOSS = LOSS_PARAMS.wgsl + storage({
  loss: "read_write array<f32>",
  dlogits: "read_write array<f32>",
  logits: "read array<f32>",
  labels: "read array<u32>",
}) + computeMain(64) + /* wgsl */ `  let b = globalIndex;
  if (b >= p.B) { return; }
  let at = b * p.L;
  var m = logits[at];
  for (var k = 1u; k < p.L; k++) { m = max(m, logits[at + k]); }
  var s = 0.0;
  for (var k = 0u; k < p.L; k++) { s += exp(logits[at + k] - m); }
  let lse = m + log(s);
  let y = labels[b];
  loss[b] = lse - logits[at + y];
  for (var k = 0u; k < p.L; k++) {
    dlogits[at + k] = p.scale * (exp(logits[at + k] - lse) - select(0.0, 1.0, k == y));
  }
}
`;

/**
 * Record the mean cross-entropy's per-example losses [B] and gradient dlogits [B, L] (overwritten). The
 * mean is over `total` examples (default B): a part of a batch split into micro-batches.
 */
export function classificationLoss(
  plan: Plan,
  { loss, dlogits, logits, labels, B, L, total = B }: {
    loss: TensorView;
    dlogits: TensorView;
    logits: TensorView;
    labels: TensorView;
    B: number;
    L: number;
    total?: number;
  },
): void {
  checkLengths("classificationLoss", B, { loss, labels });
  checkLengths("classificationLoss", B * L, { dlogits, logits });
  const u = plan.params(LOSS_PARAMS, { B, L, scale: 1 / total }, "classification_loss.params");
  plan.add(CLASSIFICATION_LOSS, [u, loss, dlogits, logits, labels], Math.ceil(B / 64), "classification_loss");
}
