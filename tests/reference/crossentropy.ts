/** Float64 reference for fused softmax + cross-entropy over rows of logits [R, V]. @module */

/** Per row: lse = logsumexp(logits[r, :]) and lp = logits[r, targets[r]] - lse, in float64. */
export function crossEntropyForwardRef(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  R: number,
  V: number,
): { lp: Float64Array; lse: Float64Array } {
  const lp = new Float64Array(R), lse = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    let m = -Infinity;
    for (let j = 0; j < V; j++) m = Math.max(m, logits[r * V + j]);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(logits[r * V + j] - m);
    lse[r] = m + Math.log(s);
    lp[r] = logits[r * V + targets[r]] - lse[r];
  }
  return { lp, lse };
}

/** dlogits[r, j] = g[r] * ((j == targets[r]) - softmax(logits[r, :])[j]), in float64. */
export function crossEntropyBackwardRef(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  g: ArrayLike<number>,
  R: number,
  V: number,
): Float64Array {
  const { lse } = crossEntropyForwardRef(logits, targets, R, V);
  const d = new Float64Array(R * V);
  for (let r = 0; r < R; r++) {
    for (let j = 0; j < V; j++) {
      const p = Math.exp(logits[r * V + j] - lse[r]);
      d[r * V + j] = g[r] * ((j === targets[r] ? 1 : 0) - p);
    }
  }
  return d;
}
