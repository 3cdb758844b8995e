import assert from "node:assert/strict";
import { parseSafetensors, parseSafetensorsHeader, serializeSafetensors } from "../model/safetensors.ts";

const FIXTURE = new URL("./fixtures/gpt2_tiny/reference.safetensors", import.meta.url);

/** A safetensors file built by hand: 8-byte LE header length, the header text as given, then `data`. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const h = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** Little-endian bytes from 16-, 32- or 64-bit words. */
function le(bits: 16 | 32 | 64, values: Array<number | bigint>): Uint8Array {
  const out = new Uint8Array(values.length * bits / 8);
  const v = new DataView(out.buffer);
  values.forEach((x, i) => {
    if (bits === 16) v.setUint16(2 * i, Number(x), true);
    else if (bits === 32) v.setUint32(4 * i, Number(x), true);
    else v.setBigInt64(8 * i, BigInt(x), true);
  });
  return out;
}

Deno.test("safetensors: F32 and I32 round trip with metadata, 8-byte aligned data", () => {
  const a = Float32Array.from([1.5, -2.25, 3e-8, Infinity, -0, 123456.789]);
  const b = Int32Array.from([-2147483648, 2147483647, 0, 7]);
  // A non-ASCII name makes the header's byte length differ from its character length.
  const bytes = serializeSafetensors([["a.weight", { shape: [2, 3], data: a }], ["ids·é", {
    shape: [4],
    data: b,
  }]], {
    format: "pt",
    note: "x",
  });
  const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(headerLen % 8, 0, "header padded to a multiple of 8");
  const { tensors, metadata } = parseSafetensors(bytes, "mem");
  assert.deepEqual(metadata, { format: "pt", note: "x" });
  assert.deepEqual([...tensors.keys()], ["a.weight", "ids·é"]);
  const ta = tensors.get("a.weight")!, tb = tensors.get("ids·é")!;
  assert.equal(ta.dtype, "F32");
  assert.deepEqual(ta.shape, [2, 3]);
  assert.deepEqual(ta.data, a);
  assert.equal(tb.dtype, "I32");
  assert.deepEqual(tb.data, b);
  // The same bytes by hand: data section begins right after the padded header, a then b.
  const data = bytes.subarray(8 + headerLen);
  assert.deepEqual(new Float32Array(data.slice(0, 24).buffer), a);
  assert.deepEqual(new Int32Array(data.slice(24, 40).buffer), b);
});

Deno.test("safetensors: empty file and zero-sized tensors round trip", () => {
  const { tensors, metadata } = parseSafetensors(serializeSafetensors([]));
  assert.equal(tensors.size, 0);
  assert.deepEqual(metadata, { format: "pt" });
  const z = parseSafetensors(serializeSafetensors([["z", { shape: [0, 4], data: new Float32Array(0) }]]));
  assert.deepEqual(z.tensors.get("z")!.shape, [0, 4]);
});

Deno.test("safetensors: reads the file PyTorch's fixture script wrote", async () => {
  const { tensors, metadata } = parseSafetensors(await Deno.readFile(FIXTURE), "reference.safetensors");
  assert.equal(metadata.format, "pt");
  assert.equal(JSON.parse(metadata.settings).simpo.beta, 2);
  const inputs = tensors.get("lm.inputs")!, targets = tensors.get("lm.targets")!;
  assert.equal(inputs.dtype, "I32");
  assert.deepEqual(inputs.shape, [2, 12]);
  // Targets are the inputs shifted by one position.
  for (let b = 0; b < 2; b++) {
    for (let t = 0; t < 11; t++) assert.equal(targets.data[b * 12 + t], inputs.data[b * 12 + t + 1]);
  }
  const logits = tensors.get("lm.logits")!;
  assert.equal(logits.dtype, "F32");
  assert.deepEqual(logits.shape, [2, 12, 61]);
  assert.deepEqual([...tensors.get("lm.mask")!.data.slice(12)], [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]);
});

