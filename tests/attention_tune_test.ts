/**
 * The attention training kernels' candidates (shaders/attention_candidates.ts) and their tuning: every
 * candidate against float64 and bit for bit against every other, with and without the padding mask and
 * dropout, at T that no workgroup's rows divide; the tuner's attention classes (timed once, cached, read
 * back, bad entries ignored, `off` never timing, winners retargeted in place with the default's bits).
 */
import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { Plan } from "../shaders/gpu.ts";
import { attentionBackward, attentionForward } from "../shaders/attention.ts";
import {
  ATTENTION_CANDIDATES,
  ATTENTION_DEFAULT,
  attentionCandidate,
} from "../shaders/attention_candidates.ts";
import { DropoutKey, keeps } from "../shaders/dropout.ts";
import {
  attachTuner,
  attentionClass,
  memoryStore,
  pendingClasses,
  tune,
  TUNE_FORMAT,
  tuneAdapterKey,
  type TuneCache,
  tunedWinners,
} from "../shaders/tune.ts";
import { maskedAttentionRef, type ProbabilityMask } from "./reference/attention.ts";
import { assertClose, randn, testGpu } from "./util.ts";

const TOL = { rtol: 1e-4, atol: 1e-5 };

/** A shape, its padding starts (none: plain causal) and dropout rate. */
interface Case {
  B: number;
  T: number;
  C: number;
  H: number;
  ks?: number[];
  rate: number;
  /** Only the default and the staged candidates (the others do not depend on the head size). */
  stagedOnly?: boolean;
}

// Neither mask nor dropout at hd 8; both at hd 16 (starts on and off the 4-key groups and the 16-row
// tiles); the mask alone over more rows than a 64-thread workgroup holds at hd 8; T divides by no
// workgroup's rows (32 .. 256), tile (16, 32) or 4-key group. Then hd 64 once, on Vulkan (on GL the staged
// kernels' workgroup tiles take seconds each to compile).
const CASES: Case[] = [
  { B: 2, T: 37, C: 16, H: 2, rate: 0 },
  { B: 2, T: 45, C: 32, H: 2, ks: [0, 13], rate: 0.2 },
  { B: 1, T: 131, C: 16, H: 2, ks: [70], rate: 0 },
  { B: 1, T: 40, C: 128, H: 2, rate: 0, stagedOnly: true },
];

/**
 * Record the forward and backward of `c` with `candidate` (undefined: the adapter's own choice, through
 * the tuner on GPUs); `finish` tunes, runs and reads y, lse and dqkv, with the classes pending before
 * tuning and each dispatch's workgroup count after; `discard` frees everything unrun.
 */
async function record(c: Case, candidate?: string) {
  const gpu = await testGpu();
  const plan = new Plan(gpu);
  const { B, T, C, H } = c;
  const qkv = randn(B * T * 3 * C, 500 + T), dy = randn(B * T * C, 600 + T);
  const tqkv = gpu.tensor(qkv.length), ty = gpu.tensor(B * T * C), tlse = gpu.tensor(B * H * T);
  const tdy = gpu.tensor(dy.length), tdqkv = gpu.tensor(qkv.length);
  const tks = c.ks ? gpu.tensor(B) : undefined;
  gpu.write(tqkv, qkv);
  gpu.write(tdy, dy);
  // Stale values must be overwritten, not accumulated into.
  gpu.write(tdqkv, randn(qkv.length, 7));
  if (tks) gpu.write(tks, Uint32Array.from(c.ks!));
  const key = new DropoutKey(gpu, 9);
  key.setStep(3);
  const dropout = c.rate > 0 ? { key, site: 4, rate: c.rate } : undefined;
  const shape = { B, T, C, H, candidate, keyStart: tks, dropout };
  attentionForward(plan, { y: ty, lse: tlse, qkv: tqkv, ...shape });
  attentionBackward(plan, { dqkv: tdqkv, dy: tdy, qkv: tqkv, y: ty, lse: tlse, ...shape });
  const discard = () => {
    plan.destroy();
    for (const t of [tqkv, ty, tlse, tdy, tdqkv, tks]) if (t) gpu.free(t);
    key.destroy();
  };
  const finish = async () => {
    const pendingBeforeTune = pendingClasses(gpu);
    await tune(gpu);
    const workgroups = plan.dispatches.map((d) => d.workgroups[0] * d.workgroups[1]);
    plan.run();
    const out = { y: await gpu.read(ty), lse: await gpu.read(tlse), dqkv: await gpu.read(tdqkv) };
    discard();
    return { ...out, qkv, dy, pendingBeforeTune, workgroups };
  };
  return { finish, discard };
}

/** {@link record} and finish. */
async function run(c: Case, candidate?: string) {
  return await (await record(c, candidate)).finish();
}

/** Throws unless `a` and `b` hold the same bits. */
function assertBits(what: string, a: Float32Array, b: Float32Array): void {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length),
    ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  const at = ua.findIndex((x, i) => x !== ub[i]);
  if (ua.length !== ub.length || at >= 0) throw new Error(`${what}: element ${at} is ${a[at]}, not ${b[at]}`);
}

