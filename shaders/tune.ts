/**
 * Self-tuning of the GPU matmul: on the first use of a shape class on an adapter, every candidate of
 * {@link TILED_CANDIDATES} that fits the device is timed on that product, and the fastest is kept in a
 * cache keyed by the adapter (vendor, architecture, device, description, backend) and the shape class.
 *
 * Recording stays synchronous: {@link chooseTiled} returns the cached winner, or the adapter kind's fixed
 * default while a class is untuned, and remembers the dispatches it recorded with the default; the async
 * {@link tune} (called before a plan first runs: the trainer, generator and scorer do) times the pending
 * classes and retargets those dispatches to their winners in place. Every candidate computes the same
 * fma chain in increasing k, so tuning changes speed only: a run's numbers do not depend on the cache.
 *
 * Modes: `auto` uses cached winners and tunes what is missing; `force` retunes every class on first use
 * (and rewrites the cache); `off` never times anything and never reads the cache: the default candidate
 * runs on every GPU adapter. The cache is JSON text behind a {@link TuneStore}: a file for the CLI
 * (`cli/gpu_options.ts`), memory in the browser unless the caller provides a store. A cache that does
 * not parse, or was written for another adapter or candidate table, is ignored with a warning and
 * rewritten.
 * @module
 */
import { type Dispatch, type Gpu, grid, Plan, type TensorView } from "./gpu.ts";
import {
  recordTiled,
  TILED_CANDIDATES,
  TILED_DEFAULT,
  TILED_PARAMS,
  type TiledBlock,
  type TiledCandidate,
  tiledCandidate,
  tiledFits,
  tiledLaunch,
  tiledSourceFor,
  type TiledVariant,
} from "./matmul_tiled.ts";

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
  shape: [number, number, number];
  winner: string;
  ms: Record<string, number>;
}

/** The cache file's format tag; a file with another is ignored. */
export const TUNE_FORMAT = "babylm-webgpu matmul tuning 1";

/** The JSON the store holds. */
export interface TuneCache {
  format: string;
  /** {@link TuneOptions.adapterKey} plus the candidate table it was tuned over. */
  adapter: string;
  entries: Record<string, { winner: string; shape: [number, number, number]; ms: Record<string, number> }>;
}

/** A dispatch recorded with the default candidate while its class was untuned. */
interface Pending {
  plan: Plan;
  index: number;
  /** The recorded dispatch: gone from `plan` once the plan was destroyed, and then left alone. */
  dispatch: Dispatch;
  params: TensorView;
  views: TensorView[];
  variant: TiledVariant;
  blk: TiledBlock;
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

/** The candidate table's fingerprint: a cache tuned over another table is stale. */
function tableKey(): string {
  return TILED_CANDIDATES.map((c) => c.name).join(",");
}

/**
 * Give `gpu` a tuner (replacing any): reads and checks the cache unless the mode is `off`. Without a call,
 * a device gets an in-memory `auto` tuner on first use.
 */
export async function attachTuner(gpu: Gpu, options: TuneOptions = {}): Promise<void> {
  const mode = options.mode ?? "auto";
  const key = `${options.adapterKey ?? gpu.adapterName} | candidates ${tableKey()}`;
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
    if (e && typeof e.winner === "string" && TILED_CANDIDATES.some((k) => k.name === e.winner)) {
      entries[cls] = e;
    } else warn(`tuning cache ${where}: entry "${cls}" names no known candidate: ignored, tuning it again`);
  }
  return { format: TUNE_FORMAT, adapter: key, entries };
}

function tunerOf(gpu: Gpu): Tuner {
  let t = tuners.get(gpu);
  if (!t) {
    t = new Tuner(`${gpu.adapterName} | candidates ${tableKey()}`, "auto", memoryStore(), console.warn);
    tuners.set(gpu, t);
  }
  return t;
}

/** Power-of-two bucket of a dimension (at least 16, at most 16384): products in one bucket share a winner. */
function bucket(n: number): number {
  return Math.min(16384, Math.max(16, 2 ** Math.ceil(Math.log2(Math.max(1, n)))));
}

/** The shape class of a product: transposes, the power-of-two buckets of M, N and K, and f16 operands. */
export function shapeClass(variant: TiledVariant, M: number, N: number, K: number): string {
  return `${variant.transA ? "T" : "N"}${variant.transB ? "T" : "N"} m${bucket(M)} n${bucket(N)} k${
    bucket(K)
  }${variant.half ? " f16" : ""}`;
}

/**
 * Record the tiled product `blk` on `plan`: with the class's tuned winner, or with the default (and the
 * dispatch remembered for {@link tune} to retarget) while the class is untuned. `candidate` pins one
 * candidate by name (tests, the bench) and bypasses the tuner.
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
  const t = tunerOf(plan.gpu);
  const cls = shapeClass(variant, blk.M, blk.N, blk.K);
  const winner = t.mode === "off" ? TILED_DEFAULT : t.resolved.get(cls);
  const { index, params } = recordTiled(plan, views, variant, blk, tiledCandidate(winner ?? TILED_DEFAULT));
  if (winner || index < 0) return;
  const list = t.pending.get(cls) ?? [];
  list.push({ plan, index, dispatch: plan.dispatches[index], params, views, variant, blk });
  t.pending.set(cls, list);
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
 * Time the candidates of every pending class (on the first product recorded in it), keep the winners in
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
      const first = list[0];
      const result = await timeCandidates(gpu, first.variant, first.blk, t.warn);
      winner = result.winner;
      t.resolved.set(cls, winner);
      t.cache.entries[cls] = { winner, shape: result.shape, ms: result.ms };
      t.onTuned?.({ ...result, shapeClass: cls });
      changed = true;
    }
    const c = tiledCandidate(winner);
    for (const p of list) retarget(gpu, p, c);
  }
  if (changed) await t.store.save(JSON.stringify(t.cache, null, 1) + "\n");
}

/** Point a recorded dispatch at candidate `c`: pipeline, bind group, workgroups and its uniform block. */
function retarget(gpu: Gpu, p: Pending, c: TiledCandidate): void {
  const d = p.plan.dispatches[p.index];
  if (d !== p.dispatch) return;
  const { params, tiles } = tiledLaunch(p.blk, c);
  const pipeline = gpu.pipeline(tiledSourceFor(p.variant, c));
  // Rewritten in place: a plan that appended this dispatch shares the same object and uniform block.
  gpu.writeBytes(p.params.buffer, p.params.offset, TILED_PARAMS.pack(params));
  Object.assign(d, {
    pipeline,
    bindGroup: gpu.bindGroup(pipeline, [p.params, ...p.views], d.label),
    workgroups: grid(gpu, tiles),
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

/** Time every candidate that fits the device on a dense product of `blk`'s shape; the fastest wins. */
async function timeCandidates(
  gpu: Gpu,
  variant: TiledVariant,
  blk: TiledBlock,
  warn: (m: string) => void,
): Promise<Omit<TuneResult, "shapeClass">> {
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
  const names = Object.keys(ms);
  const winner = names.length ? names.reduce((x, y) => (ms[y] < ms[x] ? y : x)) : TILED_DEFAULT;
  return { shape: [M, N, K], winner, ms };
}
