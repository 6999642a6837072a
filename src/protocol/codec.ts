/**
 * Frame encoding and a push decoder: bytes in, frames out, no I/O.
 *
 * @module
 */

import { ProtocolError } from "./errors.ts";
import { type Frame, FrameType, HEADER_LENGTH, MAX_PAYLOAD, PROTOCOL_VERSION } from "./frame.ts";

/**
 * Writes a frame header into `target` at `offset`.
 *
 * @param target buffer with at least 16 bytes free at `offset`
 * @param offset where the header starts
 * @param type frame type
 * @param streamId stream id, 0 for the session
 * @param length payload length
 * @param version protocol version to put in the header
 */
export function writeHeader(
  target: Uint8Array,
  offset: number,
  type: number,
  streamId: number,
  length: number,
  version: number = PROTOCOL_VERSION,
): void {
  writeUint32(target, offset, version);
  writeUint32(target, offset + 4, streamId);
  writeUint32(target, offset + 8, type);
  writeUint32(target, offset + 12, length);
}

/**
 * Encodes one frame into a new buffer. The session writes frames straight into
 * its output buffer instead; this is for handshakes, tests and tools.
 *
 * @param type frame type
 * @param streamId stream id, 0 for the session
 * @param payload payload bytes, at most {@linkcode MAX_PAYLOAD}
 * @param version protocol version to put in the header
 * @returns header and payload in one buffer
 * @throws {RangeError} if the payload is larger than {@linkcode MAX_PAYLOAD}
 */
export function encodeFrame(
  type: number,
  streamId: number,
  payload: Uint8Array = EMPTY,
  version: number = PROTOCOL_VERSION,
): Uint8Array {
  if (payload.length > MAX_PAYLOAD) {
    throw new RangeError(
      `Cannot encode frame: payload is ${payload.length} bytes, the limit is ${MAX_PAYLOAD}`,
    );
  }
  const out = new Uint8Array(HEADER_LENGTH + payload.length);
  writeHeader(out, 0, type, streamId, payload.length, version);
  out.set(payload, HEADER_LENGTH);
  return out;
}

/** Options for {@linkcode FrameDecoder}. */
export interface DecoderOptions {
  /**
   * Largest payload accepted; a larger length in a header is a protocol error.
   * @default {MAX_PAYLOAD}
   */
  maxPayload?: number;
  /**
   * Deliver TRAFFIC as pieces of stream bytes rather than frame by frame: a
   * frame that spans chunks arrives as one piece per chunk instead of being
   * copied together, and consecutive TRAFFIC frames of one stream in a chunk
   * arrive as one piece, joined by moving the smaller side over the header
   * between them (at most {@linkcode JOIN_LIMIT} bytes), so the reader writes
   * them on with one call. Stream bytes mean the same either way. Pushed
   * chunks must then be writable by the decoder.
   * @default {false}
   */
  splitTraffic?: boolean;
}

/**
 * Most bytes moved to join two TRAFFIC frames into one piece (see
 * {@linkcode DecoderOptions.splitTraffic}): moving 16 KiB costs about what the
 * extra write downstream would.
 */
export const JOIN_LIMIT = 16 * 1024;

/**
 * A push decoder: feed it bytes as they arrive, in chunks of any size, and it
 * calls `onFrame` for each complete frame. Payloads of frames that arrive whole
 * are views into the pushed chunk (no copy); the caller owns pushed chunks.
 */
export class FrameDecoder {
  readonly #onFrame: (frame: Frame) => void;
  readonly #maxPayload: number;
  readonly #splitTraffic: boolean;
  /** Payload bytes of a split TRAFFIC frame still to come. */
  #trafficLeft = 0;
  readonly #header = new Uint8Array(HEADER_LENGTH);
  #headerFill = 0;
  #version = 0;
  #streamId = 0;
  #type = 0;
  #payload: Uint8Array | null = null;
  #payloadFill = 0;
  #failed: ProtocolError | null = null;

  /**
   * @param onFrame called for each frame, in order
   * @param options limits
   */
  constructor(onFrame: (frame: Frame) => void, options: DecoderOptions = {}) {
    this.#onFrame = onFrame;
    this.#maxPayload = options.maxPayload ?? MAX_PAYLOAD;
    this.#splitTraffic = options.splitTraffic ?? false;
  }

  /** Largest payload accepted: larger frames are a protocol error. */
  get maxPayload(): number {
    return this.#maxPayload;
  }

  /** Bytes held for an incomplete frame. */
  get buffered(): number {
    return this.#headerFill + this.#payloadFill;
  }

