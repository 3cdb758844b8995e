/**
 * What every command shares: option parsing with `--help`, user errors, and a progress bar with ETA on
 * stderr (files are `files.ts`'s).
 * @module
 */
import { parseArgs } from "node:util";
import { checkHalfSums, parsePrecision, type Precision, PRECISIONS } from "../model/precision.ts";

/** One command-line option. */
export interface OptionSpec {
  type: "string" | "boolean";
  help: string;
  default?: string | boolean;
  multiple?: boolean;
  short?: string;
}

/**
 * The optimiser flags of every training command (`train`, `sft`, `simpo`), named as the run config's
 * keys `lr`, `warmupSteps` and `clipNorm`. `train` takes the preset's values when they are absent; `sft`
 * and `simpo` give them defaults.
 */
export const OPTIMIZER_FLAGS = {
  lr: { type: "string", help: "peak learning rate" },
  "warmup-steps": { type: "string", help: "linear warm-up steps of the schedule" },
  "clip-norm": { type: "string", help: "global gradient-norm clipping threshold; 0 disables" },
} satisfies Record<string, OptionSpec>;

/** The values of the {@link OPTIMIZER_FLAGS} that were given, under the config's names. */
export function optimizerFlags(
  v: Partial<Record<keyof typeof OPTIMIZER_FLAGS, unknown>>,
): { lr?: number; warmupSteps?: number; clipNorm?: number } {
  const out: { lr?: number; warmupSteps?: number; clipNorm?: number } = {};
  if (v.lr !== undefined) out.lr = numberOption(v.lr, "lr", { min: 0 });
  if (v["warmup-steps"] !== undefined) {
    out.warmupSteps = numberOption(v["warmup-steps"], "warmup-steps", { min: 0, integer: true });
  }
  if (v["clip-norm"] !== undefined) out.clipNorm = numberOption(v["clip-norm"], "clip-norm", { min: 0 });
  return out;
}

/**
 * `--precision` of every command that runs the model (train, sft, simpo, score, generate, eval, finetune,
 * bench): the matmuls' precision (model/precision.ts). `train` takes the config's `precision` when it is
 * absent.
 */
export const PRECISION_FLAG = {
  precision: {
    type: "string",
    help: `matmul precision: ${PRECISIONS.join(" or ")} (f16: f16 operands, f32 sums, weights, optimiser ` +
      "and losses, dynamic loss scaling; needs shader-f16)",
  },
} satisfies Record<string, OptionSpec>;

/** The value of {@link PRECISION_FLAG}, or `fallback` when it is absent; a bad value is a usage error. */
export function precisionFlag(value: unknown, fallback: Precision = "f32"): Precision {
  if (value === undefined) return fallback;
  try {
    return parsePrecision(value, "--precision");
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/**
 * `--half-sums` of train, sft, simpo, score, generate and bench: with `--precision f16`, f16 products and
 * partial sums in the blocks' linear layers (model/precision.ts; `train`: the config key `halfSums`).
 */
export const HALF_SUMS_FLAG = {
  "half-sums": {
    type: "boolean",
    help: "with --precision f16: f16 products and partial sums (chunks of 32, flushed into f32) in the " +
      "blocks' linear layers, twice the f32 FMA rate on GPUs; weight gradients and the LM head keep f32 " +
      "sums; the GPU kernel family only (the CPU family gives plain f16's results)",
  },
} satisfies Record<string, OptionSpec>;

/** The value of {@link HALF_SUMS_FLAG} under `precision`; given without f16 it is a usage error. */
export function halfSumsFlag(value: unknown, precision: Precision): boolean {
  const halfSums = value === true;
  try {
    checkHalfSums(precision, halfSums, "", { precision: "--precision", halfSums: "--half-sums" });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  return halfSums;
}

/** A user-facing error: printed without a stack trace, exit code 1. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The value of one parsed option: strings, booleans, lists for `multiple` options, or absent. */
export type OptionValue = string | boolean | string[] | undefined;

/**
 * Parse `args` against `spec` (strict: unknown options and positionals are usage errors; defaults filled
 * in). `--help` prints the help text and yields undefined, so the caller returns without work.
 */
export function parseCommand<S extends Record<string, OptionSpec>>(
  command: string,
  summary: string,
  spec: S,
  args: string[],
): Record<keyof S, OptionValue> | undefined {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }> = {
    help: { type: "boolean", short: "h" },
  };
  for (const [k, v] of Object.entries(spec)) {
    // parseArgs rejects keys that are present but undefined.
    options[k] = {
      type: v.type,
      ...(v.multiple ? { multiple: true } : {}),
      ...(v.short ? { short: v.short } : {}),
    };
  }
  let values: Record<string, unknown>;
  try {
    const argv = joinNegativeValues(args, options);
    values = parseArgs({ args: argv, options, allowPositionals: false, strict: true }).values;
  } catch (e) {
    throw new UsageError(`${command}: ${(e as Error).message}\nRun with --help for the options.`);
  }
  if (values.help) {
    console.log(helpText(command, summary, spec));
    return undefined;
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(spec)) out[k] = values[k] ?? v.default;
  return out as Record<keyof S, OptionValue>;
}

/**
 * `--name -1` as `--name=-1` for string options: parseArgs refuses a value that starts with `-` as
 * ambiguous (it may be an option), but a negative number never is one.
 */
function joinNegativeValues(args: string[], options: Record<string, { type: string }>): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = /^--([^=]+)$/.exec(args[i])?.[1];
    if (name && options[name]?.type === "string" && /^-\.?\d/.test(args[i + 1] ?? "")) {
      out.push(`${args[i]}=${args[++i]}`);
    } else out.push(args[i]);
  }
  return out;
}

