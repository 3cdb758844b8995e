/**
 * A run directory on disk, as the round loop's {@link RunStorage}: atomic replaces, appends, and model
 * directories written with {@link saveCheckpoint} (temporary sibling, then rename).
 * @module
 */
import type { RunStorage } from "../interaction/loop.ts";
import { saveCheckpoint, writeFileAtomic } from "./files.ts";

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
