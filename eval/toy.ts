/**
 * A tiny deterministic CPU language model and tokenizers, for tests and for trying the evaluation
 * without a GPU: a bigram model with hashed scores, and a greedy longest-match tokenizer whose
 * multi-character pieces can straddle a word boundary (like BPE merges across a space).
 * @module
 */
import type { Scorer, TextCodec } from "./types.ts";

/** A bigram LM: ln p(b | a) = s(a, b) − ln Σ_c exp s(a, c), with s a hash of (a, b) in [−3, 3]. */
export class BigramScorer implements Scorer {
  readonly vocabSize: number;
  readonly seed: number;
  contextLength?: number;
  /** Every call's sequence lengths, to check batching. */
  readonly calls: number[][] = [];
  #logZ = new Map<number, number>();
  constructor(vocabSize: number, contextLength?: number, seed = 0) {
    this.vocabSize = vocabSize;
    this.seed = seed;
    this.contextLength = contextLength;
  }
  /** The unnormalised score s(a, b). */
  score(a: number, b: number): number {
    let h = Math.imul(a + 1, 0x9e3779b1) ^ Math.imul(b + 7, 0x85ebca6b) ^ Math.imul(this.seed, 0x27d4eb2f);
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d);
    h ^= h >>> 13;
    return ((h >>> 0) / 4294967296) * 6 - 3;
  }
  /** ln p(b | a) in float64. */
  logprob(a: number, b: number): number {
    let z = this.#logZ.get(a);
    if (z === undefined) {
      let m = -Infinity;
      for (let c = 0; c < this.vocabSize; c++) m = Math.max(m, this.score(a, c));
      let s = 0;
      for (let c = 0; c < this.vocabSize; c++) s += Math.exp(this.score(a, c) - m);
      z = m + Math.log(s);
      this.#logZ.set(a, z);
    }
    return this.score(a, b) - z;
  }
  /** ln p(t_i | t_{i-1}) for i = 1..n-1 of every sequence. */
  tokenLogprobs(seqs: number[][]): Promise<Float32Array[]> {
    this.calls.push(seqs.map((s) => s.length));
    return Promise.resolve(seqs.map((s) => {
      const out = new Float32Array(Math.max(0, s.length - 1));
      for (let i = 1; i < s.length; i++) {
        if (s[i] < 0 || s[i] >= this.vocabSize) {
          throw new Error(`toy scorer: token ${s[i]} outside vocab ${this.vocabSize}`);
        }
        out[i - 1] = this.logprob(s[i - 1], s[i]);
      }
      return out;
    }));
  }
}

/**
 * Greedy longest-match tokenizer over `pieces` plus every single UTF-16 unit (id = 1 + code unit for
 * units below 256, so id 0 is free for BOS); multi-character pieces get ids from 257 on.
 */
export class GreedyTokenizer implements TextCodec {
  readonly addsBos: boolean;
  readonly bosId = 0;
  readonly pieces: string[];
  readonly vocabSize: number;
  #byLength: string[];
  #ids = new Map<string, number>();
  constructor(pieces: string[] = [], addsBos = false) {
    this.addsBos = addsBos;
    this.pieces = pieces;
    pieces.forEach((p, i) => this.#ids.set(p, 257 + i));
    this.#byLength = [...pieces].sort((a, b) => b.length - a.length);
    this.vocabSize = 257 + pieces.length;
  }
  /** The pieces of `text` (for checking offsets by hand). */
  split(text: string): string[] {
    const out: string[] = [];
    for (let i = 0; i < text.length;) {
      const p = this.#byLength.find((q) => text.startsWith(q, i)) ?? text[i];
      if (p.length === 1 && p.charCodeAt(0) >= 256) {
        throw new Error(`toy tokenizer: character ${p} is outside Latin-1`);
      }
      out.push(p);
      i += p.length;
    }
    return out;
  }
  /** Ids of `text` (no BOS). */
  encode(text: string): number[] {
    return this.split(text).map((p) => this.#ids.get(p) ?? 1 + p.charCodeAt(0));
  }
  /** Text of `ids` (BOS decodes to nothing). */
  decode(ids: number[]): string {
    return ids.map((id) => (id === 0 ? "" : id >= 257 ? this.pieces[id - 257] : String.fromCharCode(id - 1)))
      .join("");
  }
}
