/**
 * Self-tuning of the GPU family's kernels with candidate tables: the matmul ({@link TILED_CANDIDATES})
 * and causal attention's training passes ({@link ATTENTION_CANDIDATES}). On the first use of a shape
 * class on an adapter, every candidate that fits the device is timed on that shape, and the fastest is
 * kept in one cache keyed by the adapter (vendor, architecture, device, description, backend), the
 * candidate tables and the shape class. A class names its family first ("matmul NN m64 n64 k32",
 * "attention dkdv hd64 t512 bh16").
 *
 * Recording stays synchronous: {@link chooseTiled} and {@link chooseCandidate} record the cached winner,
 * or the family's fixed default while a class is untuned, and remember the dispatches recorded with the
 * default; the async {@link tune} (called before a plan first runs: the trainer, generator and scorer do)
 * times the pending classes and retargets those dispatches to their winners in place. Every candidate of
 * a family gives the same bits (the matmul the same fma chain in increasing k, attention the same order
 * per row), so tuning changes speed only: a run's numbers do not depend on the cache.
 *
 * Modes: `auto` uses cached winners and tunes what is missing; `force` retunes every class on first use
 * (and rewrites the cache); `off` never times anything and never reads the cache: the default candidates
 * run on every GPU adapter. The cache is JSON text behind a {@link TuneStore}: a file for the CLI
 * (`cli/gpu_options.ts`), memory in the browser unless the caller provides a store. A cache that does
 * not parse, has another format (a matmul-only cache of before), or was written for another adapter or
 * candidate tables, is ignored with a warning and rewritten; an entry naming no candidate of its family is
 * ignored with a warning and tuned again.
 * @module
 */
import { type Dispatch, type Gpu, grid, Plan, type TensorView } from "./gpu.ts";
import {
  recordTiled,
  TILED_CANDIDATES,
  TILED_DEFAULT,
  TILED_PARAMS,
  type TiledBlock,
  tiledCandidate,
  tiledFits,
  tiledLaunch,
  tiledSourceFor,
  type TiledVariant,
} from "./matmul_tiled.ts";
import { ATTENTION_CANDIDATES, ATTENTION_DEFAULT, type AttentionPass } from "./attention_candidates.ts";

/** How the tuner treats its cache (see the module doc). */
export type TuneMode = "auto" | "off" | "force";

/** Where the tuning cache's JSON text lives. */
export interface TuneStore {
  /** The stored text, or undefined when there is none yet. */
  load(): Promise<string | undefined>;
  /** Replace the stored text. */
  save(text: string): Promise<void>;
  /** Where it lives, for messages. */
  readonly where: string;
}

/** A store in memory (the browser's default), optionally starting from `text`. */
export function memoryStore(text?: string): TuneStore & { text?: string } {
  return {
    text,
    where: "memory",
    load() {
      return Promise.resolve(this.text);
    },
    save(t: string) {
      this.text = t;
      return Promise.resolve();
    },
  };
}

/** Options of {@link attachTuner}. */
export interface TuneOptions {
  mode?: TuneMode;
  store?: TuneStore;
  /** What identifies the adapter (vendor, architecture, device, description, backend); default its name. */
  adapterKey?: string;
  /** Where warnings go (a corrupt or foreign cache, a candidate that failed); default console.warn. */
  warn?: (message: string) => void;
  /** Called once per tuned class with every candidate's time; default: nothing. */
  onTuned?: (result: TuneResult) => void;
}

/** One class's timing. */
export interface TuneResult {
  shapeClass: string;
  /** The shape timed: [M, N, K] for a matmul, [B, T, C, H] for attention. */
  shape: number[];
  winner: string;
  ms: Record<string, number>;
}

/** Milliseconds of every candidate that ran on `shape`. */
export type Timing = Pick<TuneResult, "shape" | "ms">;

/** The cache file's format tag; a file with another is ignored. */
export const TUNE_FORMAT = "babylm-webgpu tuning 2";

/** The JSON the store holds. */
export interface TuneCache {
  format: string;
  /** {@link TuneOptions.adapterKey} plus the candidate tables it was tuned over. */
  adapter: string;
  entries: Record<string, { winner: string; shape: number[]; ms: Record<string, number> }>;
}

/** A family's candidate names (what a cache entry's winner must be one of) and its untuned default. */
const FAMILIES: Record<string, { names: readonly string[]; fallback: string }> = {
  matmul: { names: TILED_CANDIDATES.map((c) => c.name), fallback: TILED_DEFAULT },
  attention: { names: ATTENTION_CANDIDATES.map((c) => c.name), fallback: ATTENTION_DEFAULT },
};

