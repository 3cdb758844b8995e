/**
 * `deno task export --run RUN --out DIR --track strict|strict-small`: lay a run's word checkpoints out as
 * the revisions the BabyLM 2026 pipeline evaluates, one Hugging Face model folder each:
 *
 *   DIR/main/         the final model (the last round's checkpoint)
 *   DIR/chck_1M/ ... DIR/chck_10M/, DIR/chck_20M/ ... DIR/chck_100M/ (Strict also chck_200M ... chck_1000M)
 *   DIR/manifest.json which run checkpoint each revision is, with its words seen and step
 *
 * Each folder becomes a branch of the model's Hugging Face repository (README: "Submitting"). Files are
 * hard links to the run's checkpoint files when the file system allows (checkpoints are written once,
 * never changed in place), copies otherwise. Nothing is written unless every revision is present: a
 * missing one is named with the run checkpoint it needs. DIR is built under a temporary sibling name and
 * renamed at the end, so a failed export leaves nothing half-written.
 * @module
 */
import { parseCommand, required, runMain, UsageError } from "./common.ts";
import { checkpointName } from "../interaction/loop.ts";
import { loadRunConfig } from "./run_storage.ts";
import { revisionName, type Track, TRACK_NAMES, trackRules } from "../interaction/tracks.ts";

const SPEC = {
  run: { type: "string", help: "the run directory (written by deno task train)" },
  out: { type: "string", help: "where the revision folders go (must not exist, or be empty)" },
  track: {
    type: "string",
    help: `${TRACK_NAMES.join(" or ")} (default: the run's preset, when it is one of them)`,
  },
} as const;

/** The files a revision must hold for transformers and the pipeline to load it. */
const MODEL_FILES = ["config.json", "model.safetensors", "tokenizer.json"];

/** One exported revision. */
export interface ExportedRevision {
  revision: string;
  /** The run checkpoint it is, under `RUN/checkpoints/`. */
  checkpoint: string;
  /** Words seen by the student when it was written, and the optimisation step (its training_state.json). */
  wordsSeen?: number;
  step?: number;
}

/** What {@link exportRun} wrote (also DIR/manifest.json). */
export interface ExportManifest {
  track: Track;
  run: string;
  revisions: ExportedRevision[];
}

/** Names in `dir`, or undefined when it does not exist. */
async function listDir(dir: string): Promise<string[] | undefined> {
  try {
    const names: string[] = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    return names;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    if (e instanceof Deno.errors.NotADirectory) throw new UsageError(`${dir} is not a directory`);
    throw e;
  }
}

/** Words seen and step of a checkpoint (its training_state.json), when recorded. */
async function checkpointInfo(dir: string): Promise<{ wordsSeen?: number; step?: number }> {
  try {
    const s = JSON.parse(await Deno.readTextFile(`${dir}/training_state.json`));
    return { wordsSeen: s.wordsSeen, step: s.step };
  } catch {
    return {};
  }
}

/** Hard-link `from` to `to`, or copy it when linking is not possible (another file system). */
async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await Deno.link(from, to);
  } catch {
    await Deno.copyFile(from, to);
  }
}

/**
 * Export the revisions of `track` from `run` into `out`; throws a {@link UsageError} naming every
 * missing checkpoint before writing anything.
 */
export async function exportRun(run: string, out: string, trackName?: string): Promise<ExportManifest> {
  run = run.replace(/\/+$/, "");
  out = out.replace(/\/+$/, "");
  const config = await loadRunConfig(run, "--run");
  const name = trackName ?? config.preset;
  if (name === undefined || !(TRACK_NAMES as readonly string[]).includes(name)) {
    throw new UsageError(
      trackName === undefined
        ? `--track is needed: the run's preset ${JSON.stringify(config.preset)} is not a track (${
          TRACK_NAMES.join(", ")
        })`
        : `--track must be one of ${TRACK_NAMES.join(", ")}, got ${JSON.stringify(trackName)}`,
    );
  }
  const track = name as Track;
  const wanted: Array<{ revision: string; checkpoint: string }> = [
    { revision: "main", checkpoint: `round${config.numRounds}_po` },
    ...trackRules(track).revisionWords.map((w) => ({
      revision: revisionName(w),
      checkpoint: checkpointName(w),
    })),
  ];
  const missing: string[] = [];
  for (const w of wanted) {
    const dir = `${run}/checkpoints/${w.checkpoint}`;
    const files = await listDir(dir);
    const absent = MODEL_FILES.filter((f) => !files?.includes(f));
    if (absent.length > 0) {
      missing.push(
        `${w.revision} needs ${dir}` + (files === undefined ? "" : ` (it lacks ${absent.join(", ")})`),
      );
    }
  }
  if (missing.length > 0) {
    throw new UsageError(
      `cannot export ${run} for ${track}: ${missing.length} of ${wanted.length} revisions missing:\n  ` +
        missing.join("\n  ") +
        `\n(${track} evaluates a checkpoint at each of these words seen, and the final model as main; ` +
        "train further, with checkpointWords covering them, or resume the run)",
    );
  }
  const existing = await listDir(out);
  if (existing !== undefined && existing.length > 0) {
    throw new UsageError(
      `--out ${out} is not empty (${existing.slice(0, 3).join(", ")}): choose another folder`,
    );
  }
  const tmp = `${out}.partial-${crypto.randomUUID().slice(0, 8)}`;
  const manifest: ExportManifest = { track, run, revisions: [] };
  try {
    await Deno.mkdir(tmp, { recursive: true });
    for (const w of wanted) {
      const src = `${run}/checkpoints/${w.checkpoint}`;
      await Deno.mkdir(`${tmp}/${w.revision}`);
      for await (const e of Deno.readDir(src)) {
        if (e.isFile) await linkOrCopy(`${src}/${e.name}`, `${tmp}/${w.revision}/${e.name}`);
      }
      manifest.revisions.push({ ...w, ...await checkpointInfo(src) });
    }
    await Deno.writeTextFile(`${tmp}/manifest.json`, JSON.stringify(manifest, null, 2) + "\n");
    if (existing !== undefined) await Deno.remove(out);
    await Deno.rename(tmp, out);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  return manifest;
}

/** Entry point (exported for tests). */
export async function main(args: string[]): Promise<void> {
  const o = parseCommand(
    "export",
    "Lay a run's word checkpoints out as the BabyLM 2026 revisions (chck_1M ... and main), ready to push.",
    SPEC,
    args,
  );
  if (o === undefined) return;
  const out = required(o.out, "out");
  const m = await exportRun(required(o.run, "run"), out, o.track as string | undefined);
  console.log(
    `wrote ${m.revisions.length} revisions for ${m.track} to ${out} (main and ${
      m.revisions.slice(1).map((r) => r.revision).join(", ")
    }); push each folder as a branch of the same name (README: Submitting)`,
  );
}

if (import.meta.main) await runMain(() => main(Deno.args));
