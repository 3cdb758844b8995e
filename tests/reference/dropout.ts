/**
 * Float64 CPU references for dropout: the scaled masks of the counter-based generator
 * (shaders/dropout.ts) and the elementwise forms the kernels compute.
 * @module
 */
import { dropoutBits, keepThreshold } from "../../shaders/dropout.ts";

/** Where a mask comes from: the run's seed, the optimiser step, the site and the rate. */
export interface MaskKey {
  seed: number;
  step: number;
  site: number;
  rate: number;
}

/** The scaled mask of a [rows, cols] site: 1/(1-p) where kept, 0 where dropped (float64). */
export function maskRef(key: MaskKey, rows: number, cols: number): Float64Array {
  const t = keepThreshold(key.rate), scale = 1 / (1 - key.rate);
  const m = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      m[r * cols + c] = dropoutBits(key.seed, key.step, key.site, r, c) >= t ? scale : 0;
    }
  }
  return m;
}

/** a + mask * x elementwise (a omitted: mask * x). */
export function dropoutRef(mask: Float64Array, x: ArrayLike<number>, a?: ArrayLike<number>): Float64Array {
  return Float64Array.from(mask, (m, i) => (a ? a[i] : 0) + m * x[i]);
}
