/**
 * Safetensors read and write in pure TypeScript over `Uint8Array` (no Deno APIs), so the browser can use it.
 *
 * Format: an unsigned 64-bit little-endian header length N, then N bytes of JSON mapping each tensor name
 * to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the data section that follows the
 * header) plus an optional `__metadata__` map of strings, then the raw little-endian tensor data.
 * @module
 */

/** Element types this reader understands. */
export type Dtype = "F32" | "F16" | "BF16" | "I32" | "I64" | "U8";

/** Bytes per element of each stored dtype. */
const DTYPE_BYTES: Record<Dtype, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8, U8: 1 };

/** Typed arrays a tensor decodes to: floats to f32, integers to i32 (I64 only when it fits), U8 as is. */
export type TensorData = Float32Array | Int32Array | Uint8Array;

/** One decoded tensor. `dtype` is the stored type; `data` is already converted. */
export interface Tensor {
  dtype: Dtype;
  shape: number[];
  data: TensorData;
}

/** A header entry: where a tensor's bytes lie in the file (absolute byte offsets). */
export interface TensorEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Absolute offset of the first byte in the file. */
  begin: number;
  /** Absolute offset one past the last byte. */
  end: number;
}

/** The parsed header: tensors in file order and the `__metadata__` strings. */
export interface SafetensorsHeader {
  entries: TensorEntry[];
  metadata: Record<string, string>;
}

/** A tensor to write: F32 for a Float32Array, I32 for an Int32Array. */
export interface TensorToWrite {
  shape: readonly number[];
  data: Float32Array | Int32Array;
}

/** Headers above this are refused as corrupt (the reference implementation's limit is 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  // Typed-array views below reinterpret the file's little-endian bytes in host order.
  throw new Error("safetensors.ts: this host is big-endian; only little-endian hosts are supported");
}

function isDtype(s: unknown): s is Dtype {
  return typeof s === "string" && Object.hasOwn(DTYPE_BYTES, s);
}

/**
 * Parse and validate the header of a safetensors file without decoding any tensor. Throws an error naming
 * `where` and the tensor for: a file shorter than 8 bytes, a header length beyond the file, bad JSON, an
 * unknown dtype, a bad shape, data_offsets out of range or overlapping another tensor, and a byte range
 * whose size does not match the shape.
 */
export function parseSafetensorsHeader(bytes: Uint8Array, where = "safetensors"): SafetensorsHeader {
  if (bytes.length < 8) {
    throw new Error(`${where}: truncated file: ${bytes.length} bytes, expected at least 8 (header length)`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen > MAX_HEADER_BYTES) {
    throw new Error(`${where}: header length ${headerLen} is over the ${MAX_HEADER_BYTES}-byte limit`);
  }
  if (8 + headerLen > bytes.length) {
    throw new Error(
      `${where}: header length ${headerLen} runs beyond the end of the file (${bytes.length} bytes): ` +
        `truncated or not a safetensors file`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)));
  } catch (e) {
    throw new Error(`${where}: header is not valid JSON: ${(e as Error).message}`);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new Error(`${where}: header must be a JSON object, found ${Array.isArray(json) ? "array" : json}`);
  }
  const dataStart = 8 + headerLen;
  const dataLen = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const entries: TensorEntry[] = [];
  for (const [name, raw] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
        throw new Error(`${where}: __metadata__ must be an object of strings`);
      }
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== "string") {
          throw new Error(`${where}: __metadata__.${k} must be a string, found ${v}`);
        }
        metadata[k] = v;
      }
      continue;
    }
    const at = `${where}: tensor "${name}"`;
    if (raw === null || typeof raw !== "object") throw new Error(`${at}: entry must be an object`);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (!isDtype(dtype)) {
      throw new Error(
        `${at}: unknown dtype ${JSON.stringify(dtype)}, expected one of ${Object.keys(DTYPE_BYTES)}`,
      );
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new Error(
        `${at}: shape must be an array of non-negative integers, found ${JSON.stringify(shape)}`,
      );
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
    ) {
      throw new Error(`${at}: data_offsets must be [begin, end] integers, found ${JSON.stringify(offsets)}`);
    }
    const [b, e] = offsets as number[];
    if (b > e || e > dataLen) {
      throw new Error(
        `${at}: data_offsets [${b}, ${e}] out of range of the ${dataLen}-byte data section` +
          (e > dataLen ? " (file truncated?)" : ""),
      );
    }
    const expected = shape.reduce((a: number, d: number) => a * d, 1) * DTYPE_BYTES[dtype];
    if (e - b !== expected) {
      throw new Error(
        `${at}: shape [${shape}] of ${dtype} needs ${expected} bytes, but data_offsets [${b}, ${e}] ` +
          `hold ${e - b}`,
      );
    }
    entries.push({ name, dtype, shape: shape as number[], begin: dataStart + b, end: dataStart + e });
  }
  const sorted = [...entries].sort((x, y) => x.begin - y.begin || x.end - y.end);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1], cur = sorted[i];
    if (cur.begin < prev.end) {
      throw new Error(
        `${where}: tensor "${cur.name}" (bytes ${cur.begin - dataStart}..${cur.end - dataStart}) overlaps ` +
          `tensor "${prev.name}" (bytes ${prev.begin - dataStart}..${prev.end - dataStart})`,
      );
    }
  }
  return { entries, metadata };
}

