/**
 * Statistics for the evaluations, in float64: ordinary least squares with an intercept (normal
 * equations, Cholesky, on standardised columns), Student-t p-values, Pearson and Spearman correlation.
 * @module
 */

/** An OLS fit `y ~ 1 + X`, with the quantities statsmodels reports. Index 0 is the intercept. */
export interface OlsFit {
  /** Coefficients: intercept, then one per column of X. */
  coef: number[];
  /** Standard errors, t-values and two-sided p-values of the coefficients. */
  se: number[];
  t: number[];
  p: number[];
  /** R² = 1 − SSR / TSS (TSS about the mean, as with a constant in statsmodels). */
  r2: number;
  /** Sum of squared residuals. */
  ssr: number;
  /** Observations, and parameters including the intercept. */
  n: number;
  k: number;
  /** Akaike information criterion, −2 lnL + 2k, with lnL = −n/2 (ln 2π + ln(SSR/n) + 1). */
  aic: number;
}

/**
 * Least squares of `y` on an intercept and the columns `X` (each of length n).
 *
 * Why standardise: interaction columns (e.g. log-frequency × length) have means far from zero and
 * make X'X ill-conditioned; fitting on (x − mean)/sd columns gives the same fitted values, R² and
 * t-values, and the coefficients and their covariance are mapped back exactly (β_j = γ_j / s_j,
 * β_0 = γ_0 − Σ γ_j m_j / s_j).
 */
export function ols(y: ArrayLike<number>, X: ArrayLike<number>[], names: string[] = []): OlsFit {
  const n = y.length, p = X.length, k = p + 1;
  for (const [j, col] of X.entries()) {
    if (col.length !== n) {
      throw new Error(`ols: column ${names[j] ?? j} has ${col.length} rows, expected ${n}`);
    }
  }
  if (n <= k) throw new Error(`ols: ${n} observations are too few for ${k} parameters`);
  const mean = new Float64Array(p), sd = new Float64Array(p);
  for (let j = 0; j < p; j++) {
    let m = 0;
    for (let i = 0; i < n; i++) m += X[j][i];
    m /= n;
    let v = 0;
    for (let i = 0; i < n; i++) v += (X[j][i] - m) ** 2;
    mean[j] = m;
    sd[j] = Math.sqrt(v / n);
    if (!(sd[j] > 0) || !Number.isFinite(sd[j])) {
      throw new Error(
        `ols: column ${names[j] ?? j} is constant or not finite (collinear with the intercept)`,
      );
    }
  }
  // Z = [1, (X - mean) / sd]; A = Z'Z, b = Z'y.
  const z = (j: number, i: number) => (j === 0 ? 1 : (X[j - 1][i] - mean[j - 1]) / sd[j - 1]);
  const A = new Float64Array(k * k), b = new Float64Array(k);
  const row = new Float64Array(k);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < k; j++) row[j] = z(j, i);
    for (let a = 0; a < k; a++) {
      b[a] += row[a] * y[i];
      for (let c = 0; c <= a; c++) A[a * k + c] += row[a] * row[c];
    }
  }
  for (let a = 0; a < k; a++) for (let c = a + 1; c < k; c++) A[a * k + c] = A[c * k + a];
  const L = cholesky(A, k, names);
  const gamma = cholSolve(L, k, b);
  const inv = cholInverse(L, k);
  // Back to the original scale: β = T γ with T mapping standardised to raw coefficients.
  const T = new Float64Array(k * k);
  T[0] = 1;
  for (let j = 1; j < k; j++) {
    T[j * k + j] = 1 / sd[j - 1];
    T[j] = -mean[j - 1] / sd[j - 1];
  }
  const coef = matVec(T, k, gamma);
  let ssr = 0, ym = 0;
  for (let i = 0; i < n; i++) ym += y[i];
  ym /= n;
  let tss = 0;
  for (let i = 0; i < n; i++) {
    let f = coef[0];
    for (let j = 0; j < p; j++) f += coef[j + 1] * X[j][i];
    ssr += (y[i] - f) ** 2;
    tss += (y[i] - ym) ** 2;
  }
  const df = n - k;
  const sigma2 = ssr / df;
  // Cov(β) = σ² T (Z'Z)⁻¹ Tᵀ; only the diagonal is needed.
  const se: number[] = [];
  for (let a = 0; a < k; a++) {
    let v = 0;
    for (let c = 0; c < k; c++) {
      if (T[a * k + c] === 0) continue;
      for (let d = 0; d < k; d++) v += T[a * k + c] * inv[c * k + d] * T[a * k + d];
    }
    se.push(Math.sqrt(sigma2 * v));
  }
  const t = coef.map((c, i) => c / se[i]);
  const pv = t.map((tv) => studentTwoSided(tv, df));
  const llf = -n / 2 * (Math.log(2 * Math.PI) + Math.log(ssr / n) + 1);
  return { coef, se, t, p: pv, r2: 1 - ssr / tss, ssr, n, k, aic: -2 * llf + 2 * k };
}