/** The family of shape class `cls` (its first word), or undefined for none known. */
function familyOf(cls: string) {
  return Object.hasOwn(FAMILIES, cls.split(" ")[0]) ? FAMILIES[cls.split(" ")[0]] : undefined;
}

/** A recorded dispatch of a tuned family: its index in the plan (-1: nothing recorded) and how to retarget it. */
export interface Retargetable {
  index: number;
  /** Point the dispatch at candidate `name` in place (pipeline, bind group, workgroups, uniform block). */
  retarget(name: string): void;
}

/** A dispatch recorded with the default candidate while its class was untuned. */
interface Pending {
  plan: Plan;
  index: number;
  /** The recorded dispatch: gone from `plan` once the plan was destroyed, and then left alone. */
  dispatch: Dispatch;
  retarget: (name: string) => void;
  /** Times the class's candidates on this dispatch's shape. */
  time: (warn: (m: string) => void) => Promise<Timing>;
}

/** The tuner state of one device. */
class Tuner {
  readonly mode: TuneMode;
  readonly store: TuneStore;
  readonly key: string;
  readonly warn: (m: string) => void;
  readonly onTuned?: (r: TuneResult) => void;
  cache: TuneCache;
  /** Classes tuned (or found in the cache) in this process. */
  readonly resolved = new Map<string, string>();
  readonly pending = new Map<string, Pending[]>();

  constructor(
    key: string,
    mode: TuneMode,
    store: TuneStore,
    warn: (m: string) => void,
    on?: (r: TuneResult) => void,
  ) {
    this.key = key;
    this.mode = mode;
    this.store = store;
    this.warn = warn;
    this.onTuned = on;
    this.cache = { format: TUNE_FORMAT, adapter: key, entries: {} };
  }
}

const tuners = new WeakMap<Gpu, Tuner>();

/** The candidate tables' fingerprint: a cache tuned over other tables is stale. */
function tableKey(): string {
  return Object.entries(FAMILIES).map(([f, { names }]) => `${f} ${names.join(",")}`).join(" | ");
}

/** The cache's `adapter` field for {@link TuneOptions.adapterKey} `adapter`: it and the candidate tables. */
export function tuneAdapterKey(adapter: string): string {
  return `${adapter} | candidates ${tableKey()}`;
}

/**
 * Give `gpu` a tuner (replacing any): reads and checks the cache unless the mode is `off`. Without a call,
 * a device gets an in-memory `auto` tuner on first use.
 */
export async function attachTuner(gpu: Gpu, options: TuneOptions = {}): Promise<void> {
  const mode = options.mode ?? "auto";
  const key = tuneAdapterKey(options.adapterKey ?? gpu.adapterName);
  const t = new Tuner(
    key,
    mode,
    options.store ?? memoryStore(),
    options.warn ?? console.warn,
    options.onTuned,
  );
  tuners.set(gpu, t);
  if (mode === "off") return;
  const text = await t.store.load();
  if (text === undefined) return;
  const cache = parseCache(text, t.store.where, key, t.warn);
  if (!cache) return;
  t.cache = cache;
  if (mode === "auto") {
    for (const [cls, e] of Object.entries(cache.entries)) {
      t.resolved.set(cls, e.winner);
    }
  }
}

/** The cache in `text`, or undefined (with a warning naming `where` and why) when it cannot be used. */
function parseCache(
  text: string,
  where: string,
  key: string,
  warn: (m: string) => void,
): TuneCache | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    warn(`tuning cache ${where} is not valid JSON (${(e as Error).message}): ignored, tuning again`);
    return undefined;
  }
  const c = value as Partial<TuneCache>;
  if (typeof c !== "object" || c === null || c.format !== TUNE_FORMAT || typeof c.entries !== "object") {
    warn(`tuning cache ${where} is not a "${TUNE_FORMAT}" file: ignored, tuning again`);
    return undefined;
  }
  if (c.adapter !== key) {
    warn(`tuning cache ${where} was made for "${c.adapter}", this is "${key}": ignored, tuning again`);
    return undefined;
  }
  const entries: TuneCache["entries"] = {};
  for (const [cls, e] of Object.entries(c.entries ?? {})) {
    if (e && typeof e.winner === "string" && familyOf(cls)?.names.includes(e.winner)) {
      entries[cls] = e;
    } else warn(`tuning cache ${where}: entry "${cls}" names no known candidate: ignored, tuning it again`);
  }
  return { format: TUNE_FORMAT, adapter: key, entries };
}

