/**
 * A ZIP reader with the traditional PKWARE ("ZipCrypto") decryption, so EWoK can be read straight
 * from its password-protected archive without ever writing the plain files to disk.
 *
 * Layout (APPNOTE.TXT): the end-of-central-directory record at the end of the file points at the
 * central directory, whose entries point at the local headers; each entry's data follows its local
 * header. Encrypted entries (flag bit 0) start with a 12-byte header; methods 0 (stored) and
 * 8 (deflate, inflated with `DecompressionStream("deflate-raw")`) are supported. ZIP64, AES and
 * "strong encryption" are not (an error says so).
 * @module
 */

/** Default password of the BabyLM 2025 EWoK archives. */
export const EWOK_PASSWORD = "BabyLM2025";

/** One file in the central directory. */
export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflate. */
  method: number;
  encrypted: boolean;
  /** General-purpose flags (bit 0: encrypted, bit 3: sizes in a data descriptor). */
  flags: number;
  crc32: number;
  compressedSize: number;
  size: number;
  /** DOS modification time; its high byte is the password check byte when flag bit 3 is set. */
  modTime: number;
  localOffset: number;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    // Reflected CRC-32, polynomial 0xEDB88320.
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** One byte of the raw CRC-32 register update, as the ZipCrypto key schedule uses it (no inversion). */
function crcByte(crc: number, b: number): number {
  return (CRC_TABLE[(crc ^ b) & 0xff] ^ (crc >>> 8)) >>> 0;
}

/** CRC-32 (ISO-HDLC, as in ZIP and gzip) of `data`, continuing from `crc`. */
export function crc32(data: Uint8Array, crc = 0): number {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) c = crcByte(c, data[i]);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * The traditional PKWARE stream cipher: three 32-bit keys, initialised from the password and updated
 * with every plaintext byte; the keystream byte is derived from key 2.
 */
class ZipCrypto {
  #k0 = 0x12345678;
  #k1 = 0x23456789;
  #k2 = 0x34567890;
  constructor(password: Uint8Array) {
    for (const b of password) this.#update(b);
  }
  #update(b: number): void {
    this.#k0 = crcByte(this.#k0, b);
    // k1 = (k1 + low byte of k0) * 134775813 + 1, modulo 2^32.
    this.#k1 = (Math.imul((this.#k1 + (this.#k0 & 0xff)) >>> 0, 134775813) + 1) >>> 0;
    this.#k2 = crcByte(this.#k2, this.#k1 >>> 24);
  }
  /** Decrypt `data` in place. */
  decrypt(data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const t = (this.#k2 | 2) & 0xffff;
      const plain = data[i] ^ ((Math.imul(t, t ^ 1) >>> 8) & 0xff);
      data[i] = plain;
      this.#update(plain);
    }
  }
}

function u16(b: Uint8Array, o: number): number {
  return b[o] | (b[o + 1] << 8);
}
function u32(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
}

/** The central directory of a ZIP archive. `where` names the archive in errors. */
export function listZip(zip: Uint8Array, where = "zip archive"): ZipEntry[] {
  // The end record is 22 bytes plus a comment of up to 65535 bytes; search backwards for its signature.
  let eocd = -1;
  for (let o = zip.length - 22; o >= Math.max(0, zip.length - 22 - 0xffff); o--) {
    if (u32(zip, o) === 0x06054b50) {
      eocd = o;
      break;
    }
  }
  if (eocd < 0) {
    throw new Error(`${where}: expected a ZIP end-of-central-directory record, found none (not a zip file?)`);
  }
  const count = u16(zip, eocd + 10);
  let p = u32(zip, eocd + 16);
  if (p === 0xffffffff || count === 0xffff) throw new Error(`${where}: ZIP64 archives are not supported`);
  const names = new TextDecoder();
  const out: ZipEntry[] = [];
  for (let i = 0; i < count; i++) {
    if (p + 46 > zip.length || u32(zip, p) !== 0x02014b50) {
      throw new Error(`${where}: expected central directory entry ${i} at byte ${p}, found a bad signature`);
    }
    const nameLen = u16(zip, p + 28), extraLen = u16(zip, p + 30), commentLen = u16(zip, p + 32);
    const flags = u16(zip, p + 8);
    out.push({
      name: names.decode(zip.subarray(p + 46, p + 46 + nameLen)),
      method: u16(zip, p + 10),
      flags,
      encrypted: (flags & 1) !== 0,
      modTime: u16(zip, p + 12),
      crc32: u32(zip, p + 16),
      compressedSize: u32(zip, p + 20),
      size: u32(zip, p + 24),
      localOffset: u32(zip, p + 42),
    });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

/** Inflate raw deflate data with the platform's streaming decompressor. */
async function inflateRaw(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new DecompressionStream("deflate-raw"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The contents of one entry, decrypted with `password` when it is encrypted; the CRC-32 is checked. */
export async function extractEntry(
  zip: Uint8Array,
  entry: ZipEntry,
  password?: string,
  where = "zip archive",
): Promise<Uint8Array> {
  const at = `${where}: ${entry.name}`;
  const o = entry.localOffset;
  if (o + 30 > zip.length || u32(zip, o) !== 0x04034b50) {
    throw new Error(`${at}: expected a local file header at byte ${o}`);
  }
  if (entry.flags & 0x40 || entry.method === 99) {
    throw new Error(`${at}: strong/AES encryption is not supported (only ZipCrypto)`);
  }
  const start = o + 30 + u16(zip, o + 26) + u16(zip, o + 28);
  if (start + entry.compressedSize > zip.length) {
    throw new Error(`${at}: data runs past the end of the archive`);
  }
  let data = zip.slice(start, start + entry.compressedSize);
  if (entry.encrypted) {
    if (password === undefined) throw new Error(`${at}: the entry is encrypted and no password was given`);
    if (data.length < 12) {
      throw new Error(`${at}: expected a 12-byte encryption header, found ${data.length} bytes`);
    }
    new ZipCrypto(new TextEncoder().encode(password)).decrypt(data);
    // The last header byte must equal the CRC's high byte (or the time's, with a data descriptor).
    const check = entry.flags & 8 ? entry.modTime >>> 8 : entry.crc32 >>> 24;
    if (data[11] !== check) {
      throw new Error(`${at}: wrong password (check byte ${data[11]}, expected ${check})`);
    }
    data = data.subarray(12);
  }
  let out: Uint8Array;
  if (entry.method === 0) out = data;
  else if (entry.method === 8) {
    try {
      out = await inflateRaw(data);
    } catch (e) {
      throw new Error(`${at}: could not inflate (${(e as Error).message}); wrong password?`);
    }
  } else throw new Error(`${at}: compression method ${entry.method} is not supported (only 0 and 8)`);
  if (out.length !== entry.size) throw new Error(`${at}: expected ${entry.size} bytes, found ${out.length}`);
  const crc = crc32(out);
  if (crc !== entry.crc32) {
    throw new Error(
      `${at}: CRC-32 mismatch (${crc.toString(16)} vs ${entry.crc32.toString(16)}); wrong password?`,
    );
  }
  return out;
}

/** Every file (not folder) of the archive by name, decrypted with `password` where needed. */
export async function readZip(
  zip: Uint8Array,
  password?: string,
  where = "zip archive",
): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const e of listZip(zip, where)) {
    if (e.name.endsWith("/")) continue;
    out.set(e.name, await extractEntry(zip, e, password, where));
  }
  return out;
}
