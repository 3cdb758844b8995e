/** Float64 CPU reference for the matmul family (same argument meaning as shaders/matmul.ts). @module */

/** Plain arrays and the shape/stride arguments of a matmul; A and B hold whole buffers as stored. */
export interface MatmulRefArgs {
  out: ArrayLike<number>;
  a: ArrayLike<number>;
  b: ArrayLike<number>;
  bias?: ArrayLike<number>;
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  lda?: number;
  ldb?: number;
  ldc?: number;
  aOffset?: number;
  bOffset?: number;
  cOffset?: number;
  accumulate?: boolean;
}

/**
 * The whole `out` buffer after `out[M,N] (=|+=) op(A) op(B) + bias`, in float64; elements outside the
 * M x N block (other columns of a wider row, or before the offset) keep their values.
 */
export function matmulRef(r: MatmulRefArgs): Float64Array {
  const { M, N, K } = r;
  const transA = r.transA ?? false, transB = r.transB ?? false;
  const lda = r.lda ?? (transA ? M : K), ldb = r.ldb ?? (transB ? K : N), ldc = r.ldc ?? N;
  const ao = r.aOffset ?? 0, bo = r.bOffset ?? 0, co = r.cOffset ?? 0;
  const out = Float64Array.from(r.out);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = r.bias ? r.bias[n] : 0;
      for (let k = 0; k < K; k++) {
        const av = r.a[ao + (transA ? k * lda + m : m * lda + k)];
        const bv = r.b[bo + (transB ? n * ldb + k : k * ldb + n)];
        s += av * bv;
      }
      const c = co + m * ldc + n;
      out[c] = (r.accumulate ? out[c] : 0) + s;
    }
  }
  return out;
}

/** The whole `dbias` buffer after dbias[n] += sum over m of dout[offset + m*ld + n], in float64. */
export function biasBackwardRef(
  dbias: ArrayLike<number>,
  dout: ArrayLike<number>,
  M: number,
  N: number,
  ld = N,
  offset = 0,
): Float64Array {
  const out = Float64Array.from(dbias);
  for (let n = 0; n < N; n++) {
    for (let m = 0; m < M; m++) out[n] += dout[offset + m * ld + n];
  }
  return out;
}
