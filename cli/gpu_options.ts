/**
 * The device options every command that uses the GPU takes (`--kernels`, `--tune`, `--tune-cache`), and
 * the one place the CLI opens the device: the kernel family, the tuner with its cache file, and a
 * line saying which backend, adapter and features the run uses.
 * @module
 */
import { dirname, join } from "node:path";
import { Gpu, type GpuDescription } from "../shaders/gpu.ts";
import { attachTuner, type TuneMode, type TuneStore } from "../shaders/tune.ts";
import { type OptionSpec, type OptionValue, UsageError } from "./common.ts";
import { writeFileAtomic } from "./files.ts";

/** The flags, for a command's option table. */
export const GPU_FLAGS = {
  kernels: {
    type: "string",
    help: "kernel family: auto (by adapter), cpu or gpu (either, on any adapter)",
    default: "auto",
  },
  tune: {
    type: "string",
    help: "GPU matmul and attention tuning: auto (cached winner, else time the candidates once), " +
      "off (fixed default), force (time again)",
    default: "auto",
  },
  "tune-cache": {
    type: "string",
    help: "tuning cache file (default: one per adapter and backend, $XDG_CACHE_HOME or ~/.cache, " +
      "babylm-webgpu/tuning/ADAPTER.json)",
  },
} satisfies Record<string, OptionSpec>;

/** The parsed values of {@link GPU_FLAGS}. */
export type GpuFlagValues = Partial<Record<keyof typeof GPU_FLAGS, OptionValue>>;

/**
 * The default cache file of the adapter `adapterKey` (vendor, architecture, device, description and
 * backend): one file per adapter under $XDG_CACHE_HOME, else ~/.cache, else the working directory, so a
 * machine used through two backends, or with two GPUs, keeps each one's winners instead of one adapter's
 * cache replacing the other's on every switch. The name is the key made file-safe, plus a hash of the
 * key itself so keys that differ only in dropped characters still get their own files.
 */
export function defaultTuneCache(adapterKey: string): string {
  const base = Deno.env.get("XDG_CACHE_HOME") ||
    (Deno.env.get("HOME") ? join(Deno.env.get("HOME")!, ".cache") : ".cache");
  const slug = adapterKey.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 80);
  return join(base, "babylm-webgpu", "tuning", `${slug || "adapter"}-${fnv1a(adapterKey)}.json`);
}

/** FNV-1a over the UTF-16 code units of `text`, as 8 hex digits. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, "0");
}

/** A tuning cache in a JSON file, written atomically (a killed write leaves the old file). */
export function fileStore(path: string): TuneStore {
  return {
    where: path,
    async load() {
      try {
        return await Deno.readTextFile(path);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return undefined;
        throw e;
      }
    },
    async save(text: string) {
      await Deno.mkdir(dirname(path), { recursive: true });
      await writeFileAtomic(path, text);
    },
  };
}

/** One line for logs: backend, adapter, kernel family, and whether f16 is there. */
export function describeLine(d: GpuDescription): string {
  const a = d.adapter;
  const name = [a.vendor, a.architecture, a.device, a.description].filter((s) => s && s !== "0").join(" ");
  return `backend ${d.backend}, adapter ${name || "unknown"}${a.fallback ? " (fallback)" : ""}, ` +
    `${d.kernels} kernels, ${d.features.includes("shader-f16") ? "" : "no "}shader-f16`;
}

/**
 * Open the device as the flags say: the kernel family, the tuner (mode and cache file), and one line on
 * stderr with {@link describeLine} unless `quiet`. Bad flag values are usage errors naming the flag.
 */
export async function openGpu(flags: GpuFlagValues, options: { quiet?: boolean } = {}): Promise<Gpu> {
  const kernels = String(flags.kernels ?? "auto");
  if (kernels !== "auto" && kernels !== "cpu" && kernels !== "gpu") {
    throw new UsageError(`--kernels must be auto, cpu or gpu, got "${kernels}"`);
  }
  const mode = String(flags.tune ?? "auto");
  if (mode !== "auto" && mode !== "off" && mode !== "force") {
    throw new UsageError(`--tune must be auto, off or force, got "${mode}"`);
  }
  const gpu = await Gpu.create({ kernels });
  const d = gpu.describe();
  const a = d.adapter;
  const adapterKey = `${a.vendor}/${a.architecture}/${a.device}/${a.description} on ${d.backend}`;
  await attachTuner(gpu, {
    mode: mode as TuneMode,
    store: fileStore(
      typeof flags["tune-cache"] === "string" ? flags["tune-cache"] : defaultTuneCache(adapterKey),
    ),
    adapterKey,
    warn: (m) => console.error(`warning: ${m}`),
    onTuned: (r) =>
      console.error(
        `tuned ${r.shapeClass} on ${r.shape.join("x")}: ${r.winner} (${r.ms[r.winner].toFixed(3)} ms; ${
          Object.keys(r.ms).length
        } candidates)`,
      ),
  });
  if (!options.quiet) console.error(describeLine(d));
  return gpu;
}
