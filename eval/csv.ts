/**
 * A small RFC 4180 CSV reader: comma-separated, fields may be quoted with `"`, a quote inside a quoted
 * field is doubled, quoted fields may hold commas and newlines; CRLF and LF line ends.
 * @module
 */

/** One record with the 1-based line it starts on. */
export interface CsvRecord {
  fields: string[];
  line: number;
}

/** Parse CSV text into records; an unterminated quote or text after a closing quote names the line. */
export function parseCsv(text: string, file: string): CsvRecord[] {
  const out: CsvRecord[] = [];
  let fields: string[] = [];
  let field = "";
  let line = 1, start = 1;
  let i = 0;
  const n = text.length;
  let atFieldStart = true;
  while (i < n) {
    const c = text[i];
    if (atFieldStart && c === '"') {
      const quoteLine = line;
      i++;
      for (;;) {
        if (i >= n) {
          throw new Error(`${file}:${quoteLine}: expected a closing quote, found the end of the file`);
        }
        const d = text[i];
        if (d === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        if (d === "\n") line++;
        field += d;
        i++;
      }
      const next = text[i];
      if (i < n && next !== "," && next !== "\n" && next !== "\r") {
        throw new Error(
          `${file}:${line}: expected a comma or line end after a closing quote, found ${
            JSON.stringify(next)
          }`,
        );
      }
      atFieldStart = false;
      continue;
    }
    if (c === ",") {
      fields.push(field);
      field = "";
      atFieldStart = true;
      i++;
    } else if (c === "\n" || c === "\r") {
      fields.push(field);
      out.push({ fields, line: start });
      fields = [];
      field = "";
      atFieldStart = true;
      i += c === "\r" && text[i + 1] === "\n" ? 2 : 1;
      line++;
      start = line;
    } else {
      field += c;
      atFieldStart = false;
      i++;
    }
  }
  if (field !== "" || fields.length > 0 || !atFieldStart) {
    fields.push(field);
    out.push({ fields, line: start });
  }
  return out;
}
