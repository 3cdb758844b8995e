/** Float64 CPU reference for the token + position embedding, forward and backward. @module */

/** out[b*T + t] = wte[tokens[b*T + t]] + wpe[t], for wte [V, C] and wpe [>= T, C]. */
export function embeddingForwardRef(
  tokens: ArrayLike<number>,
  wte: ArrayLike<number>,
  wpe: ArrayLike<number>,
  B: number,
  T: number,
  C: number,
): Float64Array {
  const out = new Float64Array(B * T * C);
  for (let i = 0; i < B * T; i++) {
    const t = i % T;
    for (let c = 0; c < C; c++) out[i * C + c] = wte[tokens[i] * C + c] + wpe[t * C + c];
  }
  return out;
}

/** Scatter-add of dout [B*T, C] into dwte [V, C] by token and into dwpe [T, C] by position. */
export function embeddingBackwardRef(
  tokens: ArrayLike<number>,
  dout: ArrayLike<number>,
  V: number,
  B: number,
  T: number,
  C: number,
): { dwte: Float64Array; dwpe: Float64Array } {
  const dwte = new Float64Array(V * C), dwpe = new Float64Array(T * C);
  for (let i = 0; i < B * T; i++) {
    const t = i % T;
    for (let c = 0; c < C; c++) {
      dwte[tokens[i] * C + c] += dout[i * C + c];
      dwpe[t * C + c] += dout[i * C + c];
    }
  }
  return { dwte, dwpe };
}
