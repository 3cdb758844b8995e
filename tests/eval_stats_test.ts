import assert from "node:assert/strict";
import { averageRanks, ols, pearson, spearman, studentTwoSided } from "../eval/stats.ts";
import { assertClose, randn } from "./util.ts";

Deno.test("OLS: simple regression against the hand-computed fit", () => {
  // x̄ = 3, ȳ = 3, Sxx = 10, Sxy = 8, Syy = 10: slope 0.8, intercept 0.6, R² = 64/100,
  // SSR = Syy − Sxy²/Sxx = 3.6, σ² = 3.6/3 = 1.2, se(slope) = √(σ²/Sxx), se(b0) = √(σ²(1/n + x̄²/Sxx)).
  const fit = ols([1, 3, 2, 5, 4], [[1, 2, 3, 4, 5]], ["x"]);
  const seSlope = Math.sqrt(0.12), seB0 = Math.sqrt(1.2 * (0.2 + 0.9));
  const t = 0.8 / seSlope;
  // Student t with 3 df: two-sided p = 1 − (2/π)(u/(1+u²) + atan u), u = t/√3.
  const u = t / Math.sqrt(3);
  const p = 1 - (2 / Math.PI) * (u / (1 + u * u) + Math.atan(u));
  const aic = 5 * (Math.log(2 * Math.PI) + Math.log(3.6 / 5) + 1) + 2 * 2;
  assertClose("coef", fit.coef, [0.6, 0.8], { rtol: 1e-12, atol: 1e-13 });
  assertClose("se", fit.se, [seB0, seSlope], { rtol: 1e-12, atol: 0 });
  assertClose("t(slope), p(slope)", [fit.t[1], fit.p[1]], [t, p], { rtol: 1e-10, atol: 0 });
  assertClose("r2, ssr, aic", [fit.r2, fit.ssr, fit.aic], [0.64, 3.6, aic], { rtol: 1e-12, atol: 1e-14 });
  assert.equal(fit.n, 5);
  assert.equal(fit.k, 2);
});

/** Least squares by modified Gram-Schmidt QR on the raw design (an independent float64 reference). */
function qrLeastSquares(y: number[], cols: number[][]): { coef: number[]; ssr: number } {
  const n = y.length;
  const A = [Array(n).fill(1), ...cols].map((c) => c.slice());
  const k = A.length;
  const R = Array.from({ length: k }, () => Array(k).fill(0));
  for (let j = 0; j < k; j++) {
    for (let i = 0; i < j; i++) {
      let d = 0;
      for (let r = 0; r < n; r++) d += A[i][r] * A[j][r];
      R[i][j] = d;
      for (let r = 0; r < n; r++) A[j][r] -= d * A[i][r];
    }
    const norm = Math.sqrt(A[j].reduce((s, v) => s + v * v, 0));
    R[j][j] = norm;
    for (let r = 0; r < n; r++) A[j][r] /= norm;
  }
  const qty = A.map((q) => q.reduce((s, v, r) => s + v * y[r], 0));
  const coef = Array(k).fill(0);
  for (let i = k - 1; i >= 0; i--) {
    let s = qty[i];
    for (let m = i + 1; m < k; m++) s -= R[i][m] * coef[m];
    coef[i] = s / R[i][i];
  }
  let ssr = 0;
  for (let r = 0; r < n; r++) {
    let f = coef[0];
    for (let j = 0; j < cols.length; j++) f += coef[j + 1] * cols[j][r];
    ssr += (y[r] - f) ** 2;
  }
  return { coef, ssr };
}

Deno.test("OLS: interaction design like the reading regressions, against a QR reference", () => {
  const n = 300;
  const e = randn(n * 4, 11);
  const S = Array.from({ length: n }, (_, i) => 12 + 2 * e[i]);
  const L = Array.from({ length: n }, (_, i) => Math.round(5 + 2 * Math.abs(e[n + i])));
  const C = Array.from({ length: n }, (_, i) => 1 + (i % 12));
  const P = Array.from({ length: n }, (_, i) => 8 + 3 * e[2 * n + i]);
  const cols = [S, L, C, S.map((s, i) => s * L[i]), S.map((s, i) => s * C[i]), L.map((l, i) => l * C[i]), P];
  const y = S.map((s, i) => 200 - 3 * s + 9 * L[i] + 0.5 * C[i] + 4 * P[i] + 25 * e[3 * n + i]);
  const fit = ols(y, cols);
  const ref = qrLeastSquares(y, cols);
  assertClose("coef vs QR", fit.coef, ref.coef, { rtol: 1e-8, atol: 1e-9 });
  assertClose("ssr vs QR", [fit.ssr], [ref.ssr], { rtol: 1e-10, atol: 0 });
  let tss = 0;
  const ym = y.reduce((s, v) => s + v, 0) / n;
  for (const v of y) tss += (v - ym) ** 2;
  assertClose("r2", [fit.r2], [1 - ref.ssr / tss], { rtol: 1e-12, atol: 0 });
  assert.throws(() => ols(y, [S, S.map((s) => 2 * s + 1)], ["S", "S2"]), /singular at column S2/);
  assert.throws(() => ols(y, [Array(n).fill(3)], ["k"]), /column k is constant/);
});

Deno.test("Student-t two-sided p-values: closed forms for 1 and 2 df, normal limit", () => {
  for (const t of [0.1, 0.7, 1.5, 3, 12]) {
    // 1 df (Cauchy): p = 1 − (2/π) atan|t|; 2 df: p = 1 − |t|/√(t² + 2).
    assertClose(`p(t=${t}, df=1)`, [studentTwoSided(t, 1)], [1 - (2 / Math.PI) * Math.atan(t)], {
      rtol: 1e-10,
      atol: 1e-15,
    });
    assertClose(`p(t=${t}, df=2)`, [studentTwoSided(-t, 2)], [1 - t / Math.sqrt(t * t + 2)], {
      rtol: 1e-10,
      atol: 1e-15,
    });
  }
  assertClose("p(1.959964, df=1e7)", [studentTwoSided(1.959963984540054, 1e7)], [0.05], {
    rtol: 1e-5,
    atol: 0,
  });
  assert.equal(studentTwoSided(0, 5), 1);
});

Deno.test("Spearman with average ranks for ties, against hand values", () => {
  assert.deepEqual([...averageRanks([10, 20, 20, 5, 20])], [2, 4, 4, 1, 4]);
  // No ties: rho = 1 − 6 Σd² / (n(n² − 1)) = 1 − 12/60.
  assertClose("rho no ties", [spearman([1, 2, 3, 4], [1, 3, 2, 4])], [0.8], { rtol: 1e-14, atol: 0 });
  // Ties: ranks of y are [1, 2, 3.5, 5, 3.5]; Sxy = 8, Sxx = 10, Syy = 9.5.
  assertClose("rho with ties", [spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])], [8 / Math.sqrt(95)], {
    rtol: 1e-14,
    atol: 0,
  });
  assertClose("pearson", [pearson([1, 2, 3, 4, 5], [1, 3, 2, 5, 4])], [0.8], { rtol: 1e-14, atol: 0 });
  assert.ok(Number.isNaN(spearman([1, 1, 1], [1, 2, 3])));
});
