/**
 * A run directory on disk, as the round loop's {@link RunStorage}: atomic replaces, appends, and model
 * directories written with {@link saveCheckpoint} (temporary sibling, then rename).
 * @module
 */
import type { RunStorage } from "../interaction/loop.ts";
import { mergeConfig, PRESETS, type TrainConfig, validateTrainConfig } from "../interaction/config.ts";
import { saveCheckpoint, writeFileAtomic } from "./files.ts";
import { UsageError } from "./common.ts";

/**
 * The config of the run in `dir`: its config.json over the preset it names (keys added since the run
 * started take the preset's values), checked. `flag` is the option that named the directory, for errors.
 */
export async function loadRunConfig(dir: string, flag: string): Promise<TrainConfig> {
  const path = `${dir}/config.json`;
  let saved: unknown;
  try {
    saved = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new UsageError(
      e instanceof Deno.errors.NotFound
        ? `${flag} ${dir}: no config.json there (is it a run directory?)`
        : `${path}: ${(e as Error).message}`,
    );
  }
  const preset = (saved as { preset?: unknown } | null)?.preset;
  const base = PRESETS[typeof preset === "string" ? preset : ""] ?? PRESETS.tiny;
  try {
    return validateTrainConfig({ ...mergeConfig(base, saved as never, path), outDir: dir }, { where: path });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** The files of the run directory `root`. */
export class DirStorage implements RunStorage {
  readonly root: string;
  constructor(root: string) {
    this.root = root.replace(/\/+$/, "");
  }

  #path(rel: string): string {
    if (rel.startsWith("/") || rel.split("/").includes("..")) {
      throw new Error(`run file ${rel}: not inside the run`);
    }
    return `${this.root}/${rel}`;
  }

  async #parent(rel: string): Promise<void> {
    const p = this.#path(rel);
    const dir = p.slice(0, p.lastIndexOf("/"));
    await Deno.mkdir(dir, { recursive: true });
  }

  async readText(rel: string): Promise<string | undefined> {
    try {
      return await Deno.readTextFile(this.#path(rel));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  }

  async readBytes(rel: string): Promise<Uint8Array | undefined> {
    try {
      return await Deno.readFile(this.#path(rel));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  }

  async writeText(rel: string, text: string): Promise<void> {
    await this.#parent(rel);
    await writeFileAtomic(this.#path(rel), text);
  }

  async appendText(rel: string, text: string): Promise<void> {
    await this.#parent(rel);
    await Deno.writeTextFile(this.#path(rel), text, { append: true });
  }

  async saveModel(
    rel: string,
    config: Parameters<RunStorage["saveModel"]>[1],
    weights: Map<string, Float32Array>,
    extra: Record<string, string | Uint8Array>,
  ): Promise<void> {
    await this.#parent(rel);
    await saveCheckpoint(this.#path(rel), config, weights, extra);
  }
}
