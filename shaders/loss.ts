/**
 * Losses from the per-position target log-probs `lp` (see crossentropy.ts), on the GPU: per-sequence masked
 * sums (also what scoring uses), the LM loss, and the SimPO preference loss. Each loss kernel writes its
 * value and metrics into a small f32 `metrics` buffer (slots in {@link METRIC}) and its gradient into the
 * per-row coefficients `g[row] = dLoss/dlp[row]` that crossEntropyBackward consumes.
 *
 * A batch holds nSeq sequences of length T; row = b*T + t. Masks are f32 [nSeq*T] of 0/1.
 *
 * Order: {@link lmLoss} overwrites g for every row of the batch, {@link simpoLoss} adds to it. So
 * - pure LM phase: lmLoss(weight 1);
 * - preference phase: lmLoss(weight lambda) then simpoLoss, giving g for simpo + lambda * LM;
 * - SimPO alone: lmLoss(weight 0) (which just clears g) then simpoLoss.
 *
 * A sequence whose mask is all zero counts as having one masked position (its mean is 0, its rows get
 * g = 0) rather than producing NaN.
 *
 * Every reduction is a per-thread strided sum followed by a fixed-order tree, so results are deterministic.
 * @module
 */
import { checkLengths, computeMain, type Plan, storage, type TensorView, uniformLayout } from "./gpu.ts";
import { wgslTreeSum } from "./reduce.ts";

const WG = 256;

/** Slots of the `metrics` buffer. */
export const METRIC = {
  /** LM loss (unweighted): -(sum of lmMask * lp) / (sum of lmMask) over the winning sequences. */
  lm: 0,
  /** SimPO loss: -mean_i log sigmoid(r_win_i - r_lose_i - gamma). */
  simpo: 1,
  /** Mean reward of the chosen (winning) sequences. */
  chosenReward: 2,
  /** Mean reward of the rejected (losing) sequences. */
  rejectedReward: 3,
  /** Mean of r_win - r_lose (without gamma). */
  margin: 4,
  /** Fraction of pairs with r_win > r_lose. */
  winRate: 5,
} as const;

/** Elements a `metrics` buffer needs. */
export const METRICS_LENGTH = 6;

/**
 * Elements a `metrics` buffer needs for SimPO over P pairs: the slots of {@link METRIC}, then every
 * sequence's reward r_s (chosen i at METRICS_LENGTH + i, rejected i at METRICS_LENGTH + P + i), so the
 * per-pair rewards come back with the same read as the batch means.
 */
export function simpoMetricsLength(P: number): number {
  return METRICS_LENGTH + 2 * P;
}

const SUMS_PARAMS = uniformLayout({ nSeq: "u32", T: "u32" });
/** The first nWinning sequences count; `weight` scales g. */
const LM_PARAMS = uniformLayout({ nSeq: "u32", T: "u32", nWinning: "u32", weight: "f32" });
const SIMPO_PARAMS = uniformLayout({ P: "u32", T: "u32", beta: "f32", gamma: "f32" });
/** Bindings of both loss kernels. */
const LOSS_BINDINGS = storage({
  metrics: "read_write array<f32>",
  g: "read_write array<f32>",
  lp: "read array<f32>",
  mask: "read array<f32>",
});

/** A fixed-order tree sum of vec4 partials over the workgroup, returned to every thread. */
const TREE_SUM = wgslTreeSum("treeSum", "vec4f", WG);

/** sums[s] = sum_t mask*lp, counts[s] = sum_t mask; one workgroup per sequence. Bindings: params, sums, counts, lp, mask. */
export const SEQUENCE_SUMS = TREE_SUM + SUMS_PARAMS.wgsl + storage({
  sums: "read_write array<f32>",
  counts: "read_write array<f32>",
  lp: "read array<f32>",
  mask: "read array<f32>",
}) + computeMain(WG) + /* wgsl */ `  let s = wgIndex;
  if (s >= p.nSeq) { return; }
  var a = vec4f(0.0);
  for (var t = li; t < p.T; t += ${WG}u) {
    let i = s * p.T + t;
    a += vec4f(mask[i] * lp[i], mask[i], 0.0, 0.0);
  }
  let tot = treeSum(li, a);
  if (li == 0u) {
    sums[s] = tot.x;
    counts[s] = tot.y;
  }
}
`;