function tunerOf(gpu: Gpu): Tuner {
  let t = tuners.get(gpu);
  if (!t) {
    t = new Tuner(tuneAdapterKey(gpu.adapterName), "auto", memoryStore(), console.warn);
    tuners.set(gpu, t);
  }
  return t;
}

/** Power-of-two bucket of a dimension (at least 16, at most 16384): shapes in one bucket share a winner. */
function bucket(n: number): number {
  return Math.min(16384, Math.max(16, 2 ** Math.ceil(Math.log2(Math.max(1, n)))));
}

/** The shape class of a product: transposes, the power-of-two buckets of M, N and K, and f16 operands. */
export function shapeClass(variant: TiledVariant, M: number, N: number, K: number): string {
  return `matmul ${variant.transA ? "T" : "N"}${variant.transB ? "T" : "N"} m${bucket(M)} n${bucket(N)} k${
    bucket(K)
  }${variant.halfSums ? " f16acc" : variant.half ? " f16" : ""}`;
}

/**
 * The shape class of an attention training pass: the pass, the head size (the kernels are generated for
 * it), the power-of-two buckets of T and of B*H (the work per row and the number of rows), the padding
 * mask and dropout (each adds work per score).
 */
export function attentionClass(
  pass: AttentionPass,
  hd: number,
  T: number,
  BH: number,
  masked: boolean,
  dropout: boolean,
): string {
  return `attention ${pass} hd${hd} t${bucket(T)} bh${bucket(BH)}${masked ? " masked" : ""}${
    dropout ? " dropout" : ""
  }`;
}

/**
 * Record a kernel of a tuned family for shape class `cls` (its family is the first word): `record(name)`
 * records it with candidate `name` (the class's tuned winner, or the family's default while the class is
 * untuned, and then the dispatch is remembered for {@link tune} to retarget); `time` times the
 * candidates on the same shape when {@link tune} resolves the class.
 */
export function chooseCandidate(
  plan: Plan,
  cls: string,
  record: (name: string) => Retargetable,
  time: (warn: (m: string) => void) => Promise<Timing>,
): void {
  const family = familyOf(cls);
  if (!family) throw new Error(`tune: shape class "${cls}" names no tuned family`);
  const t = tunerOf(plan.gpu);
  const winner = t.mode === "off" ? family.fallback : t.resolved.get(cls);
  const { index, retarget } = record(winner ?? family.fallback);
  if (winner || index < 0) return;
  const list = t.pending.get(cls) ?? [];
  list.push({ plan, index, dispatch: plan.dispatches[index], retarget, time });
  t.pending.set(cls, list);
}

/**
 * Record the tiled product `blk` on `plan` through the tuner ({@link chooseCandidate}). `candidate` pins
 * one candidate by name (tests, the bench) and bypasses the tuner.
 */
export function chooseTiled(
  plan: Plan,
  views: TensorView[],
  variant: TiledVariant,
  blk: TiledBlock,
  candidate?: string,
): void {
  if (candidate) {
    recordTiled(plan, views, variant, blk, tiledCandidate(candidate));
    return;
  }
  chooseCandidate(
    plan,
    shapeClass(variant, blk.M, blk.N, blk.K),
    (name) => {
      const { index, params } = recordTiled(plan, views, variant, blk, tiledCandidate(name));
      return { index, retarget: (w) => retargetTiled(plan, index, params, views, variant, blk, w) };
    },
    (warn) => timeCandidates(plan.gpu, variant, blk, warn),
  );
}

/** Classes recorded with the default while untuned, waiting for {@link tune}. */
export function pendingClasses(gpu: Gpu): string[] {
  return [...(tuners.get(gpu)?.pending.keys() ?? [])];
}

/** The winner of every class this device has resolved (tuned or read from the cache). */
export function tunedWinners(gpu: Gpu): Record<string, string> {
  return Object.fromEntries(tuners.get(gpu)?.resolved ?? []);
}

/**
 * Time the candidates of every pending class (on the first dispatch recorded in it), keep the winners in
 * the cache and the store, and retarget the dispatches recorded with the default. Resolves at once when
 * nothing is pending. Call before running a freshly recorded plan.
 */
