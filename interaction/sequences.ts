/**
 * Training batches as the baseline's collate function builds them, flattened for the GPU loss kernels.
 *
 * - winning = [BOS] + context + teacher tokens + [EOS], the teacher tokens cut to the length of the
 *   student's continuation; losing = [BOS] + context + student tokens + [EOS].
 * - Rows are padded with the pad id (EOS for GPT-2) to the longest sequence: inputs = tokens[:-1],
 *   targets = tokens[1:].
 * - LM mask = (input != pad id). With GPT-2, BOS == EOS == pad, so the first position (input BOS) is
 *   masked too, exactly as in the baseline.
 * - Completion mask = LM mask with the first len(context) input positions cleared: it covers the
 *   predictions of the completion tokens and of the final EOS.
 *
 * Layout: `[nSeq * T]` row-major, winning rows first (0..P-1), then losing rows (P..2P-1), so pair i is
 * rows (i, P + i).
 * @module
 */

/** The special ids sequences are built with. */
export interface SpecialIds {
  bos: number;
  eos: number;
  /** Padding id; default `eos` (GPT-2 and the baseline pad with EOS). */
  pad?: number;
}

/** One student/teacher exchange in token ids. */
export interface PreferenceItem {
  context: ArrayLike<number>;
  /** The teacher's tokens (cut here to the student's length). */
  teacher: ArrayLike<number>;
  /** The student's continuation. */
  student: ArrayLike<number>;
}

/** Flat batch arrays, `[nSeq * T]` each. */
export interface FlatBatch {
  nSeq: number;
  /** Positions per row (sequence length - 1 of the longest row, or the requested T). */
  T: number;
  inputs: Uint32Array;
  targets: Uint32Array;
  /** 1 where the input is not padding. */
  lmMask: Float32Array;
  /** Token count of every row before padding. */
  lengths: number[];
}

/** A preference batch: winning rows then losing rows. */
export interface PreferenceBatch extends FlatBatch {
  nPairs: number;
  /** 1 on the completion predictions (LM mask without the first len(context) positions). */
  completionMask: Float32Array;
}

/** [BOS] + context + teacher[:len(student)] + [EOS]. */
export function winningTokens(item: PreferenceItem, ids: SpecialIds): number[] {
  const cut = Math.min(item.teacher.length, item.student.length);
  return [ids.bos, ...Array.from(item.context), ...Array.from(item.teacher).slice(0, cut), ids.eos];
}

/** [BOS] + context + student + [EOS]. */
export function losingTokens(item: PreferenceItem, ids: SpecialIds): number[] {
  return [ids.bos, ...Array.from(item.context), ...Array.from(item.student), ids.eos];
}

/** Options of the batch builders. */
export interface BatchOptions {
  /** Pad every row to this many positions (a fixed GPU plan); default: the longest row's. */
  T?: number;
  /**
   * `not-pad` (default, the baseline): mask = input != pad id. `length`: mask = position < length - 1,
   * which keeps the first BOS position and tokens equal to the pad id inside the text (for scoring).
   */
  mask?: "not-pad" | "length";
}

/** Pad token rows into flat inputs/targets/mask. Throws when a row is too short or longer than `T`. */
export function buildLmBatch(
  rows: readonly ArrayLike<number>[],
  ids: SpecialIds,
  options: BatchOptions = {},
): FlatBatch {
  const pad = ids.pad ?? ids.eos;
  const longest = rows.reduce((m, r) => Math.max(m, r.length - 1), 0);
  const T = options.T ?? longest;
  rows.forEach((r, i) => {
    if (r.length < 2) {
      throw new Error(`batch row ${i} has ${r.length} tokens; a row needs at least 2 (input and target)`);
    }
  });
  if (!Number.isInteger(T) || T < longest) {
    throw new Error(`batch: T must be an integer >= the longest row's ${longest} positions, got ${T}`);
  }
  const n = rows.length;
  const inputs = new Uint32Array(n * T).fill(pad);
  const targets = new Uint32Array(n * T).fill(pad);
  const lmMask = new Float32Array(n * T);
  rows.forEach((row, r) => {
    const o = r * T;
    for (let t = 0; t < row.length - 1; t++) {
      inputs[o + t] = row[t];
      targets[o + t] = row[t + 1];
    }
    for (let t = 0; t < T; t++) {
      lmMask[o + t] = options.mask === "length"
        ? (t < row.length - 1 ? 1 : 0)
        : (inputs[o + t] !== pad ? 1 : 0);
    }
  });
  return { nSeq: n, T, inputs, targets, lmMask, lengths: rows.map((r) => r.length) };
}

/** A preference pair in token ids: the chosen and the rejected sequence are prompt + completion. */
export interface TokenPair {
  prompt: ArrayLike<number>;
  chosen: ArrayLike<number>;
  rejected: ArrayLike<number>;
}

/**
 * P chosen rows (prompt + chosen) then P rejected rows (prompt + rejected), padded to a common T, with
 * the LM mask and the completion mask: the LM mask with the first len(prompt) - 1 input positions
 * cleared, so it covers the predictions of the completion tokens.
 */
export function buildPairBatch(
  pairs: readonly TokenPair[],
  ids: SpecialIds,
  options: BatchOptions = {},
): PreferenceBatch {
  const rows = [
    ...pairs.map((p) => [...Array.from(p.prompt), ...Array.from(p.chosen)]),
    ...pairs.map((p) => [...Array.from(p.prompt), ...Array.from(p.rejected)]),
  ];
  const flat = buildLmBatch(rows, ids, options);
  const completionMask = flat.lmMask.slice();
  const P = pairs.length;
  for (let r = 0; r < 2 * P; r++) {
    const c = Math.max(0, pairs[r % P].prompt.length - 1);
    completionMask.fill(0, r * flat.T, r * flat.T + Math.min(c, flat.T));
  }
  return { ...flat, nPairs: P, completionMask };
}

/**
 * The batch of the preference phase: P winning rows then P losing rows ({@link winningTokens},
 * {@link losingTokens}: the prompt is [BOS] + context), padded to a common T, with the LM and completion
 * masks.
 */
export function buildPreferenceBatch(
  items: readonly PreferenceItem[],
  ids: SpecialIds,
  options: BatchOptions = {},
): PreferenceBatch {
  return buildPairBatch(
    items.map((it) => {
      const prompt = [ids.bos, ...Array.from(it.context)];
      return {
        prompt,
        chosen: winningTokens(it, ids).slice(prompt.length),
        rejected: losingTokens(it, ids).slice(prompt.length),
      };
    }),
    ids,
    options,
  );
}

/** Whitespace-separated words of a text (Python's `len(text.split())`), for the words-seen budget. */
export { countWords } from "./grammar.ts";