/**
 * LM loss over rows [0, nWinning*T): loss = -(sum mask*lp) / (sum mask) into metrics[lm];
 * g[row] = -weight * mask[row] / (sum mask) for those rows and 0 for rows [nWinning*T, nSeq*T).
 * One workgroup. Bindings: params, metrics, g, lp, mask.
 */
export const LM_LOSS = TREE_SUM + LM_PARAMS.wgsl + LOSS_BINDINGS + computeMain(WG) + /* wgsl */
  `  let n = p.nWinning * p.T;
  var a = vec4f(0.0);
  for (var i = li; i < n; i += ${WG}u) {
    a += vec4f(mask[i] * lp[i], mask[i], 0.0, 0.0);
  }
  let tot = treeSum(li, a);
  let count = max(tot.y, 1.0);
  if (li == 0u) { metrics[${METRIC.lm}] = -tot.x / count; }
  let c = -p.weight / count;
  for (var i = li; i < p.nSeq * p.T; i += ${WG}u) {
    g[i] = select(0.0, c * mask[i], i < n);
  }
}
`;

/**
 * SimPO over P pairs (sequence i wins, sequence P+i loses). r_s = beta * (sum mask*lp) / (sum mask),
 * z_i = r_win - r_lose - gamma, loss = -mean_i log sigmoid(z_i). dLoss/dz_i = -sigmoid(-z_i) / P, so
 * g[row of win_i] += dz_i * beta * mask / count_win and g[row of lose_i] -= dz_i * beta * mask / count_lose.
 * One workgroup; pairs in order, so the metric sums are deterministic. Bindings: params, metrics (the
 * rewards r_s after the METRIC slots), g, lp, mask.
 */
export const SIMPO_LOSS = TREE_SUM + SIMPO_PARAMS.wgsl + LOSS_BINDINGS + /* wgsl */ `
// log(1 + e) for e in [0, 1]; the series keeps precision where 1 + e rounds to 1.
fn log1pSmall(e: f32) -> f32 {
  if (e < 1e-4) { return e - 0.5 * e * e; }
  return log(1.0 + e);
}

// log sigmoid(z) = min(z, 0) - log(1 + exp(-|z|)): no overflow for any z.
fn logSigmoid(z: f32) -> f32 {
  return min(z, 0.0) - log1pSmall(exp(-abs(z)));
}

// sigmoid(z) with exp of a non-positive argument only.
fn sigmoid(z: f32) -> f32 {
  let e = exp(-abs(z));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), z >= 0.0);
}

${computeMain(WG)}  var loss = 0.0;
  var chosen = 0.0;
  var rejected = 0.0;
  var wins = 0.0;
  let invP = 1.0 / f32(p.P);
  for (var i = 0u; i < p.P; i++) {
    let w0 = i * p.T;
    let l0 = (p.P + i) * p.T;
    var a = vec4f(0.0);
    for (var t = li; t < p.T; t += ${WG}u) {
      a += vec4f(mask[w0 + t] * lp[w0 + t], mask[w0 + t], mask[l0 + t] * lp[l0 + t], mask[l0 + t]);
    }
    let s = treeSum(li, a);
    let cw = max(s.y, 1.0);
    let cl = max(s.w, 1.0);
    let rw = p.beta * s.x / cw;
    let rl = p.beta * s.z / cl;
    let z = rw - rl - p.gamma;
    loss -= logSigmoid(z);
    chosen += rw;
    rejected += rl;
    wins += select(0.0, 1.0, rw > rl);
    if (li == 0u) {
      metrics[${METRICS_LENGTH}u + i] = rw;
      metrics[${METRICS_LENGTH}u + p.P + i] = rl;
    }
    let dz = -sigmoid(-z) * invP;
    let kw = dz * p.beta / cw;
    let kl = -dz * p.beta / cl;
    for (var t = li; t < p.T; t += ${WG}u) {
      g[w0 + t] += kw * mask[w0 + t];
      g[l0 + t] += kl * mask[l0 + t];
    }
  }
  if (li == 0u) {
    metrics[${METRIC.simpo}] = loss * invP;
    metrics[${METRIC.chosenReward}] = chosen * invP;
    metrics[${METRIC.rejectedReward}] = rejected * invP;
    metrics[${METRIC.margin}] = (chosen - rejected) * invP;
    metrics[${METRIC.winRate}] = wins * invP;
  }
}
`;

