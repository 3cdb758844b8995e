/** Float64 CPU reference for LayerNorm over the last dimension (biased variance), forward and backward. @module */

/** out = (x - mean) / sqrt(var + eps) * weight + bias per row of inp [N, C]; also mean and rstd [N]. */
export function layernormForwardRef(
  inp: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number>,
  N: number,
  C: number,
  eps: number,
): { out: Float64Array; mean: Float64Array; rstd: Float64Array } {
  const out = new Float64Array(N * C), mean = new Float64Array(N), rstd = new Float64Array(N);
  for (let r = 0; r < N; r++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += inp[r * C + c];
    const m = s / C;
    let q = 0;
    for (let c = 0; c < C; c++) q += (inp[r * C + c] - m) ** 2;
    const rs = 1 / Math.sqrt(q / C + eps);
    for (let c = 0; c < C; c++) out[r * C + c] = (inp[r * C + c] - m) * rs * weight[c] + bias[c];
    mean[r] = m;
    rstd[r] = rs;
  }
  return { out, mean, rstd };
}

/**
 * Gradients of sum(dout * LayerNorm(inp)) with respect to inp, weight and bias, derived directly from
 * the definition: with n = (x - mean) * rstd and dn = dout * weight,
 * dx_j = rstd * (dn_j - (1/C) sum_k dn_k - n_j (1/C) sum_k dn_k n_k).
 */
export function layernormBackwardRef(
  dout: ArrayLike<number>,
  inp: ArrayLike<number>,
  weight: ArrayLike<number>,
  N: number,
  C: number,
  eps: number,
): { dinp: Float64Array; dweight: Float64Array; dbias: Float64Array } {
  const { mean, rstd } = layernormForwardRef(inp, weight, new Float64Array(C), N, C, eps);
  const dinp = new Float64Array(N * C), dweight = new Float64Array(C), dbias = new Float64Array(C);
  for (let r = 0; r < N; r++) {
    const norm = (c: number) => (inp[r * C + c] - mean[r]) * rstd[r];
    let sdn = 0, sdnn = 0;
    for (let c = 0; c < C; c++) {
      const dn = dout[r * C + c] * weight[c];
      sdn += dn;
      sdnn += dn * norm(c);
      dweight[c] += dout[r * C + c] * norm(c);
      dbias[c] += dout[r * C + c];
    }
    for (let c = 0; c < C; c++) {
      dinp[r * C + c] = rstd[r] * (dout[r * C + c] * weight[c] - sdn / C - norm(c) * sdnn / C);
    }
  }
  return { dinp, dweight, dbias };
}
