import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  EMPTY,
  encodeFrame,
  FrameDecoder,
  JOIN_LIMIT,
  readUint32,
  writeHeader,
  writeUint32,
} from "../src/protocol/codec.ts";
import { ProtocolError } from "../src/protocol/errors.ts";
import {
  type Frame,
  FrameType,
  frameTypeName,
  HEADER_LENGTH,
  isKnownFrameType,
  MAX_PAYLOAD,
  MAX_STREAM_ID,
  PROTOCOL_VERSION,
} from "../src/protocol/frame.ts";
import { concat, pseudoRandomBytes } from "./_helpers.ts";

// ---- A slow, obviously correct reference of the wire format ----

interface RefFrame {
  version: number;
  streamId: number;
  type: number;
  payload: Uint8Array;
}

/** Header: four big-endian uint32 (version, stream id, type, length), then the payload. */
function refEncode(frame: RefFrame): Uint8Array {
  const out = new Uint8Array(16 + frame.payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, frame.version, false);
  view.setUint32(4, frame.streamId, false);
  view.setUint32(8, frame.type, false);
  view.setUint32(12, frame.payload.length, false);
  for (let i = 0; i < frame.payload.length; i++) out[16 + i] = frame.payload[i];
  return out;
}

/** Decodes a buffer that holds whole frames only. */
function refDecode(bytes: Uint8Array): RefFrame[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const frames: RefFrame[] = [];
  let at = 0;
  while (at < bytes.length) {
    const length = view.getUint32(at + 12, false);
    frames.push({
      version: view.getUint32(at, false),
      streamId: view.getUint32(at + 4, false),
      type: view.getUint32(at + 8, false),
      payload: bytes.slice(at + 16, at + 16 + length),
    });
    at += 16 + length;
  }
  assert.equal(at, bytes.length, "reference decoder: trailing partial frame");
  return frames;
}

/** Byte equality without per-element assertion overhead on megabyte buffers. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function assertFramesEqual(actual: Frame[], expected: RefFrame[], what: string): void {
  assert.equal(actual.length, expected.length, `${what}: frame count`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i], e = expected[i];
    assert.equal(a.version, e.version, `${what}: frame ${i} version`);
    assert.equal(a.streamId, e.streamId, `${what}: frame ${i} stream id`);
    assert.equal(a.type, e.type, `${what}: frame ${i} type`);
    assert.equal(a.payload.length, e.payload.length, `${what}: frame ${i} length`);
    assert.ok(sameBytes(a.payload, e.payload), `${what}: frame ${i} payload bytes differ`);
  }
}

/** Seeded PRNG (mulberry32), so a failure is reproducible. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Decodes `chunks` with a fresh decoder, copying payloads (they may be views). */
function decodeAll(chunks: Iterable<Uint8Array>, maxPayload?: number): Frame[] {
  const frames: Frame[] = [];
  const decoder = new FrameDecoder(
    (frame) => frames.push({ ...frame, payload: frame.payload.slice() }),
    maxPayload === undefined ? {} : { maxPayload },
  );
  for (const chunk of chunks) decoder.push(chunk);
  assert.equal(decoder.buffered, 0, "decoder holds bytes after whole frames");
  return frames;
}

function header(version: number, streamId: number, type: number, length: number): Uint8Array {
  return refEncode({ version, streamId, type, payload: EMPTY }).map((b, i) => {
    // Patch the length field without allocating a payload of that size.
    if (i < 12) return b;
    return (length >>> (8 * (15 - i))) & 0xff;
  });
}

const ALL_TYPES = Object.values(FrameType);
const STREAM_IDS = [0, 1, 2, 3, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, MAX_STREAM_ID];
const MAX_BLOB = pseudoRandomBytes(MAX_PAYLOAD, 99);

