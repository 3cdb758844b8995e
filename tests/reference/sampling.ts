/** Float64 reference for the sampling distribution: temperature, top-k, top-p, EOS suppression. @module */

/**
 * The exact distribution the sampler draws from: softmax(z / T), restricted to the top-k tokens, then
 * to the smallest set of top tokens whose mass reaches top_p (descending order, crossing token kept).
 */
export function samplingDistributionRef(
  logits: ArrayLike<number>,
  { temperature, topP, topK, suppress = -1 }: {
    temperature: number;
    topP: number;
    topK: number;
    suppress?: number;
  },
): Float64Array {
  const V = logits.length;
  const z = Array.from({ length: V }, (_, j) => (j === suppress ? -Infinity : logits[j] / temperature));
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const order = [...e.keys()].sort((a, b) => e[b] - e[a] || a - b);
  const kept = new Set<number>();
  const k = topK > 0 ? Math.min(topK, V) : V;
  const total = order.slice(0, k).reduce((s, j) => s + e[j], 0);
  let mass = 0;
  for (const j of order.slice(0, k)) {
    if (e[j] === 0) break;
    kept.add(j);
    mass += e[j];
    if (mass >= topP * total) break;
  }
  const out = new Float64Array(V);
  for (const j of kept) out[j] = e[j] / mass;
  return out;
}
