/**
 * A plain float64 GPT-2 on the CPU, forward and backward, for checking the GPU model at full width
 * (llm.c's layer by layer structure, no batching tricks). Loss: the LM loss
 * -(sum_i mask_i * lp_i) / (sum_i mask_i), lp_i = ln softmax(lnf_i · wte^T)[target_i].
 *
 * Every parameter gradient is computed except wte's, of which only the rows asked for are kept (the
 * full [V, C] gradient is 50257 x 768 doubles at GPT-2 size).
 * @module
 */
import type { GPT2Config } from "../../model/config.ts";

/** What {@link gpt2Ref} returns. */
export interface Gpt2RefResult {
  loss: number;
  /** ln p(target) per row [B*T]. */
  lp: Float64Array;
  /** d loss / d parameter for every parameter but wte.weight. */
  grads: Map<string, Float64Array>;
  /** d loss / d wte row, for the rows asked for. */
  wteRows: Map<number, Float64Array>;
}

/** out[M, N] = a[M, K] · w[K, N] (+ bias[N]). */
function matmul(
  a: Float64Array,
  w: ArrayLike<number>,
  M: number,
  K: number,
  N: number,
  bias?: ArrayLike<number>,
) {
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    const row = out.subarray(m * N, (m + 1) * N);
    if (bias) { for (let n = 0; n < N; n++) row[n] = bias[n]; }
    for (let k = 0; k < K; k++) {
      const x = a[m * K + k];
      for (let n = 0; n < N; n++) row[n] += x * w[k * N + n];
    }
  }
  return out;
}

/**
 * Backward of out = a · w + bias: returns da [M, K] and accumulates dw [K, N] and dbias [N].
 */
function matmulBackward(
  dout: Float64Array,
  a: Float64Array,
  w: ArrayLike<number>,
  M: number,
  K: number,
  N: number,
  dw: Float64Array,
  dbias?: Float64Array,
): Float64Array {
  const da = new Float64Array(M * K);
  for (let m = 0; m < M; m++) {
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += dout[m * N + n] * w[k * N + n];
      da[m * K + k] = s;
      const x = a[m * K + k];
      for (let n = 0; n < N; n++) dw[k * N + n] += x * dout[m * N + n];
    }
    if (dbias) { for (let n = 0; n < N; n++) dbias[n] += dout[m * N + n]; }
  }
  return da;
}

/** LayerNorm over rows of C: y = (x - mean) * rstd * w + b, rstd = 1 / sqrt(var + eps) (biased var). */
function layernorm(
  x: Float64Array,
  w: ArrayLike<number>,
  b: ArrayLike<number>,
  N: number,
  C: number,
  eps: number,
) {
  const out = new Float64Array(N * C), mean = new Float64Array(N), rstd = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    const row = x.subarray(i * C, (i + 1) * C);
    let m = 0;
    for (const v of row) m += v;
    m /= C;
    let v2 = 0;
    for (const v of row) v2 += (v - m) ** 2;
    const r = 1 / Math.sqrt(v2 / C + eps);
    mean[i] = m;
    rstd[i] = r;
    for (let c = 0; c < C; c++) out[i * C + c] = (row[c] - m) * r * w[c] + b[c];
  }
  return { out, mean, rstd };
}

/**
 * LayerNorm backward: with xhat = (x - mean) * rstd and dxhat = dout * w,
 * dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)); dw += dout * xhat; db += dout.
 */
function layernormBackward(
  dout: Float64Array,
  x: Float64Array,
  w: ArrayLike<number>,
  ln: { mean: Float64Array; rstd: Float64Array },
  N: number,
  C: number,
  dw: Float64Array,
  db: Float64Array,
): Float64Array {
  const dx = new Float64Array(N * C);
  for (let i = 0; i < N; i++) {
    const xhat = new Float64Array(C), dxhat = new Float64Array(C);
    let m1 = 0, m2 = 0;
    for (let c = 0; c < C; c++) {
      xhat[c] = (x[i * C + c] - ln.mean[i]) * ln.rstd[i];
      dxhat[c] = dout[i * C + c] * w[c];
      m1 += dxhat[c];
      m2 += dxhat[c] * xhat[c];
      dw[c] += dout[i * C + c] * xhat[c];
      db[c] += dout[i * C + c];
    }
    m1 /= C;
    m2 /= C;
    for (let c = 0; c < C; c++) dx[i * C + c] = ln.rstd[i] * (dxhat[c] - m1 - xhat[c] * m2);
  }
  return dx;
}

const GELU_S = Math.sqrt(2 / Math.PI);

/** gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
function gelu(x: Float64Array): Float64Array {
  return x.map((v) => 0.5 * v * (1 + Math.tanh(GELU_S * (v + 0.044715 * v ** 3))));
}

/** dx = gelu'(x) * dout. */
function geluBackward(x: Float64Array, dout: Float64Array): Float64Array {
  return x.map((v, i) => {
    const t = Math.tanh(GELU_S * (v + 0.044715 * v ** 3));
    return (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * GELU_S * (1 + 3 * 0.044715 * v * v)) * dout[i];
  });
}

