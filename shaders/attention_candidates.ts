/**
 * The launch configurations of the causal attention training kernels (`attention.ts`): a small table the
 * tuner (`tune.ts`) times per adapter and shape class on GPU-family devices, and the fixed configuration
 * of the CPU family. A table of plain data, apart from the kernels, so the tuner can fingerprint it
 * without importing the kernels that call the tuner.
 *
 * Every candidate gives the same bits (docs/engine.md, "Attention's candidates"): each row of the
 * output is computed by one thread in the same order whatever the candidate, and the extra key groups
 * or queries a thread walks past its own rows add exact zeros.
 * @module
 */

/** The kernels a candidate configures; each is tuned as its own shape class. */
export type AttentionPass = "forward" | "dkdv" | "dq";

/** One launch configuration of the attention training kernels. */
export interface AttentionCandidate {
  /** Stable name, the key the tuning cache stores. */
  name: string;
  /** What it changes (printed by the bench). */
  technique: string;
  /** Threads per workgroup. */
  WG: number;
  /** Rows (queries, or keys in the dK/dV pass) per thread, each kept in registers. */
  R: number;
  /**
   * 0: every thread reads the other side's rows (keys for forward and dQ, queries for dK/dV) from the
   * storage buffers. Otherwise the workgroup stages `tile` of them at a time in workgroup memory (a
   * multiple of 4), between barriers, so each is read from storage once per workgroup.
   */
  tile: number;
}

/** The candidates: the GPU family's default first, then wider and narrower workgroups, more rows, staging. */
export const ATTENTION_CANDIDATES: readonly AttentionCandidate[] = [
  {
    name: "w64-r1",
    technique: "one row per thread, 64 threads, other side from storage",
    WG: 64,
    R: 1,
    tile: 0,
  },
  { name: "w32-r1", technique: "32 threads: one warp, twice the workgroups", WG: 32, R: 1, tile: 0 },
  { name: "w128-r1", technique: "128 threads per workgroup", WG: 128, R: 1, tile: 0 },
  { name: "w256-r1", technique: "256 threads per workgroup", WG: 256, R: 1, tile: 0 },
  { name: "w64-r2", technique: "two rows per thread: each load serves both", WG: 64, R: 2, tile: 0 },
  {
    name: "w64-r4",
    technique: "four rows per thread (the CPU family's configuration)",
    WG: 64,
    R: 4,
    tile: 0,
  },
  {
    name: "w64-r1-s16",
    technique: "16 rows of the other side staged in workgroup memory",
    WG: 64,
    R: 1,
    tile: 16,
  },
  {
    name: "w128-r1-s16",
    technique: "staged 16 at a time, 128 threads share each tile",
    WG: 128,
    R: 1,
    tile: 16,
  },
  { name: "w64-r2-s16", technique: "staged 16 at a time, two rows per thread", WG: 64, R: 2, tile: 16 },
  { name: "w128-r1-s32", technique: "staged 32 at a time: half the barriers of 16", WG: 128, R: 1, tile: 32 },
];

/** What GPU adapters run while a class is untuned or tuning is off: the kernels as they were before tuning. */
export const ATTENTION_DEFAULT = "w64-r1";

/**
 * The CPU family's fixed configuration, never tuned: on llvmpipe loads are what costs, and 4 rows per
 * thread make the kernels 3-3.5x faster than 1 (8 rows: 6x, but a backward kernel takes 25 s to compile).
 */
export const ATTENTION_CPU = "w64-r4";

/** The candidate called `name`; throws naming the known ones otherwise. */
export function attentionCandidate(name: string): AttentionCandidate {
  const c = ATTENTION_CANDIDATES.find((c) => c.name === name);
  if (!c) {
    throw new RangeError(
      `attention: no candidate "${name}" (known: ${ATTENTION_CANDIDATES.map((c) => c.name).join(", ")})`,
    );
  }
  return c;
}

/**
 * Workgroup-memory bytes of candidate `c` in pass `pass` at head size `hd`: forward and dQ stage k and v
 * (2 hd floats a key), dK/dV stages q and dy and the row's lse and D (2 hd + 2 floats a query); with
 * the padding mask 4 more for the loop bound every thread reads. At hd=64: 8 KiB a 16-row tile (8.1 KiB
 * for dK/dV), 16 KiB a 32-row one (16.3 KiB).
 */
export function attentionSharedBytes(
  c: AttentionCandidate,
  pass: AttentionPass,
  hd: number,
  masked: boolean,
): number {
  if (c.tile === 0) return 0;
  return 4 * c.tile * (pass === "dkdv" ? 2 * hd + 2 : 2 * hd) + (masked ? 4 : 0);
}

/** Whether the device's limits admit candidate `c` for `pass` at head size `hd` (with the mask or not). */
export function attentionFits(
  c: AttentionCandidate,
  pass: AttentionPass,
  hd: number,
  masked: boolean,
  limits: { maxComputeInvocationsPerWorkgroup: number; maxComputeWorkgroupStorageSize: number },
): boolean {
  return c.WG <= limits.maxComputeInvocationsPerWorkgroup &&
    attentionSharedBytes(c, pass, hd, masked) <= limits.maxComputeWorkgroupStorageSize;
}
