/**
 * What the page and the training worker say to each other through comlink: the worker's API, the
 * callbacks the page lends it, and the WebGPU check both sides use.
 * @module
 */
import type { LoopEvents, Phase } from "../interaction/loop.ts";
import type { TrainConfig } from "../interaction/config.ts";

/** What the page says when the browser refuses a request to the teacher (fetch threw a TypeError). */
export const FETCH_BLOCKED =
  "the browser could not reach the teacher server: it probably blocked the request " +
  "by CORS (the server must allow this page's origin) or the server is down";

/** The result of looking for a usable WebGPU adapter. */
export interface GpuProbe {
  ok: boolean;
  /** Adapter description when one was found. */
  adapter?: string;
  /** Why training cannot run here (no WebGPU, no adapter, limits too small). */
  problem?: string;
}

/** Where a run stands, as the worker counts it: what the page shows when a pause or stop lands. */
export interface RunPosition {
  round: number;
  phase: Phase | "preparing";
  /** Optimisation steps taken. */
  steps: number;
  wordsSeen: number;
  /** Continuations the student has written in this round. */
  sequences: number;
}

/** How a training run ended. */
export interface RunResult {
  status: "done" | "stopped";
  at: RunPosition;
  /** Training time, pauses excluded. */
  seconds: number;
  /** Time spent paused. */
  pausedSeconds: number;
}

/** Everything the worker reports: the loop's events plus lines about what the worker itself does. */
export interface WorkerCallbacks extends Required<LoopEvents> {
  /** A stage before the rounds start ("training the tokenizer", "starting WebGPU", ...). */
  onStatus(line: string): void;
  /** The student stored a sampling batch: the round's continuations and their tokens so far. */
  onStudentTokens(round: number, sequences: number, tokens: number): void;
  /** A requested pause took effect: the run halted here and waits for resume (or stop). */
  onHalted(at: RunPosition): void;
  /**
   * Does nothing: the worker awaits it before `start` resolves, so every earlier callback (they share
   * one channel, in order) has reached the page before the result, which comes on another.
   */
  flush(): void;
}

/** Options of a run that are not part of its config. */
export interface StartOptions {
  /** Keep every checkpoint's weights in the tab, so "Download run" includes them. */
  keepWeights: boolean;
}

/** The worker's API (exposed with comlink; every method returns a promise on the page side). */
export interface TrainerApi {
  /** Look for a WebGPU adapter with the limits the kernels need. */
  probe(): Promise<GpuProbe>;
  /** Train `config` from scratch; resolves when the run ends or is stopped, rejects on an error. */
  start(config: TrainConfig, callbacks: WorkerCallbacks, options: StartOptions): Promise<RunResult>;
  /** Halt before the next student batch or optimisation step (reported by onHalted). */
  pause(): void;
  resume(): void;
  /** End the run before the next student batch or optimisation step. */
  stop(): void;
  /** The run folder so far, as `deno task train` writes it (see MemoryStorage.runFiles). */
  files(): Record<string, string | Uint8Array>;
}

/**
 * Minimum limits the kernels rely on (the WebGPU defaults, which every conformant adapter offers and
 * some restricted ones do not): name -> [minimum, why].
 */
export const REQUIRED_LIMITS: Record<string, [number, string]> = {
  maxStorageBuffersPerShaderStage: [8, "kernels bind up to 8 storage buffers"],
  maxComputeInvocationsPerWorkgroup: [256, "kernels use workgroups of 256 threads"],
  maxComputeWorkgroupSizeX: [256, "kernels use workgroups of 256 threads"],
  maxComputeWorkgroupStorageSize: [16384, "tiles are sized for the default 16 KiB of shared memory"],
};

/** Check `gpu` (navigator.gpu, possibly missing) for an adapter with {@link REQUIRED_LIMITS}. */
export async function probeWebGpu(gpu: GPU | undefined): Promise<GpuProbe> {
  if (!gpu) {
    return {
      ok: false,
      problem:
        "This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome, Edge or Firefox " +
        "with WebGPU enabled, served from http://localhost or https.",
    };
  }
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (e) {
    return {
      ok: false,
      problem: `WebGPU is present but requesting an adapter failed: ${(e as Error).message}`,
    };
  }
  if (!adapter) {
    return {
      ok: false,
      problem: "WebGPU is present but the browser offers no adapter (GPU blocklisted or disabled; try " +
        "chrome://gpu, or enable WebGPU in the browser settings).",
    };
  }
  const info = adapter.info;
  const name = [info?.vendor, info?.architecture, info?.description].filter((s) => s).join(" ") ||
    "unnamed adapter";
  const limits = adapter.limits as unknown as Record<string, number>;
  const short = Object.entries(REQUIRED_LIMITS)
    .filter(([k, [min]]) => !(limits[k] >= min))
    .map(([k, [min, why]]) => `${k} is ${limits[k]}, needs ${min} (${why})`);
  if (short.length > 0) {
    return {
      ok: false,
      adapter: name,
      problem: `The WebGPU adapter's limits are too small: ${short.join("; ")}.`,
    };
  }
  return { ok: true, adapter: name };
}
