/**
 * Batched scoring on the GPU: ln p(t_i | t_<i) for every position of many token sequences. Sequences are
 * sorted by length and packed into batches of similar length (padding cut), each batch runs the forward
 * pass once, and only the per-position log-probabilities come back.
 * @module
 */
import type { GPT2 } from "./gpt2.ts";
import { Workspace } from "./gpt2.ts";
import { tune } from "../shaders/tune.ts";

/** Scoring settings. */
export interface ScoreOptions {
  /** Most sequences per batch (default 32). */
  batchSize?: number;
  /** Most padded tokens per batch (default 16384), so long sequences come in smaller batches. */
  maxBatchTokens?: number;
  /** Called after each batch with the number of sequences scored. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * For each sequence of n >= 1 tokens: n - 1 values, ln p(t_i | t_<i) for i = 1..n-1 (empty for n = 1).
 * Sequences longer than the model's context are an error.
 */
export class BatchScorer {
  readonly model: GPT2;
  #workspaces = new Map<string, Workspace>();

  constructor(model: GPT2) {
    this.model = model;
  }

  /** Log-probabilities of every position after the first, per sequence, in input order. */
  async tokenLogprobs(seqs: number[][], options: ScoreOptions = {}): Promise<Float32Array[]> {
    const { nPositions, vocabSize } = this.model.config;
    seqs.forEach((s, i) => {
      if (s.length - 1 > nPositions) {
        throw new Error(`sequence ${i} has ${s.length} tokens; the model scores at most ${nPositions + 1}`);
      }
      for (const t of s) {
        if (!Number.isInteger(t) || t < 0 || t >= vocabSize) {
          throw new Error(`sequence ${i}: token ${t} is not an id in [0, ${vocabSize})`);
        }
      }
    });
    const out = new Array<Float32Array>(seqs.length);
    const order = seqs.map((_, i) => i).filter((i) => seqs[i].length > 1)
      .sort((a, b) => seqs[b].length - seqs[a].length || a - b);
    seqs.forEach((s, i) => {
      if (s.length <= 1) out[i] = new Float32Array(0);
    });
    const maxB = options.batchSize ?? 32;
    const maxTokens = options.maxBatchTokens ?? 16384;
    let done = seqs.length - order.length;
    for (let at = 0; at < order.length;) {
      // Longest first: this batch's T is its first sequence's length - 1, rounded up to limit shapes.
      const T = Math.min(nPositions, roundUp(seqs[order[at]].length - 1, 8));
      const B = Math.max(1, Math.min(maxB, Math.floor(maxTokens / T), order.length - at));
      const idx = order.slice(at, at + B);
      const ws = this.#workspace(B, T);
      await tune(this.model.gpu);
      const inputs = new Uint32Array(B * T);
      const targets = new Uint32Array(B * T);
      idx.forEach((i, b) => {
        const s = seqs[i];
        for (let t = 0; t < s.length - 1; t++) {
          inputs[b * T + t] = s[t];
          targets[b * T + t] = s[t + 1];
        }
      });
      ws.setBatch(inputs, targets);
      ws.forward.run();
      const lp = await this.model.gpu.read(ws.lp);
      idx.forEach((i, b) => (out[i] = lp.slice(b * T, b * T + seqs[i].length - 1)));
      at += B;
      done += B;
      options.onProgress?.(done, seqs.length);
    }
    return out;
  }

  #workspace(B: number, T: number): Workspace {
    const key = `${B}x${T}`;
    let ws = this.#workspaces.get(key);
    if (!ws) {
      // Keep a few shapes; free the oldest beyond that.
      if (this.#workspaces.size >= 4) {
        const [oldKey, old] = this.#workspaces.entries().next().value!;
        old.destroy();
        this.#workspaces.delete(oldKey);
      }
      ws = new Workspace(this.model, B, T);
      this.#workspaces.set(key, ws);
    }
    return ws;
  }

  /** Free every workspace. */
  destroy(): void {
    for (const ws of this.#workspaces.values()) ws.destroy();
    this.#workspaces.clear();
  }
}

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}