Deno.test("every attention candidate matches float64 and gives the same bits as the default", async () => {
  const gpu = await testGpu();
  // On GL the staged candidates take one case each in turn (their tiles compile slowly there), all on Vulkan.
  const gl = gpu.describe().backend === "gl";
  if (gl) {
    console.log("  GL backend: each staged candidate checked on one case (all cases on Vulkan), no hd=64");
  }
  const staged = ATTENTION_CANDIDATES.filter((k) => k.tile > 0);
  for (const [ci, c] of CASES.entries()) {
    if (gl && c.stagedOnly) continue;
    const { B, T, C, H } = c;
    const ks = c.ks ?? new Array(B).fill(0);
    const mask: ProbabilityMask | undefined = c.rate > 0
      ? (b, h, i, j) => keeps(9, 3, 4, (b * H + h) * T + i, j, c.rate) ? 1 / (1 - c.rate) : 0
      : undefined;
    let ref: ReturnType<typeof maskedAttentionRef> | undefined;
    const first = await run(c, ATTENTION_DEFAULT);
    for (const k of ATTENTION_CANDIDATES) {
      if (c.stagedOnly && k.tile === 0 && k.name !== ATTENTION_DEFAULT) continue;
      if (gl && k.tile > 0 && staged.indexOf(k) % (CASES.length - 1) !== ci) continue;
      const name = `${k.name} B=${B} T=${T} C=${C} H=${H}${c.ks ? ` ks=${c.ks}` : ""} p=${c.rate}`;
      const got = k.name === ATTENTION_DEFAULT ? first : await run(c, k.name);
      ref ??= maskedAttentionRef(got.qkv, got.dy, { B, T, C, H, ks }, mask);
      assertClose(`y ${name}`, got.y, ref.y, TOL);
      assertClose(`lse ${name}`, got.lse, ref.lse, TOL);
      assertClose(`dqkv ${name}`, got.dqkv, ref.dqkv, TOL);
      assertBits(`y ${name} against ${ATTENTION_DEFAULT}`, got.y, first.y);
      assertBits(`lse ${name} against ${ATTENTION_DEFAULT}`, got.lse, first.lse);
      assertBits(`dqkv ${name} against ${ATTENTION_DEFAULT}`, got.dqkv, first.dqkv);
    }
  }
});

Deno.test("attention candidates: a staged tile past the device's workgroup memory is refused by name", async () => {
  const gpu = await testGpu();
  const plan = new Plan(gpu);
  const big = gpu.limits.maxComputeWorkgroupStorageSize;
  // The largest head size (256) with the 32-row tile needs 64 KiB: more than WebGPU adapters commonly give.
  const C = 512, H = 2, B = 1, T = 4;
  if (4 * 32 * 2 * 256 <= big) {
    console.log(`  the device allows ${big} bytes of workgroup memory: nothing to refuse`);
    return;
  }
  const t = (n: number) => gpu.tensor(n);
  const [y, lse, qkv] = [B * T * C, B * H * T, B * T * 3 * C].map(t);
  let message = "";
  try {
    attentionForward(plan, { y, lse, qkv, B, T, C, H, candidate: "w128-r1-s32" });
  } catch (e) {
    message = (e as Error).message;
  }
  ok(
    /candidate w128-r1-s32 needs 128 threads and 65536 bytes of workgroup memory at hd=256/.test(message),
    message,
  );
  for (const v of [y, lse, qkv]) gpu.free(v);
});

/** The classes of the forward and both tuned backward passes of `c`. */
function classesOf(c: Case): string[] {
  const hd = c.C / c.H;
  return (["forward", "dkdv", "dq"] as const).map((p) =>
    attentionClass(p, hd, c.T, c.B * c.H, !!c.ks, c.rate > 0)
  );
}

/** Warnings collected instead of printed. */
function collect(): { warn: (m: string) => void; messages: string[] } {
  const messages: string[] = [];
  return { warn: (m) => messages.push(m), messages };
}

/** Masked, with dropout, and long enough that 64- and 128-row workgroups differ in number. */
const TINY: Case = { B: 2, T: 70, C: 16, H: 2, ks: [0, 5], rate: 0.1 };

/** Workgroups of the forward, dK/dV and dQ passes (dispatches 0, 2 and 3) under `name`, per class. */
function workgroupsOf(names: string[]): number[] {
  return names.map((n) => {
    const k = attentionCandidate(n);
    return TINY.B * TINY.H * Math.ceil(TINY.T / (k.WG * k.R));
  });
}

/** Throws unless the outputs hold the same bits. */
function assertSame(
  what: string,
  a: { y: Float32Array; lse: Float32Array; dqkv: Float32Array },
  b: typeof a,
) {
  for (const k of ["y", "lse", "dqkv"] as const) assertBits(`${what} ${k}`, a[k], b[k]);
}

