/**
 * Counting words the way the BabyLM tracks count them.
 *
 * - **Whitespace words** (`whitespace`): the Strict and Strict-Small tracks' unit, "100M words" of
 *   English: the number of Python `str.split()` pieces. Python's whitespace set is used, not
 *   JavaScript's `\s` (they differ on U+001C-U+001F, U+0085 and U+FEFF).
 * - **English-equivalent words** (`bytes`): the multilingual track (English, Dutch, Chinese). BabyBabelLM
 *   sizes each language's tiers in bytes of UTF-8 text: the 100M tier is 543 MB of English and
 *   543 MB times the language's byte premium elsewhere (Dutch 571.06 MB, Chinese 537.23 MB;
 *   babybabellm `metadata_merged.csv`). So a text of B bytes in language L counts as
 *   B / (5.43 * premium(L)) English-equivalent words. This is the count for Chinese, written without
 *   spaces, where whitespace words mean nothing (a whole sentence is one "word").
 * @module
 */

/** Languages of the multilingual track, by ISO 639-3 code. */
export type Language = "eng" | "nld" | "zho";

/** The languages' names. */
export const LANGUAGES: readonly Language[] = ["eng", "nld", "zho"];

/**
 * Byte premium of each language: bytes of its text per byte of English text with the same content.
 * Values of BabyBabelLM's per-language table (`Byte-premium factor`), the ones its tier sizes are
 * computed with. (Arnett's `byte_coefs_20240233.tsv` gives nld_latn 1.0516057 and, for Chinese,
 * zho_hant 0.9893825, the table's value, and zho_hans 0.9359664: simplified script.)
 */
export const BYTE_PREMIUM: Record<Language, number> = { eng: 1, nld: 1.0516739, zho: 0.9893825 };

/** UTF-8 bytes per English word in BabyBabelLM's tiers: the 100M-word tier is 543 MB (10^6 bytes) of English. */
export const ENGLISH_BYTES_PER_WORD = 5.43;

/** How words are counted: whitespace words, or English-equivalent words from UTF-8 bytes in `language`. */
export type WordMeasure = { kind: "whitespace" } | { kind: "bytes"; language: Language };

/** Python's `str.isspace()` characters (what `str.split()` splits on). */
const PY_SPACE =
  "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const WORD = new RegExp(`[^${PY_SPACE}]+`, "gu");

/** Whitespace-separated words of a text, as Python's `len(text.split())`. */
export function whitespaceWords(text: string): number {
  let n = 0;
  WORD.lastIndex = 0;
  while (WORD.exec(text) !== null) n++;
  return n;
}

/** UTF-8 bytes of a text (lone surrogates count 3, as the encoder's U+FFFD). */
export function utf8Bytes(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

/** English-equivalent words of `bytes` UTF-8 bytes of `language` text. */
export function englishEquivalentWords(bytes: number, language: Language): number {
  return bytes / (ENGLISH_BYTES_PER_WORD * BYTE_PREMIUM[language]);
}

/** The words of `text` by `measure` (fractional for `bytes`). */
export function countWords(text: string, measure: WordMeasure = { kind: "whitespace" }): number {
  return measure.kind === "whitespace"
    ? whitespaceWords(text)
    : englishEquivalentWords(utf8Bytes(text), measure.language);
}

/** A measure from its config spelling, `whitespace` or `bytes:LANG`; `where` names the setting. */
export function parseWordMeasure(spec: string, where = "wordMeasure"): WordMeasure {
  if (spec === "whitespace") return { kind: "whitespace" };
  const m = /^bytes:(.+)$/.exec(spec);
  if (m && (LANGUAGES as readonly string[]).includes(m[1])) {
    return { kind: "bytes", language: m[1] as Language };
  }
  throw new Error(
    `${where} must be "whitespace" or "bytes:LANG" with LANG one of ${LANGUAGES.join(", ")}, got ${
      JSON.stringify(spec)
    }`,
  );
}
