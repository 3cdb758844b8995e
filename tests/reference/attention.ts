/**
 * Float64 CPU reference for causal multi-head self-attention that materialises the full probability
 * matrix per (b, h). Layouts as the GPU kernels: qkv [B*T, 3C], y and dy [B*T, C], lse [B*H*T].
 * @module
 */

/** Shape of one attention call. */
export interface AttentionShape {
  B: number;
  T: number;
  C: number;
  H: number;
}

/** Probabilities P[i][j] (j ≤ i, else 0) and log-sum-exps of the scaled scores for one (b, h). */
function probabilities(qkv: ArrayLike<number>, s: AttentionShape, b: number, h: number) {
  const { T, C, H } = s;
  const hd = C / H, scale = 1 / Math.sqrt(hd);
  const q = (t: number, d: number) => qkv[(b * T + t) * 3 * C + h * hd + d];
  const k = (t: number, d: number) => qkv[(b * T + t) * 3 * C + C + h * hd + d];
  const P: Float64Array[] = [];
  const lse = new Float64Array(T);
  for (let i = 0; i < T; i++) {
    const row = new Float64Array(T);
    let max = -Infinity;
    for (let j = 0; j <= i; j++) {
      let dot = 0;
      for (let d = 0; d < hd; d++) dot += q(i, d) * k(j, d);
      row[j] = dot * scale;
      max = Math.max(max, row[j]);
    }
    let sum = 0;
    for (let j = 0; j <= i; j++) sum += Math.exp(row[j] - max);
    lse[i] = max + Math.log(sum);
    for (let j = 0; j <= i; j++) row[j] = Math.exp(row[j] - lse[i]);
    P.push(row);
  }
  return { P, lse };
}

/**
 * A multiplier per probability (b, h, query i, key j): dropout's scaled mask on the attention
 * probabilities, applied after the softmax as transformers' GPT-2 does.
 */
export type ProbabilityMask = (b: number, h: number, i: number, j: number) => number;

/** y = (P ∘ mask) v per head, and lse (of the undropped scores), in float64. */
export function attentionForwardRef(
  qkv: ArrayLike<number>,
  s: AttentionShape,
  mask: ProbabilityMask = () => 1,
): { y: Float64Array; lse: Float64Array } {
  const { B, T, C, H } = s;
  const hd = C / H;
  const y = new Float64Array(B * T * C);
  const lse = new Float64Array(B * H * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const r = probabilities(qkv, s, b, h);
      lse.set(r.lse, (b * H + h) * T);
      for (let i = 0; i < T; i++) {
        for (let d = 0; d < hd; d++) {
          let acc = 0;
          for (let j = 0; j <= i; j++) {
            acc += r.P[i][j] * mask(b, h, i, j) * qkv[(b * T + j) * 3 * C + 2 * C + h * hd + d];
          }
          y[(b * T + i) * C + h * hd + d] = acc;
        }
      }
    }
  }
  return { y, lse };
}

/**
 * dqkv from dy by the textbook softmax backward on the full matrix: with M the mask, dP = M ∘ (dy v^T),
 * dS_ij = P_ij (dP_ij - Σ_k P_ik dP_ik), dq = scale dS k, dk = scale dS^T q, dv = (P ∘ M)^T dy.
 */
export function attentionBackwardRef(
  qkv: ArrayLike<number>,
  dy: ArrayLike<number>,
  s: AttentionShape,
  mask: ProbabilityMask = () => 1,
): Float64Array {
  const { B, T, C, H } = s;
  const hd = C / H, scale = 1 / Math.sqrt(hd);
  const dqkv = new Float64Array(B * T * 3 * C);
  const at = (t: number, block: number, h: number, d: number, b: number) =>
    (b * T + t) * 3 * C + block * C + h * hd + d;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const { P } = probabilities(qkv, s, b, h);
      for (let i = 0; i < T; i++) {
        const dP = new Float64Array(i + 1);
        let rowSum = 0;
        for (let j = 0; j <= i; j++) {
          for (let d = 0; d < hd; d++) dP[j] += dy[(b * T + i) * C + h * hd + d] * qkv[at(j, 2, h, d, b)];
          dP[j] *= mask(b, h, i, j);
          rowSum += P[i][j] * dP[j];
        }
        for (let j = 0; j <= i; j++) {
          const dS = P[i][j] * (dP[j] - rowSum);
          for (let d = 0; d < hd; d++) {
            dqkv[at(i, 0, h, d, b)] += scale * dS * qkv[at(j, 1, h, d, b)];
            dqkv[at(j, 1, h, d, b)] += scale * dS * qkv[at(i, 0, h, d, b)];
            dqkv[at(j, 2, h, d, b)] += P[i][j] * mask(b, h, i, j) * dy[(b * T + i) * C + h * hd + d];
          }
        }
      }
    }
  }
  return dqkv;
}

/** Rows [t0, t1) of sequence b of a [B*T, width] tensor, as one sequence. */
function piece(x: ArrayLike<number>, b: number, T: number, width: number, t0: number, t1: number) {
  return Float64Array.from({ length: (t1 - t0) * width }, (_, i) => x[(b * T + t0) * width + i]);
}

/**
 * Attention under the padding mask (`keyStart`, shaders/attention.ts) in float64: y, lse and dqkv. A
 * sequence b is then two independent causal sequences, its padding [0, ks[b]) and its text [ks[b], T), so
 * each piece runs the plain reference; `mask` is indexed by the whole sequence's positions.
 */
export function maskedAttentionRef(
  qkv: ArrayLike<number>,
  dy: ArrayLike<number>,
  c: AttentionShape & { ks: number[] },
  mask?: ProbabilityMask,
): { y: Float64Array; lse: Float64Array; dqkv: Float64Array } {
  const { B, T, C, H, ks } = c;
  const y = new Float64Array(B * T * C),
    lse = new Float64Array(B * H * T),
    dqkv = new Float64Array(qkv.length);
  for (let b = 0; b < B; b++) {
    for (const [t0, t1] of [[0, ks[b]], [ks[b], T]]) {
      if (t1 <= t0) continue;
      const s = { B: 1, T: t1 - t0, C, H };
      const m: ProbabilityMask | undefined = mask && ((_, h, i, j) => mask(b, h, i + t0, j + t0));
      const q = piece(qkv, b, T, 3 * C, t0, t1);
      const f = attentionForwardRef(q, s, m);
      y.set(f.y, (b * T + t0) * C);
      for (let h = 0; h < H; h++) lse.set(f.lse.subarray(h * s.T, (h + 1) * s.T), (b * H + h) * T + t0);
      dqkv.set(attentionBackwardRef(q, piece(dy, b, T, C, t0, t1), s, m), (b * T + t0) * 3 * C);
    }
  }
  return { y, lse, dqkv };
}