Deno.test("tuning attention: each pass is timed once per class, cached, retargeted to its winner with the default's bits, and read back", async () => {
  const gpu = await testGpu();
  if (gpu.kernels !== "gpu") {
    console.log("  CPU kernel family: attention is not tuned here (TEST_KERNELS=gpu runs this)");
    return;
  }
  await attachTuner(gpu, { mode: "off" });
  const fixed = await run(TINY);
  assertEquals(fixed.pendingBeforeTune, []);
  const store = memoryStore(), classes = classesOf(TINY);
  await attachTuner(gpu, { mode: "auto", store, adapterKey: "attn" });
  const tuned = await run(TINY);
  assertEquals(tuned.pendingBeforeTune, classes);
  const cache = JSON.parse(store.text!) as TuneCache;
  assertEquals(Object.keys(cache.entries).sort(), [...classes].sort());
  for (const cls of classes) {
    const e = cache.entries[cls];
    assertEquals(Object.keys(e.ms).sort(), ATTENTION_CANDIDATES.map((k) => k.name).sort(), cls);
    assertEquals(e.shape, [TINY.B, TINY.T, TINY.C, TINY.H]);
    ok(Object.values(e.ms).every((ms) => ms > 0 && ms >= e.ms[e.winner]), cls);
  }
  const winners = classes.map((c) => cache.entries[c].winner);
  console.log(`  winners: ${classes.map((c, i) => `${c}: ${winners[i]}`).join("; ")}`);
  assertEquals([0, 2, 3].map((i) => tuned.workgroups[i]), workgroupsOf(winners));
  assertSame("tuned", tuned, fixed);
  // A second attach reads the cache: every class is resolved when recorded, nothing is pending.
  const saved = store.text;
  await attachTuner(gpu, { mode: "auto", store, adapterKey: "attn" });
  assertEquals(tunedWinners(gpu), Object.fromEntries(classes.map((c, i) => [c, winners[i]])));
  assertEquals((await run(TINY)).pendingBeforeTune, []);
  assertEquals(store.text, saved);
  await attachTuner(gpu, { mode: "off" });
});

Deno.test("tuning attention: cached winners are recorded directly; unknown winners, old or foreign caches are ignored with a warning; off reads nothing", async () => {
  const gpu = await testGpu();
  if (gpu.kernels !== "gpu") {
    console.log("  CPU kernel family: attention is not tuned here (TEST_KERNELS=gpu runs this)");
    return;
  }
  await attachTuner(gpu, { mode: "off" });
  const fixed = await run(TINY);
  const classes = classesOf(TINY);
  const staged = ["w128-r1-s32", "w64-r2-s16", "w128-r1-s16"];
  const entries = Object.fromEntries(
    classes.map((c, i) => [c, { winner: staged[i], shape: [1, 1, 1, 1], ms: { [staged[i]]: 1 } }]),
  );
  const cache = (e: TuneCache["entries"]) =>
    JSON.stringify({ format: TUNE_FORMAT, adapter: tuneAdapterKey("attn"), entries: e });
  await attachTuner(gpu, { store: memoryStore(cache(entries)), adapterKey: "attn" });
  const cached = await run(TINY);
  assertEquals(cached.pendingBeforeTune, []);
  assertEquals([0, 2, 3].map((i) => cached.workgroups[i]), workgroupsOf(staged));
  assertSame("cached staged winners", cached, fixed);

  const cases: Array<[string, string, RegExp, string[]]> = [
    [
      "a matmul candidate as an attention winner",
      cache({ ...entries, [classes[1]]: { ...entries[classes[1]], winner: "wg64x64k8-t8x8-b2" } }),
      /entry "attention dkdv [^"]*" names no known candidate/,
      [classes[1]],
    ],
    [
      "a matmul-only cache of before",
      JSON.stringify({ format: "babylm-webgpu matmul tuning 1", adapter: "attn", entries: {} }),
      /is not a "babylm-webgpu tuning 2" file/,
      classes,
    ],
    ["another adapter", cache(entries).replace('"attn |', '"other |'), /was made for "other \|/, classes],
  ];
  for (const [what, text, pattern, pending] of cases) {
    const col = collect();
    await attachTuner(gpu, { store: memoryStore(text), adapterKey: "attn", warn: col.warn });
    const r = await record(TINY);
    ok(col.messages.some((m) => pattern.test(m)), `${what}: ${col.messages.join("; ")}`);
    assertEquals(pendingClasses(gpu), pending, what);
    r.discard();
  }
  const unreadable = {
    where: "nowhere",
    load: () => Promise.reject(new Error("off must not read the cache")),
    save: () => Promise.reject(new Error("off must not write the cache")),
  };
  await attachTuner(gpu, { mode: "off", store: unreadable });
  const off = await run(TINY);
  assertEquals(off.pendingBeforeTune, []);
  assertEquals([0, 2, 3].map((i) => off.workgroups[i]), workgroupsOf(classes.map(() => ATTENTION_DEFAULT)));
  assertSame("off", off, fixed);
});
