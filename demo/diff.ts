/**
 * Word-level differences between the student's continuation and the teacher's correction: a longest
 * common subsequence over words, so the page can mark the words only one side has.
 * Pure (strings in, pieces out); the page turns pieces into text nodes.
 * @module
 */

/** A run of text and whether the other side has it too (part of the common subsequence). */
export interface DiffPiece {
  text: string;
  same: boolean;
}

/** Both sides of a comparison, each as pieces that concatenate back to the input exactly. */
export interface WordDiff {
  a: DiffPiece[];
  b: DiffPiece[];
  /** Number of words in the common subsequence. */
  common: number;
}

/** Beyond this many DP cells (words(a) * words(b)) the diff gives up and marks everything as changed. */
export const MAX_DIFF_CELLS = 4_000_000;

/**
 * Split text into words, each with the whitespace that follows it, so joining the parts gives the text
 * back. Leading whitespace becomes a part of its own.
 */
export function splitWords(text: string): string[] {
  const parts = text.match(/\s+|\S+\s*/g) ?? [];
  return parts;
}

/**
 * The word diff of `a` (student) and `b` (teacher). Words are compared without their trailing
 * whitespace. Standard LCS table: L[i][j] = LCS length of a[i..] and b[j..];
 * L[i][j] = a[i] == b[j] ? 1 + L[i+1][j+1] : max(L[i+1][j], L[i][j+1]), then one walk from (0, 0).
 */
export function wordDiff(a: string, b: string): WordDiff {
  const wa = splitWords(a), wb = splitWords(b);
  const ka = wa.map((w) => w.trim()), kb = wb.map((w) => w.trim());
  const n = wa.length, m = wb.length;
  const sameA = new Array<boolean>(n).fill(false);
  const sameB = new Array<boolean>(m).fill(false);
  let common = 0;
  if (n * m <= MAX_DIFF_CELLS) {
    // Row-major (n+1) x (m+1) table of LCS lengths (Uint32: a side may exceed 65535 words under the cap).
    const w = m + 1;
    const L = new Uint32Array((n + 1) * w);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        L[i * w + j] = ka[i] === kb[j] && ka[i] !== ""
          ? 1 + L[(i + 1) * w + j + 1]
          : Math.max(L[(i + 1) * w + j], L[i * w + j + 1]);
      }
    }
    let i = 0, j = 0;
    while (i < n && j < m) {
      if (ka[i] === kb[j] && ka[i] !== "") {
        sameA[i++] = true;
        sameB[j++] = true;
        common++;
      } else if (L[(i + 1) * w + j] >= L[i * w + j + 1]) i++;
      else j++;
    }
  }
  // Whitespace-only parts (leading spaces) count as unchanged: they are not words.
  return {
    a: merge(wa, wa.map((p, i) => sameA[i] || p.trim() === "")),
    b: merge(wb, wb.map((p, i) => sameB[i] || p.trim() === "")),
    common,
  };
}

/** Join neighbouring parts with the same flag into one piece (fewer DOM nodes). */
function merge(parts: string[], same: boolean[]): DiffPiece[] {
  const out: DiffPiece[] = [];
  parts.forEach((text, i) => {
    const last = out[out.length - 1];
    if (last && last.same === same[i]) last.text += text;
    else out.push({ text, same: same[i] });
  });
  return out;
}