  /**
   * Delivers the bytes of the current TRAFFIC frame that are in `chunk` from
   * `offset`, joined with the TRAFFIC frames of the same stream that follow
   * in the chunk, and returns where decoding goes on.
   */
  #emitPiece(chunk: Uint8Array, offset: number, end: number): number {
    // The piece is [from, to); `offset` is how far the chunk was read.
    let from = offset;
    offset += Math.min(this.#trafficLeft, end - offset);
    let to = offset;
    this.#trafficLeft -= to - from;
    while (this.#trafficLeft === 0 && end - offset >= HEADER_LENGTH) {
      const length = this.#sameStreamTraffic(chunk, offset);
      if (length < 0) break;
      const start = offset + HEADER_LENGTH;
      const inChunk = Math.min(length, end - start);
      const before = to - from;
      if (Math.min(before, inChunk) > JOIN_LIMIT) break;
      if (before <= inChunk) {
        // Move the piece so far up against the next payload.
        chunk.copyWithin(from + start - to, from, to);
        from += start - to;
        to = start + inChunk;
      } else {
        // Move the next payload down against the piece.
        chunk.copyWithin(to, start, start + inChunk);
        to += inChunk;
      }
      offset = start + inChunk;
      this.#trafficLeft = length - inChunk;
    }
    this.#onFrame({
      version: this.#version,
      streamId: this.#streamId,
      type: this.#type,
      payload: chunk.subarray(from, to),
    });
    return offset;
  }

  /** The payload length of the frame at `at` if it is TRAFFIC for the current stream and valid, else -1. */
  #sameStreamTraffic(chunk: Uint8Array, at: number): number {
    if (
      readUint32(chunk, at + 8) !== FrameType.TRAFFIC || readUint32(chunk, at + 4) !== this.#streamId ||
      readUint32(chunk, at) !== this.#version
    ) {
      return -1;
    }
    const length = readUint32(chunk, at + 12);
    return length <= this.#maxPayload ? length : -1;
  }

  /**
   * Decodes as many frames as `chunk` completes.
   *
   * @throws {ProtocolError} on a bad version or an oversize length; the decoder
   *   then refuses further input, since the stream of bytes has lost its framing.
   */
  push(chunk: Uint8Array): void {
    if (this.#failed) throw this.#failed;
    let offset = 0;
    const end = chunk.length;
    while (offset < end) {
      if (this.#trafficLeft > 0) {
        offset = this.#emitPiece(chunk, offset, end);
        continue;
      }
      if (this.#payload !== null) {
        // Finishing a payload that started in an earlier chunk.
        const take = Math.min(this.#payload.length - this.#payloadFill, end - offset);
        this.#payload.set(chunk.subarray(offset, offset + take), this.#payloadFill);
        this.#payloadFill += take;
        offset += take;
        if (this.#payloadFill === this.#payload.length) this.#emit(this.#payload);
        continue;
      }
      let length: number;
      if (this.#headerFill === 0 && end - offset >= HEADER_LENGTH) {
        // Fast path: the whole header is in this chunk.
        length = this.#readHeader(chunk, offset);
        offset += HEADER_LENGTH;
      } else {
        const take = Math.min(HEADER_LENGTH - this.#headerFill, end - offset);
        this.#header.set(chunk.subarray(offset, offset + take), this.#headerFill);
        this.#headerFill += take;
        offset += take;
        if (this.#headerFill < HEADER_LENGTH) return;
        this.#headerFill = 0;
        length = this.#readHeader(this.#header, 0);
      }
      if (this.#splitTraffic && this.#type === FrameType.TRAFFIC && length > 0) {
        this.#trafficLeft = length;
        offset = this.#emitPiece(chunk, offset, end);
      } else if (end - offset >= length) {
        this.#emit(chunk.subarray(offset, offset + length));
        offset += length;
      } else {
        this.#payload = new Uint8Array(length);
        this.#payloadFill = 0;
      }
    }
  }

  #readHeader(bytes: Uint8Array, at: number): number {
    const version = readUint32(bytes, at);
    const length = readUint32(bytes, at + 12);
    if (version !== PROTOCOL_VERSION) {
      const hint = version === 1
        ? " (version 1 is the O3SR Ruby gem, which has no handshake or flow control; run o3sr on both ends)"
        : "";
      this.#fail(
        new ProtocolError(
          "bad-version",
          `peer sent protocol version ${version}, this build speaks ${PROTOCOL_VERSION}${hint}`,
        ),
      );
    }
    if (length > this.#maxPayload) {
      this.#fail(
        new ProtocolError(
          "oversize-frame",
          `peer sent a frame of ${length} bytes, the limit is ${this.#maxPayload}`,
        ),
      );
    }
    this.#version = version;
    this.#streamId = readUint32(bytes, at + 4);
    this.#type = readUint32(bytes, at + 8);
    return length;
  }

  #emit(payload: Uint8Array): void {
    this.#payload = null;
    this.#payloadFill = 0;
    this.#onFrame({ version: this.#version, streamId: this.#streamId, type: this.#type, payload });
  }

  #fail(error: ProtocolError): never {
    this.#failed = error;
    throw error;
  }
}

/** An empty payload, shared. */
export const EMPTY: Uint8Array = new Uint8Array(0);

/** Reads a big-endian uint32 at `at`. */
export function readUint32(bytes: Uint8Array, at: number): number {
  return ((bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]) >>> 0;
}

/** Writes `value` as a big-endian uint32 at `at`. */
export function writeUint32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 24;
  bytes[at + 1] = value >>> 16;
  bytes[at + 2] = value >>> 8;
  bytes[at + 3] = value;
}
