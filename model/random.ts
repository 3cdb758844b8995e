/**
 * The project's one seeded random generator: xoshiro128** (128 bits of state, period 2^128 - 1) with a
 * state that serialises to four integers, so every draw of a run (initial weights, corpus chunks,
 * datapoint subsets, shuffles, test inputs) is reproducible and can be saved with the run state and
 * resumed exactly. Seeds are expanded with SplitMix32, and {@link deriveSeed} names independent streams,
 * e.g. `deriveSeed(seed, "chunks", s)`, so that a draw can be a pure function of (seed, round) instead
 * of depending on earlier draws.
 * @module
 */

/** A stream of uniform floats in [0, 1) from `seed` (for test inputs and benchmarks). */
export function uniforms(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.float();
}

/** A generator's whole state: four unsigned 32-bit integers, not all zero. */
export type RngState = [number, number, number, number];

/** murmur3's 32-bit finaliser: a bijection that mixes every input bit into every output bit. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** FNV-1a over the UTF-16 code units of a string, finalised with {@link fmix32}. */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return fmix32(h >>> 0);
}

/**
 * A 32-bit seed for an independent stream named by `parts` (strings or integers), derived from `seed`.
 * Different parts give unrelated streams; the same parts always give the same seed.
 */
export function deriveSeed(seed: number, ...parts: (string | number)[]): number {
  let h = fmix32((seed >>> 0) ^ 0x9e3779b9);
  for (const p of parts) {
    const v = typeof p === "number" ? fmix32((p >>> 0) + 0x632be5ab) : hashString(p);
    h = fmix32((Math.imul(h, 31) + v) >>> 0);
  }
  return h;
}

/** xoshiro128** with a restorable state. */
export class Rng {
  #s: Uint32Array;

  /** A generator seeded from a 32-bit integer (SplitMix32 fills the 128-bit state). */
  constructor(seed: number) {
    this.#s = new Uint32Array(4);
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      // SplitMix32: add the golden-ratio increment, then mix.
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
      z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
      this.#s[i] = (z ^ (z >>> 15)) >>> 0;
    }
    if ((this.#s[0] | this.#s[1] | this.#s[2] | this.#s[3]) === 0) this.#s[0] = 1;
  }

  /** A generator that continues exactly where the one that produced `state` stopped. */
  static fromState(state: RngState): Rng {
    if (
      !Array.isArray(state) || state.length !== 4 ||
      !state.every((v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff) || state.every((v) => v === 0)
    ) {
      throw new Error(
        `rng state must be four unsigned 32-bit integers, not all zero; got ${JSON.stringify(state)}`,
      );
    }
    const r = new Rng(0);
    r.#s.set(state);
    return r;
  }

  /** The current state (a copy), JSON-serialisable. */
  state(): RngState {
    return [this.#s[0], this.#s[1], this.#s[2], this.#s[3]];
  }

  /** The next unsigned 32-bit integer. */
  nextU32(): number {
    const s = this.#s;
    // result = rotl(s1 * 5, 7) * 9
    const m = Math.imul(s[1], 5);
    const result = Math.imul((m << 7) | (m >>> 25), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 11) | (s[3] >>> 21);
    return result;
  }

  /** A uniform float in [0, 1) with 53 random bits. */
  float(): number {
    const hi = this.nextU32() >>> 5, lo = this.nextU32() >>> 6; // 27 + 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** A standard normal sample (Box-Muller on two uniforms; the first kept away from 0 for the log). */
  normal(): number {
    const u = Math.max(this.float(), 1e-12), v = this.float();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** A uniform integer in [0, n), without modulo bias (rejection sampling), for 1 <= n <= 2^32. */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 0x100000000) {
      throw new Error(`Rng.int: n must be an integer in [1, 2^32], got ${n}`);
    }
    // Accept values below the largest multiple of n that fits in 2^32.
    const limit = 0x100000000 - (0x100000000 % n);
    for (;;) {
      const v = this.nextU32();
      if (v < limit) return v % n;
    }
  }

  /** Shuffle `a` in place (Fisher-Yates) and return it. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }

  /** A uniformly chosen element of a non-empty array. */
  pick<T>(a: readonly T[]): T {
    if (a.length === 0) throw new Error("Rng.pick: empty array");
    return a[this.int(a.length)];
  }
}
