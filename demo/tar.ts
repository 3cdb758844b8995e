/**
 * A POSIX ustar archive writer, so "Download run" saves a run folder as one file that
 * `tar xf FILE -C runs/` unpacks into what `deno task train` writes (and Inspect lists).
 * Pure: files in, bytes out.
 * @module
 */

const BLOCK = 512;

function writeString(buf: Uint8Array, at: number, length: number, s: string): void {
  const bytes = new TextEncoder().encode(s);
  if (bytes.length > length) throw new Error(`tar: "${s}" does not fit in ${length} bytes`);
  buf.set(bytes, at);
}

/** An octal field of `length` bytes: digits, zero-padded, then NUL. */
function writeOctal(buf: Uint8Array, at: number, length: number, v: number): void {
  writeString(buf, at, length, v.toString(8).padStart(length - 1, "0"));
}

/** Split a path into ustar's prefix (155 bytes) and name (100 bytes) fields, at a `/`. */
function splitName(path: string): [string, string] {
  const size = (s: string) => new TextEncoder().encode(s).length;
  if (size(path) <= 100) return ["", path];
  for (let i = path.indexOf("/"); i > 0; i = path.indexOf("/", i + 1)) {
    if (size(path.slice(0, i)) <= 155 && size(path.slice(i + 1)) <= 100) {
      return [path.slice(0, i), path.slice(i + 1)];
    }
  }
  throw new Error(`tar: the path ${path} is too long for a ustar header`);
}

function header(path: string, size: number, mtime: number): Uint8Array {
  const h = new Uint8Array(BLOCK);
  const [prefix, name] = splitName(path);
  writeString(h, 0, 100, name);
  writeOctal(h, 100, 8, 0o644);
  writeOctal(h, 108, 8, 0);
  writeOctal(h, 116, 8, 0);
  writeOctal(h, 124, 12, size);
  writeOctal(h, 136, 12, Math.floor(mtime / 1000));
  h.fill(0x20, 148, 156); // the checksum is computed with its own field as spaces
  h[156] = 0x30; // "0": a regular file
  writeString(h, 257, 6, "ustar");
  writeString(h, 263, 2, "00");
  writeString(h, 345, 155, prefix);
  const sum = h.reduce((a, b) => a + b, 0);
  writeString(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

/**
 * A tar archive of `files` (path relative to the archive root -> text or bytes), in the given order,
 * every file dated `mtime` (ms since 1970).
 */
export function tarArchive(
  files: ReadonlyMap<string, string | Uint8Array>,
  mtime = Date.now(),
): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [];
  for (const [path, content] of files) {
    if (path === "" || path.startsWith("/") || path.split("/").includes("..")) {
      throw new Error(`tar: ${JSON.stringify(path)} is not a relative path inside the archive`);
    }
    const data = typeof content === "string" ? new TextEncoder().encode(content) : content;
    parts.push(header(path, data.length, mtime), data);
    const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
    if (pad) parts.push(new Uint8Array(pad));
  }
  parts.push(new Uint8Array(2 * BLOCK));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
