/** Float64 CPU reference for GELU (tanh form), forward and backward. @module */

const S = Math.sqrt(2 / Math.PI);

/** gelu(x) for every element, in float64. */
export function geluForwardRef(inp: ArrayLike<number>): Float64Array {
  const out = new Float64Array(inp.length);
  for (let i = 0; i < inp.length; i++) {
    const x = inp[i];
    out[i] = 0.5 * x * (1 + Math.tanh(S * (x + 0.044715 * x ** 3)));
  }
  return out;
}

/** gelu'(x) * dout for every element, in float64. */
export function geluBackwardRef(inp: ArrayLike<number>, dout: ArrayLike<number>): Float64Array {
  const out = new Float64Array(inp.length);
  for (let i = 0; i < inp.length; i++) {
    const x = inp[i];
    const t = Math.tanh(S * (x + 0.044715 * x ** 3));
    const d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * S * (1 + 3 * 0.044715 * x * x);
    out[i] = d * dout[i];
  }
  return out;
}
