/** Host-side f16 helpers for the mixed-precision tests. @module */
import { halfWords } from "../../shaders/f16.ts";

/** `values` as f16 (round to nearest even), packed two per 32-bit word and padded to halfWords. */
export function packHalves(values: ArrayLike<number>): Uint32Array {
  const h = new Float16Array(2 * halfWords(values.length));
  h.set(Float16Array.from(values as ArrayLike<number>));
  return new Uint32Array(h.buffer);
}