/** {@link parseCommand} for a process's own arguments: `--help` prints the help and exits. */
export function parseOptions<S extends Record<string, OptionSpec>>(
  command: string,
  summary: string,
  spec: S,
  args: string[] = Deno.args,
): Record<keyof S, OptionValue> {
  const values = parseCommand(command, summary, spec, args);
  if (values === undefined) Deno.exit(0);
  return values;
}

/** The `--help` text for a command. */
export function helpText(command: string, summary: string, spec: Record<string, OptionSpec>): string {
  const lines = [`Usage: deno task ${command} [options]`, "", summary, "", "Options:"];
  for (const [k, v] of Object.entries(spec)) {
    const flag = `--${k}${v.type === "string" ? " <value>" : ""}`;
    const def = v.default !== undefined ? ` (default: ${v.default})` : "";
    lines.push(`  ${flag.padEnd(28)} ${v.help}${def}`);
  }
  lines.push(`  ${"--help".padEnd(28)} show this help`);
  return lines.join("\n");
}

/** A required string option, or a usage error naming it. */
export function required(value: unknown, name: string): string {
  if (typeof value !== "string" || value === "") throw new UsageError(`missing required option --${name}`);
  return value;
}

/** Parse a numeric option with bounds, naming the option in the error. */
export function numberOption(
  value: unknown,
  name: string,
  { min = -Infinity, max = Infinity, integer = false }: { min?: number; max?: number; integer?: boolean } =
    {},
): number {
  const n = typeof value === "number" ? value : Number(value);
  if (value === undefined || value === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new UsageError(
      `--${name} must be ${integer ? "an integer" : "a number"}, got ${JSON.stringify(value)}`,
    );
  }
  if (n < min || n > max) throw new UsageError(`--${name} must be in [${min}, ${max}], got ${n}`);
  return n;
}

/** The value of `--dropout` (train, sft, simpo): one rate in [0, 1) for all four dropout sites. */
export function dropoutOption(value: unknown): number {
  const p = numberOption(value, "dropout", { min: 0 });
  if (!(p < 1)) throw new UsageError(`--dropout must be a rate in [0, 1), got ${p}`);
  return p;
}

/** A progress bar on stderr with rate and ETA (redraws every 200 ms on a terminal, else a line every 5 s). */
export class Progress {
  #total: number;
  #label: string;
  #unit: string;
  #start = performance.now();
  #last = 0;
  done = 0;
  constructor(label: string, total: number, unit = "it") {
    this.#label = label;
    this.#total = total;
    this.#unit = unit;
  }
  /** Advance by `n` and redraw if due; `extra` is shown after the rate (e.g. the loss). */
  tick(n = 1, extra = ""): void {
    this.done += n;
    const now = performance.now();
    const tty = Deno.stderr.isTerminal();
    if (now - this.#last < (tty ? 200 : 5000) && this.done < this.#total) return;
    this.#last = now;
    const secs = (now - this.#start) / 1000;
    const rate = this.done / Math.max(secs, 1e-9);
    const frac = this.#total > 0 ? Math.min(1, this.done / this.#total) : 0;
    const width = 24;
    const bar = "#".repeat(Math.round(frac * width)).padEnd(width, ".");
    const eta = rate > 0 ? (this.#total - this.done) / rate : Infinity;
    const line = `${this.#label} [${bar}] ${this.done}/${this.#total} ${rate.toFixed(1)} ${this.#unit}/s ` +
      `ETA ${formatSeconds(eta)} ${extra}`;
    const enc = new TextEncoder();
    Deno.stderr.writeSync(enc.encode(tty ? `\r${line}\x1b[K` : line + "\n"));
  }
  /** Finish the line. */
  end(): void {
    if (Deno.stderr.isTerminal()) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
  }
}

/** The median of a non-empty list. */
export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** "1h02m", "3m05s", "12s". */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${s.toFixed(0)}s`;
}

/** Run a command's main; print user errors plainly and exit 1. */
export async function runMain(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (e) {
    const err = e as Error;
    console.error(`error: ${err.message}`);
    if (!(err instanceof UsageError) && Deno.env.get("DEBUG")) console.error(err.stack);
    Deno.exit(1);
  }
}
