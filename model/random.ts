/**
 * A small seeded generator (Mulberry32) whose whole state is one 32-bit integer, so it can be saved in
 * a checkpoint and resumed exactly.
 * @module
 */

/** A uniform [0, 1) generator from a seed. */
export function rng(seed: number): () => number {
  const s = new SeededRandom(seed);
  return () => s.next();
}

/** Mulberry32 with a readable and restorable state. */
export class SeededRandom {
  state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** Next uniform value in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** A standard normal sample (Box-Muller). */
  normal(): number {
    const u = Math.max(this.next(), 1e-12), v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}