function cholesky(A: Float64Array, k: number, names: string[]): Float64Array {
  const L = new Float64Array(k * k);
  for (let j = 0; j < k; j++) {
    let d = A[j * k + j];
    for (let m = 0; m < j; m++) d -= L[j * k + m] ** 2;
    // Standardised columns have unit scale, so a pivot this small means an exact collinearity.
    if (!(d > 1e-10 * A[j * k + j])) {
      const which = j === 0 ? "the intercept" : `column ${names[j - 1] ?? j - 1}`;
      throw new Error(`ols: the design is singular at ${which} (collinear predictors)`);
    }
    L[j * k + j] = Math.sqrt(d);
    for (let i = j + 1; i < k; i++) {
      let s = A[i * k + j];
      for (let m = 0; m < j; m++) s -= L[i * k + m] * L[j * k + m];
      L[i * k + j] = s / L[j * k + j];
    }
  }
  return L;
}

/** Solve L Lᵀ x = b. */
function cholSolve(L: Float64Array, k: number, b: ArrayLike<number>): Float64Array {
  const z = new Float64Array(k);
  for (let i = 0; i < k; i++) {
    let s = b[i];
    for (let m = 0; m < i; m++) s -= L[i * k + m] * z[m];
    z[i] = s / L[i * k + i];
  }
  const x = new Float64Array(k);
  for (let i = k - 1; i >= 0; i--) {
    let s = z[i];
    for (let m = i + 1; m < k; m++) s -= L[m * k + i] * x[m];
    x[i] = s / L[i * k + i];
  }
  return x;
}

/** (L Lᵀ)⁻¹, column by column. */
function cholInverse(L: Float64Array, k: number): Float64Array {
  const inv = new Float64Array(k * k);
  const e = new Float64Array(k);
  for (let c = 0; c < k; c++) {
    e.fill(0);
    e[c] = 1;
    const x = cholSolve(L, k, e);
    for (let r = 0; r < k; r++) inv[r * k + c] = x[r];
  }
  return inv;
}

function matVec(M: Float64Array, k: number, v: ArrayLike<number>): number[] {
  const out: number[] = [];
  for (let r = 0; r < k; r++) {
    let s = 0;
    for (let c = 0; c < k; c++) s += M[r * k + c] * v[c];
    out.push(s);
  }
  return out;
}

/** ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; ~1e-15 relative). */
export function lnGamma(x: number): number {
  const g = [
    0.99999999999980993,
    676.5203681218851,
    -1259.1392167224028,
    771.32342877765313,
    -176.61502916214059,
    12.507343278686905,
    -0.13857109526572012,
    9.9843695780195716e-6,
    1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - lnGamma(1 - x);
  x -= 1;
  let a = g[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += g[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Regularised incomplete beta I_x(a, b), by its continued fraction (modified Lentz). */
export function betaInc(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  // The fraction converges fast for x < (a+1)/(a+b+2); otherwise use I_x(a,b) = 1 − I_{1−x}(b,a).
  if (x > (a + 1) / (a + b + 2)) return 1 - betaInc(1 - x, b, a);
  const front = Math.exp(a * Math.log(x) + b * Math.log(1 - x) - (lnGamma(a) + lnGamma(b) - lnGamma(a + b))) /
    a;
  const tiny = 1e-300;
  let f = 1, c = 1, d = 0;
  for (let i = 0; i <= 400; i++) {
    const m = i >> 1;
    let num: number;
    if (i === 0) num = 1;
    else if (i % 2 === 0) num = (m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m));
    else num = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1));
    d = 1 + num * d;
    if (Math.abs(d) < tiny) d = tiny;
    d = 1 / d;
    c = 1 + num / c;
    if (Math.abs(c) < tiny) c = tiny;
    const cd = c * d;
    f *= cd;
    if (Math.abs(1 - cd) < 1e-15) return front * (f - 1);
  }
  return front * (f - 1);
}

/** Two-sided p-value of a Student-t statistic with `df` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2). */
export function studentTwoSided(t: number, df: number): number {
  if (!Number.isFinite(t)) return Number.isNaN(t) ? NaN : 0;
  return betaInc(df / (df + t * t), df / 2, 0.5);
}

/** Pearson correlation of two equal-length samples (NaN if either is constant). */
export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const n = x.length;
  if (y.length !== n) throw new Error(`pearson: lengths differ (${n} vs ${y.length})`);
  let mx = 0, my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = x[i] - mx, dy = y[i] - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : NaN;
}

/** 1-based ranks with ties given the average of the ranks they span. */
export function averageRanks(x: ArrayLike<number>): Float64Array {
  const n = x.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => x[a] - x[b]);
  const r = new Float64Array(n);
  for (let i = 0; i < n;) {
    let j = i;
    while (j + 1 < n && x[order[j + 1]] === x[order[i]]) j++;
    const avg = (i + j) / 2 + 1;
    for (let m = i; m <= j; m++) r[order[m]] = avg;
    i = j + 1;
  }
  return r;
}

/** Spearman's rho: Pearson correlation of the average ranks (as scipy.stats.spearmanr). */
export function spearman(x: ArrayLike<number>, y: ArrayLike<number>): number {
  return pearson(averageRanks(x), averageRanks(y));
}
