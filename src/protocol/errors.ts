/**
 * Errors raised by the protocol layer.
 *
 * @module
 */

import { ConnectionClosedError } from "../transport/types.ts";

/** Why a session was ended for a peer's misbehaviour; each has a log-friendly name. */
export type ProtocolErrorCode =
  | "bad-version"
  | "oversize-frame"
  | "unknown-frame-type"
  | "unknown-stream"
  | "window-exceeded"
  | "bad-frame"
  | "handshake"
  | "auth";

/** A peer broke the protocol; the session carrying it is closed with this reason. */
export class ProtocolError extends Error {
  /** Machine-readable reason, used in logs and metrics. */
  readonly code: ProtocolErrorCode;

  /**
   * @param code which rule was broken
   * @param message what was received and what was expected
   */
  constructor(code: ProtocolErrorCode, message: string) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
  }
}

/** A stream was reset (DISCONNECT) by either side or because its session ended. */
export class StreamResetError extends ConnectionClosedError {
  /** @param message why, such as `reset by peer: connection refused` */
  constructor(message: string) {
    super(message);
    this.name = "StreamResetError";
  }
}