export async function tune(gpu: Gpu): Promise<void> {
  const t = tuners.get(gpu);
  if (!t || t.pending.size === 0) return;
  const work = [...t.pending];
  t.pending.clear();
  // Errors of earlier work surface here, not in the first candidate's timing.
  await gpu.sync();
  let changed = false;
  for (const [cls, list] of work) {
    let winner = t.resolved.get(cls);
    if (!winner) {
      const { shape, ms } = await list[0].time(t.warn);
      const names = Object.keys(ms);
      winner = names.length ? names.reduce((x, y) => (ms[y] < ms[x] ? y : x)) : familyOf(cls)!.fallback;
      t.resolved.set(cls, winner);
      t.cache.entries[cls] = { winner, shape, ms };
      t.onTuned?.({ shapeClass: cls, shape, winner, ms });
      changed = true;
    }
    for (const p of list) if (p.plan.dispatches[p.index] === p.dispatch) p.retarget(winner);
  }
  if (changed) await t.store.save(JSON.stringify(t.cache, null, 1) + "\n");
}

/** Point the tiled dispatch `index` of `plan` at candidate `name`: pipeline, bind group, workgroups, uniforms. */
function retargetTiled(
  plan: Plan,
  index: number,
  params: TensorView,
  views: TensorView[],
  variant: TiledVariant,
  blk: TiledBlock,
  name: string,
): void {
  const gpu = plan.gpu, c = tiledCandidate(name), d = plan.dispatches[index];
  const launch = tiledLaunch(blk, c);
  const pipeline = gpu.pipeline(tiledSourceFor(variant, c));
  // Rewritten in place: a plan that appended this dispatch shares the same object and uniform block.
  gpu.writeBytes(params.buffer, params.offset, TILED_PARAMS.pack(launch.params));
  Object.assign(d, {
    pipeline,
    bindGroup: gpu.bindGroup(pipeline, [params, ...views], d.label),
    workgroups: grid(gpu, launch.tiles),
  });
}

/**
 * Seconds of one run of `plan` on the GPU, without the fixed cost of a submission and its wait (about
 * 12 ms on llvmpipe, more than many kernels take): the plan is encoded 1 + reps times into one command
 * buffer and once into another, and the difference is divided by reps, with reps enough for about
 * `seconds` of work (at most `maxReps`, at least 1). The median over `iters` such differences, after a
 * warm-up run. The tuner's timing, and the bench's (`cli/bench.ts`, with more iterations).
 */
export async function timePlan(
  gpu: Gpu,
  plan: Plan,
  { iters = 3, seconds = 0.05, maxReps = 16 }: { iters?: number; seconds?: number; maxReps?: number } = {},
): Promise<number> {
  const run = async (n: number) => {
    const t0 = performance.now();
    const enc = gpu.device.createCommandEncoder();
    for (let i = 0; i < n; i++) plan.encode(enc);
    gpu.device.queue.submit([enc.finish()]);
    await gpu.sync();
    return (performance.now() - t0) / 1000;
  };
  const once = await run(1);
  const reps = Math.max(1, Math.min(maxReps, Math.round(seconds / once)));
  const times: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t1 = await run(1);
    const tn = await run(1 + reps);
    times.push(Math.max(1e-7, (tn - t1) / reps));
  }
  times.sort((a, b) => a - b);
  const m = times.length >> 1;
  return times.length % 2 ? times[m] : (times[m - 1] + times[m]) / 2;
}

/** Time every candidate that fits the device on a dense product of `blk`'s shape. */
async function timeCandidates(
  gpu: Gpu,
  variant: TiledVariant,
  blk: TiledBlock,
  warn: (m: string) => void,
): Promise<Timing> {
  const { M, N, K } = blk;
  const lda = variant.transA ? M : K, ldb = variant.transB ? K : N;
  const dense: TiledBlock = { M, N, K, lda, ldb, ldc: N, aOff: 0, bOff: 0, cOff: 0, dOff: 0 };
  const a = gpu.tensor(M * K, "tune.a"), b = gpu.tensor(K * N, "tune.b"), out = gpu.tensor(M * N, "tune.out");
  const bias = variant.bias ? gpu.tensor(N, "tune.bias") : undefined;
  const views = bias ? [out, a, b, bias] : [out, a, b];
  const ms: Record<string, number> = {};
  try {
    for (const c of TILED_CANDIDATES) {
      if (!tiledFits(c, gpu.limits)) continue;
      const plan = new Plan(gpu);
      try {
        recordTiled(plan, views, variant, dense, c);
        ms[c.name] = (await timePlan(gpu, plan)) * 1000;
      } catch (e) {
        warn(`tuning ${c.name} on ${M}x${N}x${K} failed (${(e as Error).message}): left out`);
      } finally {
        plan.destroy();
      }
    }
  } finally {
    for (const v of [a, b, out, bias]) if (v) gpu.free(v);
  }
  return { shape: [M, N, K], ms };
}
