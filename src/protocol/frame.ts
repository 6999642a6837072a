/**
 * Wire constants of the o3sr protocol. Every frame is a 16-byte header of four
 * big-endian uint32 fields (version, stream id, type, payload length), as in
 * the O3SR Ruby gem, followed by the payload. See the README's "Protocol".
 *
 * @module
 */

/** Length of a frame header in bytes. */
export const HEADER_LENGTH = 16;

/** Largest payload a frame may carry (O3SR's `MAX_LEN`). */
export const MAX_PAYLOAD = 1_024_000;

/**
 * The protocol version this build speaks, carried in every header. Version 1
 * is the O3SR Ruby gem, which has no handshake or flow control.
 */
export const PROTOCOL_VERSION = 2;

/** Frame types. 1-3 mean what they mean in O3SR; 4-10 are o3sr's additions. */
export const FrameType = {
  /** Opens stream `id`. Payload: empty, or a JSON object with stream metadata. */
  CONNECT: 1,
  /** Aborts stream `id` in both directions (a reset). Payload: optional UTF-8 reason. */
  DISCONNECT: 2,
  /** Stream bytes. Counts against the receiver's window for the stream. */
  TRAFFIC: 3,
  /** Session handshake on stream 0. Payload: a JSON object (see `Hello`). */
  HELLO: 4,
  /** Grants the peer more send credit on stream `id`. Payload: uint32 increment. */
  WINDOW: 5,
  /** The sender will send no more TRAFFIC on stream `id` (a half-close). */
  FIN: 6,
  /** Heartbeat on stream 0. Payload: 8 opaque bytes the peer echoes in a PONG. */
  PING: 7,
  /** Answer to a PING, echoing its payload. */
  PONG: 8,
  /** The sender opens no new streams and asks the peer not to either. Payload: UTF-8 reason. */
  GOAWAY: 9,
  /** Handshake step on stream 0: the dialer's answer to the acceptor's challenge, or the acceptor's consent. Payload: JSON. */
  AUTH: 10,
} as const;

/** One of the {@linkcode FrameType} values. */
export type FrameTypeValue = typeof FrameType[keyof typeof FrameType];

const TYPE_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(FrameType).map(([name, value]) => [value, name]),
);

/** Returns the name of a frame type, or `unknown(N)`. */
export function frameTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `unknown(${type})`;
}

/** Whether `type` is a frame type this build knows. */
export function isKnownFrameType(type: number): type is FrameTypeValue {
  return type in TYPE_NAMES;
}

/** A decoded frame. */
export interface Frame {
  /** Protocol version from the header. */
  version: number;
  /** Stream id; 0 for session-level frames. */
  streamId: number;
  /** Frame type, one of {@linkcode FrameType} for a well-behaved peer. */
  type: number;
  /** The payload; may be a view into a larger buffer. */
  payload: Uint8Array;
}

/** The largest stream id; ids are uint32 and 0 is the session itself. */
export const MAX_STREAM_ID = 0xffff_ffff;

/** Largest window a stream may have, so credit sums stay exact in a uint32. */
export const MAX_WINDOW = 0x7fff_ffff;
