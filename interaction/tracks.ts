/**
 * The BabyLM 2026 tracks a teacher-feedback run must stay inside, as data: Strict (100M words of training
 * data) and Strict-Small (10M), at most 10 epochs over the training data, and the checkpoint revisions
 * the evaluation pipeline reads (`chck_1M` ... `chck_10M`, `chck_20M` ... `chck_100M`, and for Strict
 * `chck_200M` ... `chck_1000M`; babylm-eval `eval_zero_shot_fast.sh`).
 * @module
 */

/** A 2026 track's name. */
export type Track = "strict" | "strict-small";

/** The tracks' names. */
export const TRACK_NAMES: readonly Track[] = ["strict", "strict-small"];

/** What a track allows and what it evaluates. */
export interface TrackRules {
  /** Words of training data the entry may use. */
  wordBudget: number;
  /** Epochs over the training data the entry may not exceed ("may not conduct more than 10 epochs"). */
  maxEpochs: number;
  /** Words seen (repetitions counted) at which the pipeline evaluates a checkpoint revision, ascending. */
  revisionWords: number[];
}

/** `[1..9] * unit`, the pipeline's steps within one decade. */
const decade = (unit: number) => Array.from({ length: 9 }, (_, i) => (i + 1) * unit);

/** The two tracks. */
export const TRACKS: Record<Track, TrackRules> = {
  strict: {
    wordBudget: 100e6,
    maxEpochs: 10,
    revisionWords: [...decade(1e6), ...decade(1e7), ...decade(1e8), 1e9],
  },
  "strict-small": { wordBudget: 10e6, maxEpochs: 10, revisionWords: [...decade(1e6), ...decade(1e7), 1e8] },
};

/** The pipeline's revision name for a word count: `chck_1M`, `chck_20M`, `chck_1000M`. */
export function revisionName(words: number): string {
  return `chck_${Math.round(words / 1e6)}M`;
}

/** A track by name, or an error listing the names; `where` names the setting. */
export function trackRules(name: string, where = "track"): TrackRules {
  if (!(TRACK_NAMES as readonly string[]).includes(name)) {
    throw new Error(`${where} must be one of ${TRACK_NAMES.join(", ")}, got ${JSON.stringify(name)}`);
  }
  return TRACKS[name as Track];
}