/** Throws unless `n` is a positive integer. */
function checkCount(where: string, name: string, n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`${where}: ${name} must be an integer >= 1, got ${n}`);
}

/**
 * Record sums[s] = sum_t mask[s*T+t] * lp[s*T+t] and counts[s] = sum_t mask[s*T+t] for s < nSeq.
 * The per-sequence scores used in evaluation are `sums`.
 */
export function sequenceSums(
  plan: Plan,
  args: { sums: TensorView; counts: TensorView; lp: TensorView; mask: TensorView; nSeq: number; T: number },
): void {
  const { sums, counts, lp, mask, nSeq, T } = args;
  const where = "sequenceSums";
  checkCount(where, "nSeq", nSeq);
  checkCount(where, "T", T);
  checkLengths(where, nSeq, { sums, counts });
  checkLengths(where, nSeq * T, { lp, mask });
  const u = plan.params(SUMS_PARAMS, { nSeq, T }, "loss.sums.params");
  plan.add(SEQUENCE_SUMS, [u, sums, counts, lp, mask], nSeq, "sequence_sums");
}

/** The buffers every loss reads and writes: metrics (slots {@link METRIC}), g and lp [nSeq*T]. */
export interface LossBuffers {
  metrics: TensorView;
  g: TensorView;
  lp: TensorView;
  T: number;
}

/**
 * Record the LM loss over the first `nWinning` of the batch's `nSeq` sequences:
 * metrics[METRIC.lm] = -(sum lmMask * lp) / (sum lmMask) over rows [0, nWinning*T) (unweighted), and
 * g[row] = -weight * lmMask[row] / (sum lmMask) for those rows, 0 for rows [nWinning*T, nSeq*T) (overwrites).
 */
export function lmLoss(
  plan: Plan,
  args: LossBuffers & { lmMask: TensorView; nSeq: number; nWinning: number; weight: number },
): void {
  const { metrics, g, lp, lmMask, nSeq, T, nWinning, weight } = args;
  const where = "lmLoss";
  checkCount(where, "nSeq", nSeq);
  checkCount(where, "T", T);
  checkCount(where, "nWinning", nWinning);
  if (nWinning > nSeq) throw new Error(`${where}: nWinning (${nWinning}) must be <= nSeq (${nSeq})`);
  if (!Number.isFinite(weight)) throw new Error(`${where}: weight must be finite, got ${weight}`);
  checkLengths(where, METRICS_LENGTH, { metrics });
  checkLengths(where, nSeq * T, { g, lp, lmMask });
  const u = plan.params(LM_PARAMS, { nSeq, T, nWinning, weight }, "loss.lm.params");
  plan.add(LM_LOSS, [u, metrics, g, lp, lmMask], 1, "lm_loss");
}

/**
 * Record the SimPO loss over P pairs (sequences 0..P-1 chosen, P..2P-1 rejected, pair i = (i, P+i)):
 * r_s = beta * (sum completionMask * lp) / (sum completionMask), loss = -mean_i log sigmoid(r_i - r_{P+i} - gamma).
 * Writes metrics slots simpo, chosenReward, rejectedReward, margin, winRate, then each sequence's reward
 * r_s at METRICS_LENGTH + s (so `metrics` holds {@link simpoMetricsLength}(P)), and **adds** dLoss/dlp to
 * g (rows [0, 2P*T)), so call {@link lmLoss} first.
 */
export function simpoLoss(
  plan: Plan,
  args: LossBuffers & { completionMask: TensorView; P: number; beta: number; gamma: number },
): void {
  const { metrics, g, lp, completionMask, P, T, beta, gamma } = args;
  const where = "simpoLoss";
  checkCount(where, "P", P);
  checkCount(where, "T", T);
  if (!Number.isFinite(beta) || !Number.isFinite(gamma)) {
    throw new Error(`${where}: beta and gamma must be finite, got beta=${beta} gamma=${gamma}`);
  }
  checkLengths(where, simpoMetricsLength(P), { metrics });
  checkLengths(where, 2 * P * T, { g, lp, completionMask });
  const u = plan.params(SIMPO_PARAMS, { P, T, beta, gamma }, "loss.simpo.params");
  plan.add(SIMPO_LOSS, [u, metrics, g, lp, completionMask], 1, "simpo_loss");
}