/**
 * Causal self-attention of qkv [B*T, 3C] (q, k, v blocks; head h = columns h*hd..), scale 1/sqrt(hd).
 * Returns y [B*T, C] and the attention weights att [B, H, T, T] for backward.
 */
function attention(qkv: Float64Array, B: number, T: number, C: number, H: number) {
  const hd = C / H, scale = 1 / Math.sqrt(hd);
  const y = new Float64Array(B * T * C), att = new Float64Array(B * H * T * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const q = (b * T + t) * 3 * C + h * hd;
        const a = att.subarray(((b * H + h) * T + t) * T, ((b * H + h) * T + t + 1) * T);
        let max = -Infinity;
        for (let s = 0; s <= t; s++) {
          const k = (b * T + s) * 3 * C + C + h * hd;
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += qkv[q + d] * qkv[k + d];
          a[s] = dot * scale;
          max = Math.max(max, a[s]);
        }
        let sum = 0;
        for (let s = 0; s <= t; s++) sum += a[s] = Math.exp(a[s] - max);
        for (let s = 0; s <= t; s++) {
          a[s] /= sum;
          const v = (b * T + s) * 3 * C + 2 * C + h * hd;
          for (let d = 0; d < hd; d++) y[(b * T + t) * C + h * hd + d] += a[s] * qkv[v + d];
        }
      }
    }
  }
  return { y, att };
}

/**
 * Attention backward: with P = att, dP = dy · v^T, dS = P * (dP - sum_s P dP) * scale;
 * dq = dS · k, dk = dS^T · q, dv = P^T · dy.
 */
function attentionBackward(
  dy: Float64Array,
  qkv: Float64Array,
  att: Float64Array,
  B: number,
  T: number,
  C: number,
  H: number,
): Float64Array {
  const hd = C / H, scale = 1 / Math.sqrt(hd);
  const dqkv = new Float64Array(B * T * 3 * C);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const a = att.subarray(((b * H + h) * T + t) * T, ((b * H + h) * T + t + 1) * T);
        const dyo = (b * T + t) * C + h * hd;
        const dP = new Float64Array(t + 1);
        let dot = 0;
        for (let s = 0; s <= t; s++) {
          const v = (b * T + s) * 3 * C + 2 * C + h * hd;
          for (let d = 0; d < hd; d++) {
            dP[s] += dy[dyo + d] * qkv[v + d];
            dqkv[v + d] += a[s] * dy[dyo + d];
          }
          dot += a[s] * dP[s];
        }
        const q = (b * T + t) * 3 * C + h * hd;
        for (let s = 0; s <= t; s++) {
          const dS = a[s] * (dP[s] - dot) * scale;
          const k = (b * T + s) * 3 * C + C + h * hd;
          for (let d = 0; d < hd; d++) {
            dqkv[q + d] += dS * qkv[k + d];
            dqkv[k + d] += dS * qkv[q + d];
          }
        }
      }
    }
  }
  return dqkv;
}

/**
 * Forward and backward of GPT-2 `weights` (paramTable names) on one batch of B sequences of T inputs,
 * in float64. `wteRows` names the rows of the wte gradient to return.
 */
