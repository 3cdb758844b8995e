/**
 * Float64 references for the losses over target log-probs lp (row = b*T + t): per-sequence masked sums,
 * the LM loss and SimPO, each as a value and an analytic gradient dLoss/dlp.
 * @module
 */

/** sums[s] = sum_t mask*lp and counts[s] = sum_t mask over the rows of sequence s. */
export function sequenceSumsRef(
  lp: ArrayLike<number>,
  mask: ArrayLike<number>,
  nSeq: number,
  T: number,
): { sums: Float64Array; counts: Float64Array } {
  const sums = new Float64Array(nSeq), counts = new Float64Array(nSeq);
  for (let s = 0; s < nSeq; s++) {
    for (let t = 0; t < T; t++) {
      sums[s] += mask[s * T + t] * lp[s * T + t];
      counts[s] += mask[s * T + t];
    }
  }
  return { sums, counts };
}

/** LM loss -(sum mask*lp) / (sum mask) over the first nWinning sequences. */
export function lmLossRef(
  lp: ArrayLike<number>,
  mask: ArrayLike<number>,
  T: number,
  nWinning: number,
): number {
  const { sums, counts } = sequenceSumsRef(lp, mask, nWinning, T);
  return -sums.reduce((a, b) => a + b, 0) / counts.reduce((a, b) => a + b, 0);
}

/** d(weight * LM loss)/dlp for all nSeq*T rows: -weight*mask/(sum mask) on winning rows, 0 elsewhere. */
export function lmGradRef(
  mask: ArrayLike<number>,
  nSeq: number,
  T: number,
  nWinning: number,
  weight: number,
): Float64Array {
  let count = 0;
  for (let i = 0; i < nWinning * T; i++) count += mask[i];
  const g = new Float64Array(nSeq * T);
  for (let i = 0; i < nWinning * T; i++) g[i] = -weight * mask[i] / count;
  return g;
}

/** log sigmoid(z) without overflow. */
function logSigmoid(z: number): number {
  return Math.min(z, 0) - Math.log1p(Math.exp(-Math.abs(z)));
}

/** SimPO values for P pairs (i, P+i). */
export interface SimpoRef {
  loss: number;
  /** r_s = beta * mean over completionMask of lp, for the 2P sequences. */
  rewards: Float64Array;
  chosen: number;
  rejected: number;
  margin: number;
  winRate: number;
}

/** SimPO: loss = -mean_i log sigmoid(r_i - r_{P+i} - gamma) and its metrics. */
export function simpoRef(
  lp: ArrayLike<number>,
  completionMask: ArrayLike<number>,
  P: number,
  T: number,
  beta: number,
  gamma: number,
): SimpoRef {
  const { sums, counts } = sequenceSumsRef(lp, completionMask, 2 * P, T);
  const rewards = sums.map((s, i) => beta * s / counts[i]);
  let loss = 0, chosen = 0, rejected = 0, wins = 0;
  for (let i = 0; i < P; i++) {
    const rw = rewards[i], rl = rewards[P + i];
    loss -= logSigmoid(rw - rl - gamma);
    chosen += rw;
    rejected += rl;
    if (rw > rl) wins++;
  }
  return {
    loss: loss / P,
    rewards,
    chosen: chosen / P,
    rejected: rejected / P,
    margin: (chosen - rejected) / P,
    winRate: wins / P,
  };
}

/** dSimPO/dlp for rows [0, 2P*T): -sigmoid(-z_i)/P * beta*mask/count, with the sign flipped for losers. */
export function simpoGradRef(
  lp: ArrayLike<number>,
  completionMask: ArrayLike<number>,
  P: number,
  T: number,
  beta: number,
  gamma: number,
): Float64Array {
  const { rewards } = simpoRef(lp, completionMask, P, T, beta, gamma);
  const { counts } = sequenceSumsRef(lp, completionMask, 2 * P, T);
  const g = new Float64Array(2 * P * T);
  for (let i = 0; i < P; i++) {
    const z = rewards[i] - rewards[P + i] - gamma;
    const dz = -1 / (1 + Math.exp(z)) / P; // d(-log sigmoid z)/dz = -sigmoid(-z)
    for (let t = 0; t < T; t++) {
      g[i * T + t] = dz * beta * completionMask[i * T + t] / counts[i];
      g[(P + i) * T + t] = -dz * beta * completionMask[(P + i) * T + t] / counts[P + i];
    }
  }
  return g;
}
