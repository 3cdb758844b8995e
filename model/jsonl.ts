/**
 * JSON lines (one JSON value per line), the format of every record file of the project: run logs,
 * interactions, training and scoring inputs, evaluation data. Browser-safe: text in, values out.
 * @module
 */

/** One non-blank line of a JSON-lines text: its 1-based line number, its text and its parsed value. */
export interface JsonLine<T = unknown> {
  line: number;
  text: string;
  value: T;
}

/** Options of {@link parseJsonLines}. */
export interface ParseJsonLinesOptions {
  /**
   * Called for a line that is not valid JSON, which is then skipped (a page reading a run that is being
   * written). Without it, such a line is an error naming `file:line`.
   */
  onBadLine?: (line: number, error: Error) => void;
}

/**
 * Parse JSON lines: blank lines are skipped, a trailing "\r" (Windows line ends) is ignored, and a line
 * that is not valid JSON is an error `file:line: not valid JSON (...)` unless `onBadLine` takes it.
 */
export function parseJsonLines<T = unknown>(
  text: string,
  file: string,
  options: ParseJsonLinesOptions = {},
): JsonLine<T>[] {
  const out: JsonLine<T>[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.trim() === "") return;
    let value: T;
    try {
      value = JSON.parse(line) as T;
    } catch (e) {
      if (options.onBadLine) return options.onBadLine(i + 1, e as Error);
      throw new Error(`${file}:${i + 1}: not valid JSON (${(e as Error).message})`);
    }
    out.push({ line: i + 1, text: line, value });
  });
  return out;
}