export function gpt2Ref(
  config: GPT2Config,
  weights: Map<string, Float32Array>,
  inputs: ArrayLike<number>,
  targets: ArrayLike<number>,
  mask: ArrayLike<number>,
  B: number,
  T: number,
  wteRows: number[],
): Gpt2RefResult {
  const { nEmbd: C, nHead: H, nLayer: L, vocabSize: V, layerNormEpsilon: eps } = config;
  const N = B * T;
  const W = (name: string) => weights.get(name)!;
  const wte = W("wte.weight"), wpe = W("wpe.weight");
  const grads = new Map<string, Float64Array>();
  for (const [name, w] of weights) if (name !== "wte.weight") grads.set(name, new Float64Array(w.length));
  const G = (name: string) => grads.get(name)!;

  // Forward.
  const x0 = new Float64Array(N * C);
  for (let i = 0; i < N; i++) {
    for (let c = 0; c < C; c++) x0[i * C + c] = wte[inputs[i] * C + c] + wpe[(i % T) * C + c];
  }
  const layers = [];
  let x = x0;
  for (let l = 0; l < L; l++) {
    const p = `h.${l}.`;
    const ln1 = layernorm(x, W(p + "ln_1.weight"), W(p + "ln_1.bias"), N, C, eps);
    const qkv = matmul(ln1.out, W(p + "attn.c_attn.weight"), N, C, 3 * C, W(p + "attn.c_attn.bias"));
    const att = attention(qkv, B, T, C, H);
    const proj = matmul(att.y, W(p + "attn.c_proj.weight"), N, C, C, W(p + "attn.c_proj.bias"));
    const res2 = x.map((v, i) => v + proj[i]);
    const ln2 = layernorm(res2, W(p + "ln_2.weight"), W(p + "ln_2.bias"), N, C, eps);
    const fch = matmul(ln2.out, W(p + "mlp.c_fc.weight"), N, C, 4 * C, W(p + "mlp.c_fc.bias"));
    const g = gelu(fch);
    const fcproj = matmul(g, W(p + "mlp.c_proj.weight"), N, 4 * C, C, W(p + "mlp.c_proj.bias"));
    const out = res2.map((v, i) => v + fcproj[i]);
    layers.push({ x, ln1, qkv, att, res2, ln2, fch, g });
    x = out;
  }
  const lnf = layernorm(x, W("ln_f.weight"), W("ln_f.bias"), N, C, eps);
  // Logits row by row (tied head), softmax, lp and dlogits = dlp * (onehot - softmax).
  let count = 0;
  for (let i = 0; i < N; i++) count += mask[i];
  const lp = new Float64Array(N);
  const dlogits = new Float64Array(N * V);
  let loss = 0;
  for (let i = 0; i < N; i++) {
    const h = lnf.out.subarray(i * C, (i + 1) * C);
    const z = dlogits.subarray(i * V, (i + 1) * V);
    let max = -Infinity;
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += h[c] * wte[v * C + c];
      z[v] = s;
      if (s > max) max = s;
    }
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(z[v] - max);
    const lse = max + Math.log(sum);
    lp[i] = z[targets[i]] - lse;
    loss -= (mask[i] * lp[i]) / count;
    const dlp = -mask[i] / count;
    for (let v = 0; v < V; v++) z[v] = -dlp * Math.exp(z[v] - lse);
    z[targets[i]] += dlp;
  }

  // Backward: head (dlnf = dlogits · wte; dwte rows += dlogits^T · lnf), then the blocks.
  const dlnf = new Float64Array(N * C);
  for (let i = 0; i < N; i++) {
    for (let v = 0; v < V; v++) {
      const d = dlogits[i * V + v];
      for (let c = 0; c < C; c++) dlnf[i * C + c] += d * wte[v * C + c];
    }
  }
  const wteGrad = new Map<number, Float64Array>();
  for (const v of wteRows) {
    const row = new Float64Array(C);
    for (let i = 0; i < N; i++) for (let c = 0; c < C; c++) row[c] += dlogits[i * V + v] * lnf.out[i * C + c];
    wteGrad.set(v, row);
  }
  let dx = layernormBackward(dlnf, x, W("ln_f.weight"), lnf, N, C, G("ln_f.weight"), G("ln_f.bias"));
  for (let l = L - 1; l >= 0; l--) {
    const p = `h.${l}.`;
    const a = layers[l];
    // out = res2 + gelu(ln2 · Wfc + bfc) · Wfp + bfp
    const dg = matmulBackward(
      dx,
      a.g,
      W(p + "mlp.c_proj.weight"),
      N,
      4 * C,
      C,
      G(p + "mlp.c_proj.weight"),
      G(p + "mlp.c_proj.bias"),
    );
    const dfch = geluBackward(a.fch, dg);
    const dln2 = matmulBackward(
      dfch,
      a.ln2.out,
      W(p + "mlp.c_fc.weight"),
      N,
      C,
      4 * C,
      G(p + "mlp.c_fc.weight"),
      G(p + "mlp.c_fc.bias"),
    );
    const dres2 = layernormBackward(
      dln2,
      a.res2,
      W(p + "ln_2.weight"),
      a.ln2,
      N,
      C,
      G(p + "ln_2.weight"),
      G(p + "ln_2.bias"),
    )
      .map((v, i) => v + dx[i]);
    // res2 = x + attention(ln1 · Wattn + battn) · Wproj + bproj
    const dy = matmulBackward(
      dres2,
      a.att.y,
      W(p + "attn.c_proj.weight"),
      N,
      C,
      C,
      G(p + "attn.c_proj.weight"),
      G(p + "attn.c_proj.bias"),
    );
    const dqkv = attentionBackward(dy, a.qkv, a.att.att, B, T, C, H);
    const dln1 = matmulBackward(
      dqkv,
      a.ln1.out,
      W(p + "attn.c_attn.weight"),
      N,
      C,
      3 * C,
      G(p + "attn.c_attn.weight"),
      G(p + "attn.c_attn.bias"),
    );
    dx = layernormBackward(
      dln1,
      a.x,
      W(p + "ln_1.weight"),
      a.ln1,
      N,
      C,
      G(p + "ln_1.weight"),
      G(p + "ln_1.bias"),
    )
      .map((v, i) => v + dres2[i]);
  }
  // Embeddings: dwpe[t] += dx0, dwte[token] += dx0 for the rows kept.
  const dwpe = G("wpe.weight");
  for (let i = 0; i < N; i++) {
    for (let c = 0; c < C; c++) dwpe[(i % T) * C + c] += dx[i * C + c];
    const row = wteGrad.get(inputs[i]);
    if (row) { for (let c = 0; c < C; c++) row[c] += dx[i * C + c]; }
  }
  return { loss, lp, grads, wteRows: wteGrad };
}