/** f16 bits to a number: sign, 5-bit exponent (bias 15), 10-bit mantissa; subnormals and inf/NaN kept. */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Decode one tensor's bytes (from `parseSafetensorsHeader`) to its typed array; `where` names the file. */
export function decodeTensor(bytes: Uint8Array, entry: TensorEntry, where = "safetensors"): TensorData {
  // slice() copies into a fresh, aligned buffer, so typed views work whatever the offset in the file.
  const buf = bytes.slice(entry.begin, entry.end).buffer;
  switch (entry.dtype) {
    case "F32":
      return new Float32Array(buf);
    case "I32":
      return new Int32Array(buf);
    case "U8":
      return new Uint8Array(buf);
    case "BF16": {
      // bf16 is the top half of an f32.
      const src = new Uint16Array(buf);
      const out = new Uint32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
      return new Float32Array(out.buffer);
    }
    case "F16": {
      const src = new Uint16Array(buf);
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = halfToFloat(src[i]);
      return out;
    }
    case "I64": {
      // Little-endian pairs (lo, hi): the value fits in i32 exactly when hi is lo's sign extension.
      const words = new Int32Array(buf);
      const out = new Int32Array(words.length / 2);
      for (let i = 0; i < out.length; i++) {
        const lo = words[2 * i], hi = words[2 * i + 1];
        if (hi !== lo >> 31) {
          const value = (BigInt(hi) << 32n) | BigInt(lo >>> 0);
          throw new Error(
            `${where}: tensor "${entry.name}": I64 element ${i} is ${value}, outside the int32 range`,
          );
        }
        out[i] = lo;
      }
      return out;
    }
  }
}

/** Parse a whole safetensors file: every tensor decoded (see `decodeTensor`), keyed by name, in file order. */
export function parseSafetensors(
  bytes: Uint8Array,
  where = "safetensors",
): { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  const { entries, metadata } = parseSafetensorsHeader(bytes, where);
  const tensors = new Map<string, Tensor>();
  for (const e of entries) {
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data: decodeTensor(bytes, e, where) });
  }
  return { tensors, metadata };
}

/**
 * Serialize tensors (in iteration order) as safetensors: F32 for Float32Array, I32 for Int32Array, with
 * `__metadata__` (default `{format: "pt"}`, which transformers expects). The header is padded with spaces
 * to a multiple of 8 bytes so that the data section starts aligned.
 */
export function serializeSafetensors(
  tensors: Iterable<[string, TensorToWrite]>,
  metadata: Record<string, string> = { format: "pt" },
): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  const parts: Array<Float32Array | Int32Array> = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    if (name === "__metadata__") throw new Error(`safetensors: "__metadata__" cannot be a tensor name`);
    if (Object.hasOwn(header, name)) throw new Error(`safetensors: tensor "${name}" given twice`);
    const n = t.shape.reduce((a, d) => a * d, 1);
    if (n !== t.data.length) {
      throw new Error(
        `safetensors: tensor "${name}": shape [${t.shape}] has ${n} elements, data has ${t.data.length}`,
      );
    }
    const dtype = t.data instanceof Float32Array ? "F32" : "I32";
    header[name] = { dtype, shape: [...t.shape], data_offsets: [offset, offset + t.data.byteLength] };
    parts.push(t.data);
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  // Pad the header (in bytes, so measure the UTF-8 encoding) to a multiple of 8.
  const raw = new TextEncoder().encode(json);
  json += " ".repeat((8 - (raw.length % 8)) % 8);
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const p of parts) {
    out.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), at);
    at += p.byteLength;
  }
  return out;
}
