/** Float64 CPU reference for the global gradient norm and PyTorch's clip_grad_norm_ coefficient. @module */

/** sqrt of the sum of squares of every element of every tensor. */
export function globalNormRef(tensors: ArrayLike<number>[]): number {
  let s = 0;
  for (const t of tensors) for (let i = 0; i < t.length; i++) s += t[i] * t[i];
  return Math.sqrt(s);
}

/** clip_grad_norm_'s factor: min(1, maxNorm / (norm + 1e-6)); 1 when maxNorm <= 0 (no clipping). */
export function clipCoefRef(norm: number, maxNorm: number): number {
  return maxNorm > 0 ? Math.min(1, maxNorm / (norm + 1e-6)) : 1;
}