Deno.test("safetensors: F16, BF16, I64 and U8 decode, at unaligned file offsets", () => {
  // U8 first (3 bytes) so that every following tensor starts at an odd offset.
  const u8 = Uint8Array.from([0, 200, 255]);
  const f16 = le(16, [0x3c00, 0xc000, 0x0001, 0x7c00, 0xfc00, 0x7e00, 0x3555, 0x8000]);
  const bf16 = le(16, [0x3f80, 0x4049, 0xbf00, 0x0001]);
  const i64 = le(64, [-1n, 2147483647n, -2147483648n, 5n]);
  const parts = [u8, f16, bf16, i64];
  const data = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  const offsets: number[][] = [];
  parts.reduce((at, p) => {
    data.set(p, at);
    offsets.push([at, at + p.length]);
    return at + p.length;
  }, 0);
  const file = rawFile({
    u: { dtype: "U8", shape: [3], data_offsets: offsets[0] },
    h: { dtype: "F16", shape: [2, 4], data_offsets: offsets[1] },
    b: { dtype: "BF16", shape: [4], data_offsets: offsets[2] },
    l: { dtype: "I64", shape: [4], data_offsets: offsets[3] },
  }, data);
  const { tensors } = parseSafetensors(file);
  assert.deepEqual(tensors.get("u")!.data, u8);
  const h = [...tensors.get("h")!.data];
  assert.deepEqual(h.slice(0, 5), [1, -2, 2 ** -24, Infinity, -Infinity]);
  assert.ok(Number.isNaN(h[5]));
  assert.equal(h[6], 0.333251953125); // 0x3555 = (1 + 341/1024) / 4
  assert.ok(Object.is(h[7], -0));
  assert.deepEqual([...tensors.get("b")!.data], [1, 3.140625, -0.5, 2 ** -133]);
  const l = tensors.get("l")!;
  assert.ok(l.data instanceof Int32Array);
  assert.deepEqual([...l.data], [-1, 2147483647, -2147483648, 5]);
});

Deno.test("safetensors: I64 outside the int32 range is an error naming the tensor and value", () => {
  for (const v of [2147483648n, -2147483649n, 1n << 40n]) {
    const file = rawFile({ ids: { dtype: "I64", shape: [2], data_offsets: [0, 16] } }, le(64, [3n, v]));
    assert.throws(
      () => parseSafetensors(file, "f.st"),
      new RegExp(`f\\.st: tensor "ids": I64 element 1 is ${v}`),
    );
  }
});

Deno.test("safetensors: malformed files give clear errors", () => {
  const ok = { w: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
  const eight = new Uint8Array(8);
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ["truncated below 8 bytes", new Uint8Array(5), /f: truncated file: 5 bytes, expected at least 8/],
    [
      "header beyond file",
      rawFile(ok, eight).subarray(0, 20),
      /header length \d+ runs beyond the end of the file \(20 bytes\)/,
    ],
    ["huge header length", le(64, [1n << 40n]), /over the 100000000-byte limit/],
    ["bad JSON", rawFile('{"w": {"dtype": "F32",', eight), /f: header is not valid JSON/],
    ["header not an object", rawFile("[1, 2]", eight), /header must be a JSON object, found array/],
    [
      "unknown dtype",
      rawFile({ w: { dtype: "F64", shape: [1], data_offsets: [0, 8] } }, eight),
      /tensor "w": unknown dtype "F64"/,
    ],
    [
      "bad shape",
      rawFile({ w: { dtype: "F32", shape: [2, -1], data_offsets: [0, 8] } }, eight),
      /tensor "w": shape must be/,
    ],
    [
      "missing offsets",
      rawFile({ w: { dtype: "F32", shape: [2] } }, eight),
      /tensor "w": data_offsets must be \[begin, end\]/,
    ],
    [
      "offsets past the data (truncated data)",
      rawFile({ w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, eight),
      /tensor "w": data_offsets \[0, 16\] out of range of the 8-byte data section \(file truncated\?\)/,
    ],
    [
      "begin after end",
      rawFile({ w: { dtype: "F32", shape: [0], data_offsets: [8, 4] } }, eight),
      /tensor "w": data_offsets \[8, 4\] out of range/,
    ],
    [
      "shape/size mismatch",
      rawFile({ w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, eight),
      /tensor "w": shape \[3\] of F32 needs 12 bytes, but data_offsets \[0, 8\] hold 8/,
    ],
    [
      "overlap",
      rawFile({
        a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
        b: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
      }, eight),
      /tensor "b" \(bytes 4\.\.8\) overlaps tensor "a" \(bytes 0\.\.8\)/,
    ],
    [
      "metadata not strings",
      rawFile({ __metadata__: { n: 1 }, ...ok }, eight),
      /__metadata__\.n must be a string/,
    ],
  ];
  for (const [label, bytes, pattern] of cases) {
    assert.throws(() => parseSafetensorsHeader(bytes, "f"), pattern, label);
  }
  // A valid control, so the cases above fail for the reason they name.
  assert.equal(parseSafetensorsHeader(rawFile(ok, eight), "f").entries.length, 1);
});

Deno.test("safetensors: writer refuses inconsistent tensors", () => {
  assert.throws(
    () => serializeSafetensors([["w", { shape: [2, 2], data: new Float32Array(3) }]]),
    /tensor "w": shape \[2,2\] has 4 elements, data has 3/,
  );
  const t = { shape: [1], data: new Float32Array(1) };
  assert.throws(() => serializeSafetensors([["w", t], ["w", t]]), /tensor "w" given twice/);
  assert.throws(() => serializeSafetensors([["__metadata__", t]]), /cannot be a tensor name/);
});