describe("frame constants", () => {
  test("header layout and limits match the O3SR wire format", () => {
    assert.equal(HEADER_LENGTH, 16);
    assert.equal(MAX_PAYLOAD, 1_024_000);
    assert.equal(PROTOCOL_VERSION, 2);
    assert.equal(MAX_STREAM_ID, 0xffff_ffff);
    assert.deepEqual(ALL_TYPES, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  test("frame type names and known types", () => {
    assert.equal(frameTypeName(FrameType.CONNECT), "CONNECT");
    assert.equal(frameTypeName(FrameType.TRAFFIC), "TRAFFIC");
    assert.equal(frameTypeName(FrameType.GOAWAY), "GOAWAY");
    assert.equal(frameTypeName(0), "unknown(0)");
    assert.equal(frameTypeName(10), "AUTH");
    assert.equal(frameTypeName(11), "unknown(11)");
    for (const type of ALL_TYPES) assert.ok(isKnownFrameType(type), `type ${type}`);
    for (const type of [0, 11, 42, 0xffff_ffff, -1, 1.5]) {
      assert.ok(!isKnownFrameType(type), `type ${type}`);
    }
  });

  test("readUint32/writeUint32 agree with DataView big-endian at edge values", () => {
    const values = [
      0,
      1,
      0xff,
      0x100,
      0xffff,
      0x1_0000,
      0x7fff_ffff,
      0x8000_0000,
      0xdead_beef,
      0xffff_ffff,
    ];
    const buffer = new Uint8Array(7);
    const view = new DataView(buffer.buffer);
    for (const value of values) {
      buffer.fill(0xaa);
      writeUint32(buffer, 2, value);
      assert.equal(view.getUint32(2, false), value, `write ${value}`);
      assert.equal(buffer[0], 0xaa, "byte before untouched");
      assert.equal(buffer[1], 0xaa, "byte before untouched");
      assert.equal(buffer[6], 0xaa, "byte after untouched");
      view.setUint32(2, value, false);
      assert.equal(readUint32(buffer, 2), value, `read ${value}`);
    }
  });
});

describe("frame encoding round trip", () => {
  test("every type x edge stream ids x lengths 0, 1 and MAX_PAYLOAD matches the reference", () => {
    let cases = 0;
    for (const type of ALL_TYPES) {
      for (const streamId of STREAM_IDS) {
        for (const payload of [EMPTY, new Uint8Array([0xa5]), MAX_BLOB]) {
          const what = `type ${type} stream ${streamId} length ${payload.length}`;
          const expected: RefFrame = { version: PROTOCOL_VERSION, streamId, type, payload };
          const reference = refEncode(expected);
          const encoded = encodeFrame(type, streamId, payload);
          assert.equal(encoded.length, HEADER_LENGTH + payload.length, what);
          assert.ok(
            sameBytes(encoded, reference),
            `${what}: encodeFrame differs from the reference`,
          );

          // writeHeader writes the same 16 bytes at any offset.
          const target = new Uint8Array(HEADER_LENGTH + 5).fill(0x5a);
          writeHeader(target, 3, type, streamId, payload.length);
          assert.ok(
            sameBytes(target.subarray(3, 19), reference.subarray(0, 16)),
            `${what}: writeHeader`,
          );
          assert.deepEqual([...target.subarray(0, 3), ...target.subarray(19)], [
            0x5a,
            0x5a,
            0x5a,
            0x5a,
            0x5a,
          ]);

          // The decoder reads the reference bytes back (and its own).
          assertFramesEqual(decodeAll([reference]), [expected], what);
          assertFramesEqual(refDecode(encoded), [expected], `${what} (reference decode)`);
          cases++;
        }
      }
    }
    assert.equal(cases, ALL_TYPES.length * STREAM_IDS.length * 3);
  });

  test("unknown types and a non-default version encode faithfully", () => {
    for (const type of [0, 10, 0xffff_ffff]) {
      const frame: RefFrame = {
        version: PROTOCOL_VERSION,
        streamId: 7,
        type,
        payload: new Uint8Array([1, 2]),
      };
      assert.ok(sameBytes(encodeFrame(type, 7, frame.payload), refEncode(frame)), `type ${type}`);
      // The decoder passes unknown types through; the session judges them.
      assertFramesEqual(decodeAll([refEncode(frame)]), [frame], `type ${type}`);
    }
    const v1: RefFrame = {
      version: 1,
      streamId: 5,
      type: FrameType.TRAFFIC,
      payload: new Uint8Array([9]),
    };
    assert.ok(sameBytes(encodeFrame(FrameType.TRAFFIC, 5, v1.payload, 1), refEncode(v1)));
  });

  test("encodeFrame defaults to an empty payload and copies the payload", () => {
    const empty = encodeFrame(FrameType.FIN, 9);
    assert.ok(
      sameBytes(empty, refEncode({ version: 2, streamId: 9, type: FrameType.FIN, payload: EMPTY })),
    );
    const payload = new Uint8Array([1, 2, 3]);
    const encoded = encodeFrame(FrameType.TRAFFIC, 1, payload);
    payload[0] = 99;
    assert.equal(encoded[16], 1, "the frame must not alias the caller's payload");
  });

  test("encodeFrame refuses an oversize payload with RangeError", () => {
    assert.throws(
      () => encodeFrame(FrameType.TRAFFIC, 1, new Uint8Array(MAX_PAYLOAD + 1)),
      (error: unknown) => {
        assert.ok(error instanceof RangeError, `expected RangeError, got ${error}`);
        assert.match(error.message, new RegExp(`${MAX_PAYLOAD + 1}`));
        assert.match(error.message, new RegExp(`${MAX_PAYLOAD}`));
        return true;
      },
    );
    // The limit itself is fine.
    assert.equal(encodeFrame(FrameType.TRAFFIC, 1, MAX_BLOB).length, HEADER_LENGTH + MAX_PAYLOAD);
  });

  test("a frame that arrives whole is delivered as a view into the pushed chunk", () => {
    const chunk = concat([
      encodeFrame(FrameType.TRAFFIC, 3, new Uint8Array([1, 2, 3])),
      encodeFrame(FrameType.FIN, 3),
    ]);
    const frames: Frame[] = [];
    new FrameDecoder((frame) => frames.push(frame)).push(chunk);
    assert.equal(frames.length, 2);
    assert.equal(frames[0].payload.buffer, chunk.buffer);
    assert.equal(frames[0].payload.byteOffset, chunk.byteOffset + 16);
    assert.deepEqual([...frames[0].payload], [1, 2, 3]);
    assert.equal(frames[1].payload.length, 0);
  });
});

describe("frame decoding of split input", () => {
  /** A stream of frames of mixed sizes, with the reference's view of it. */
  function sample(
    seed: number,
    count: number,
    bigEvery: number,
  ): { bytes: Uint8Array; frames: RefFrame[] } {
    const random = prng(seed);
    const frames: RefFrame[] = [];
    for (let i = 0; i < count; i++) {
      let length: number;
      const r = random();
      if (i % bigEvery === bigEvery - 1) length = 20_000 + Math.floor(random() * 80_000);
      else if (r < 0.25) length = 0;
      else if (r < 0.4) length = 1;
      else if (r < 0.5) length = HEADER_LENGTH; // a payload as long as a header
      else length = Math.floor(random() * 600);
      frames.push({
        version: PROTOCOL_VERSION,
        streamId: STREAM_IDS[Math.floor(random() * STREAM_IDS.length)],
        type: ALL_TYPES[Math.floor(random() * ALL_TYPES.length)],
        payload: pseudoRandomBytes(length, seed * 1000 + i + 1),
      });
    }
    return { bytes: concat(frames.map(refEncode)), frames };
  }

  function* randomChunks(bytes: Uint8Array, seed: number): Generator<Uint8Array> {
    const random = prng(seed);
    let at = 0;
    while (at < bytes.length) {
      const r = random();
      // Mostly small chunks that cut headers apart, sometimes large ones.
      const size = r < 0.6
        ? 1 + Math.floor(random() * 20)
        : r < 0.9
        ? 1 + Math.floor(random() * 700)
        : 1 + Math.floor(random() * 50_000);
      yield bytes.subarray(at, Math.min(at + size, bytes.length));
      at += size;
    }
  }

  function* byteByByte(bytes: Uint8Array): Generator<Uint8Array> {
    for (let i = 0; i < bytes.length; i++) yield bytes.subarray(i, i + 1);
  }

  test("one chunk, one byte at a time and seeded random chunks give identical frames", () => {
    const { bytes, frames } = sample(1, 300, 60);
    assertFramesEqual(refDecode(bytes), frames, "reference self-check");
    const whole = decodeAll([bytes]);
    assertFramesEqual(whole, frames, "one chunk");
    assertFramesEqual(decodeAll(byteByByte(bytes)), frames, "byte by byte");
    for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
      assertFramesEqual(
        decodeAll(randomChunks(bytes, seed)),
        frames,
        `random chunks, seed ${seed}`,
      );
    }
  });

  test("a MAX_PAYLOAD frame split anywhere decodes intact", () => {
    const big: RefFrame = {
      version: 2,
      streamId: 0xffff_ffff,
      type: FrameType.TRAFFIC,
      payload: MAX_BLOB,
    };
    const tail: RefFrame = { version: 2, streamId: 1, type: FrameType.FIN, payload: EMPTY };
    const bytes = concat([refEncode(big), refEncode(tail)]);
    for (
      const cut of [
        1,
        15,
        16,
        17,
        1000,
        HEADER_LENGTH + MAX_PAYLOAD - 1,
        HEADER_LENGTH + MAX_PAYLOAD,
      ]
    ) {
      assertFramesEqual(
        decodeAll([bytes.subarray(0, cut), bytes.subarray(cut)]),
        [big, tail],
        `cut at ${cut}`,
      );
    }
    assertFramesEqual(decodeAll(randomChunks(bytes, 42)), [big, tail], "random chunks");
  });

  test("buffered counts the bytes held for an incomplete frame; empty pushes are harmless", () => {
    const frame = encodeFrame(FrameType.TRAFFIC, 5, new Uint8Array(100).fill(7));
    const seen: Frame[] = [];
    const decoder = new FrameDecoder((f) => seen.push(f));
    decoder.push(EMPTY);
    assert.equal(decoder.buffered, 0);
    decoder.push(frame.subarray(0, 10));
    assert.equal(decoder.buffered, 10);
    decoder.push(frame.subarray(10, 40));
    assert.equal(decoder.buffered, 24, "16 header bytes were consumed, 24 payload bytes held");
    decoder.push(EMPTY);
    assert.equal(seen.length, 0);
    decoder.push(frame.subarray(40));
    assert.equal(decoder.buffered, 0);
    assert.equal(seen.length, 1);
    assert.deepEqual([...seen[0].payload], new Array(100).fill(7));
  });

  test("a maxPayload limit accepts a frame of exactly that length", () => {
    const payload = new Uint8Array(10).fill(3);
    const frames = decodeAll([encodeFrame(FrameType.TRAFFIC, 1, payload)], 10);
    assert.equal(frames.length, 1);
    assert.equal(frames[0].payload.length, 10);
  });
});

describe("frame decoding errors", () => {
  function expectProtocolError(code: string, pattern: RegExp) {
    return (error: unknown) => {
      assert.ok(error instanceof ProtocolError, `expected ProtocolError, got ${error}`);
      assert.equal(error.code, code);
      assert.equal(error.name, "ProtocolError");
      assert.match(error.message, pattern);
      return true;
    };
  }

  test("version 1 is rejected with a hint about the O3SR gem", () => {
    const decoder = new FrameDecoder(() => assert.fail("no frame expected"));
    assert.throws(
      () => decoder.push(encodeFrame(FrameType.CONNECT, 1, EMPTY, 1)),
      expectProtocolError("bad-version", /version 1\b.*O3SR Ruby gem/),
    );
  });

  for (const version of [0, 99, 3, 0xffff_ffff]) {
    test(`version ${version} is rejected as bad-version, without the gem hint`, () => {
      const decoder = new FrameDecoder(() => assert.fail("no frame expected"));
      assert.throws(
        () => decoder.push(header(version, 1, FrameType.TRAFFIC, 0)),
        expectProtocolError("bad-version", new RegExp(`version ${version}, this build speaks 2$`)),
      );
    });
  }

  test("a bad version is caught in a header that arrives one byte at a time", () => {
    const decoder = new FrameDecoder(() => assert.fail("no frame expected"));
    const bytes = header(99, 1, FrameType.TRAFFIC, 0);
    for (let i = 0; i < 15; i++) decoder.push(bytes.subarray(i, i + 1));
    assert.throws(() => decoder.push(bytes.subarray(15)), expectProtocolError("bad-version", /99/));
  });

  test("a length above MAX_PAYLOAD is oversize-frame, detected from the header alone", () => {
    for (const length of [MAX_PAYLOAD + 1, 0xffff_ffff]) {
      const decoder = new FrameDecoder(() => assert.fail("no frame expected"));
      assert.throws(
        () => decoder.push(header(2, 1, FrameType.TRAFFIC, length)),
        expectProtocolError(
          "oversize-frame",
          new RegExp(`${length} bytes, the limit is ${MAX_PAYLOAD}`),
        ),
      );
    }
  });

  test("a length above a custom maxPayload is oversize-frame", () => {
    const decoder = new FrameDecoder(() => assert.fail("no frame expected"), { maxPayload: 10 });
    assert.throws(
      () => decoder.push(encodeFrame(FrameType.TRAFFIC, 1, new Uint8Array(11))),
      expectProtocolError("oversize-frame", /11 bytes, the limit is 10/),
    );
  });

  test("frames before the bad header are delivered; after a failure all input is refused", () => {
    const seen: Frame[] = [];
    const decoder = new FrameDecoder((frame) => seen.push(frame));
    const good = encodeFrame(FrameType.TRAFFIC, 3, new Uint8Array([1, 2]));
    let first: unknown;
    try {
      decoder.push(concat([good, header(1, 3, FrameType.TRAFFIC, 0), good]));
      assert.fail("push should have thrown");
    } catch (error) {
      first = error;
    }
    assert.ok(first instanceof ProtocolError);
    assert.equal(seen.length, 1, "only the frame before the bad header");
    for (const chunk of [good, EMPTY, new Uint8Array([2])]) {
      assert.throws(() => decoder.push(chunk), (error: unknown) => error === first);
    }
    assert.equal(seen.length, 1, "nothing decoded after the failure");
  });

  test("an oversize failure also poisons the decoder", () => {
    const seen: Frame[] = [];
    const decoder = new FrameDecoder((frame) => seen.push(frame), { maxPayload: 4 });
    assert.throws(
      () => decoder.push(encodeFrame(FrameType.TRAFFIC, 1, new Uint8Array(5))),
      ProtocolError,
    );
    assert.throws(
      () => decoder.push(encodeFrame(FrameType.TRAFFIC, 1, new Uint8Array(1))),
      /5 bytes/,
    );
    assert.equal(seen.length, 0);
  });
});

describe("splitTraffic", () => {
  test("a TRAFFIC frame spanning chunks arrives as pieces with no copy; stream bytes and other frames are unchanged", () => {
    const payloads = [pseudoRandomBytes(300_000, 1), pseudoRandomBytes(70_000, 2)];
    const wire = new Uint8Array([
      ...encodeFrame(FrameType.TRAFFIC, 1, payloads[0]),
      ...encodeFrame(FrameType.WINDOW, 3, new Uint8Array([0, 0, 1, 0])),
      ...encodeFrame(FrameType.TRAFFIC, 3, payloads[1]),
      ...encodeFrame(FrameType.TRAFFIC, 5, new Uint8Array(0)),
    ]);
    const frames: Frame[] = [];
    const decoder = new FrameDecoder((frame) => frames.push(frame), { splitTraffic: true });
    const chunks: Uint8Array[] = [];
    for (let at = 0; at < wire.length; at += 65_536) chunks.push(wire.slice(at, at + 65_536));
    for (const chunk of chunks) decoder.push(chunk);
    const bytesOf = (id: number) =>
      Buffer.concat(frames.filter((f) => f.type === FrameType.TRAFFIC && f.streamId === id).map((f) => f.payload));
    assert.ok(bytesOf(1).equals(Buffer.from(payloads[0])));
    assert.ok(bytesOf(3).equals(Buffer.from(payloads[1])));
    assert.ok(frames.filter((f) => f.streamId === 1).length > 1, "delivered in several pieces");
    assert.ok(frames.every((f) => chunks.some((c) => c.buffer === f.payload.buffer) || f.payload.length <= 16));
    assert.deepEqual(frames.find((f) => f.type === FrameType.WINDOW)!.payload, new Uint8Array([0, 0, 1, 0]));
    assert.equal(frames.filter((f) => f.streamId === 5).length, 1, "an empty TRAFFIC frame still arrives");
    assert.equal(decoder.buffered, 0);
  });

  test("consecutive TRAFFIC frames of one stream in a chunk arrive as one piece, with every stream's bytes in order", () => {
    const small = [
      pseudoRandomBytes(100, 3),
      pseudoRandomBytes(200, 4),
      pseudoRandomBytes(0, 5),
      pseudoRandomBytes(300, 6),
    ];
    const big = pseudoRandomBytes(200_000, 7);
    const wire = concat([
      ...small.map((payload) => encodeFrame(FrameType.TRAFFIC, 1, payload)),
      encodeFrame(FrameType.TRAFFIC, 3, pseudoRandomBytes(50, 8)),
      encodeFrame(FrameType.TRAFFIC, 1, big),
    ]);
    const frames: Frame[] = [];
    new FrameDecoder((frame) => frames.push(frame), { splitTraffic: true }).push(wire);
    assert.deepEqual(frames.map((f) => [f.streamId, f.payload.length]), [[1, 600], [3, 50], [1, 200_000]]);
    assert.ok(Buffer.from(frames[0].payload).equals(Buffer.concat(small)));
    assert.ok(Buffer.from(frames[2].payload).equals(Buffer.from(big)), "the big payload is not moved or copied");

    // A frame's last bytes at the start of a chunk join the next frame when they are the smaller side.
    const split = concat([encodeFrame(FrameType.TRAFFIC, 1, big), encodeFrame(FrameType.TRAFFIC, 1, big)]);
    const pieces: Frame[] = [];
    const decoder = new FrameDecoder((frame) => pieces.push(frame), { splitTraffic: true });
    const cut = 16 + big.length - 40;
    decoder.push(split.slice(0, cut));
    decoder.push(split.slice(cut));
    assert.deepEqual(pieces.map((f) => f.payload.length), [big.length - 40, big.length + 40]);
    assert.ok(Buffer.concat(pieces.map((f) => f.payload)).equals(Buffer.concat([big, big])));
  });

  test("joining never moves more than JOIN_LIMIT bytes, and any chunking gives each stream its exact bytes", () => {
    const sizes = [1, 70, JOIN_LIMIT, JOIN_LIMIT + 1, 40_000, 0, 3, 100_000, 5];
    const sent = new Map<number, Uint8Array[]>();
    const parts: Uint8Array[] = [];
    sizes.forEach((size, i) => {
      const id = i % 3 === 2 ? 3 : 1;
      const payload = pseudoRandomBytes(size, 10 + i);
      sent.set(id, [...(sent.get(id) ?? []), payload]);
      parts.push(encodeFrame(FrameType.TRAFFIC, id, payload));
      if (i === 4) parts.push(encodeFrame(FrameType.WINDOW, 1, new Uint8Array([0, 0, 0, 9])));
    });
    const wire = concat(parts);
    for (const step of [7, 1000, 16_400, 65_536, wire.length]) {
      const got = new Map<number, Uint8Array[]>();
      let windows = 0;
      const decoder = new FrameDecoder((frame) => {
        if (frame.type === FrameType.WINDOW) windows++;
        else got.set(frame.streamId, [...(got.get(frame.streamId) ?? []), frame.payload.slice()]);
      }, { splitTraffic: true });
      for (let at = 0; at < wire.length; at += step) decoder.push(wire.slice(at, at + step));
      for (const [id, payloads] of sent) {
        assert.ok(Buffer.concat(got.get(id)!).equals(Buffer.concat(payloads)), `stream ${id}, chunks of ${step}`);
      }
      assert.equal(windows, 1);
      assert.equal(decoder.buffered, 0);
    }
    // In one chunk: 1 and 70 bytes join; JOIN_LIMIT + 1 and 40,000 do not (either side moved would be over the
    // limit); 3 and 100,000 join by moving the 3.
    const whole: number[] = [];
    new FrameDecoder((frame) => {
      if (frame.type === FrameType.TRAFFIC && frame.streamId === 1) whole.push(frame.payload.length);
    }, { splitTraffic: true }).push(wire);
    assert.deepEqual(whole, [71, JOIN_LIMIT + 1, 40_000, 100_003]);
  });

  test("random frames of three streams in random chunks: every stream gets exactly its bytes, in order", () => {
    const random = pseudoRandomBytes(4096, 99);
    let at = 0;
    const next = (n: number) => ((random[at++ % random.length] << 8) | random[at++ % random.length]) % n;
    const sizes = [0, 1, 15, 16, 17, 1000, JOIN_LIMIT - 1, JOIN_LIMIT, JOIN_LIMIT + 1, 40_000];
    const sent = new Map<number, Uint8Array[]>();
    const parts: Uint8Array[] = [];
    for (let i = 0; i < 300; i++) {
      const id = [1, 3, 5][next(3)];
      if (next(8) === 0) {
        parts.push(encodeFrame(FrameType.WINDOW, id, new Uint8Array([0, 0, 1, 0])));
        continue;
      }
      const payload = pseudoRandomBytes(sizes[next(sizes.length)], 1000 + i);
      sent.set(id, [...(sent.get(id) ?? []), payload]);
      parts.push(encodeFrame(FrameType.TRAFFIC, id, payload));
    }
    const wire = concat(parts);
    const got = new Map<number, Uint8Array[]>();
    const decoder = new FrameDecoder((frame) => {
      if (frame.type !== FrameType.TRAFFIC) return;
      got.set(frame.streamId, [...(got.get(frame.streamId) ?? []), frame.payload.slice()]);
    }, { splitTraffic: true });
    for (let offset = 0; offset < wire.length;) {
      const length = 1 + next(70_000);
      decoder.push(wire.slice(offset, offset + length));
      offset += length;
    }
    for (const [id, payloads] of sent) {
      assert.ok(Buffer.concat(got.get(id)!).equals(Buffer.concat(payloads)), `stream ${id}`);
    }
    assert.equal(decoder.buffered, 0);
  });
});
