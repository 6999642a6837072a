/**
 * WebSocket (RFC 6455) over any {@linkcode Conn}: TCP, TLS (wss) or a test
 * pipe, identical on every runtime because it is plain TypeScript over the
 * transport contract. Lets o3sr cross proxies and firewalls that only pass
 * HTTP(S).
 *
 * - {@linkcode wsAccept} (server) and {@linkcode wsConnect} (client) run the
 *   HTTP/1.1 upgrade and return a Conn whose bytes travel in binary messages.
 * - {@linkcode sniffWebSocket} tells an HTTP request from an o3sr HELLO by
 *   the first bytes, so one port can serve both.
 * - {@linkcode wsTransport} wraps a Transport: its listeners accept WebSocket
 *   upgrades (off the accept loop), its `connect` dials and upgrades; with
 *   `tls` in the connect options that is `wss://`.
 *
 * The Conn is a byte stream: each `write()` is one binary message (split
 * into 1 MiB fragments), and `read()` returns payload bytes as they arrive,
 * without message boundaries. `closeWrite()` sends a Close frame; a received
 * Close frame is the end of input (`read()` returns `null`); like TCP's FIN,
 * either side may go on writing after the other's Close until it closes too.
 * Pings are answered; text frames, reserved bits (no extensions are
 * negotiated) and frames over the size limit close the connection with the
 * matching status code.
 *
 * @module
 */

import { Deferred } from "../async.ts";
import { acceptInBackground } from "./accept.ts";
import {
  type Addr,
  type Conn,
  ConnectionClosedError,
  type ConnectOptions,
  formatAddr,
  type Lender,
  lends,
  type ListenOptions,
  type Transport,
} from "./types.ts";

/** Largest frame payload accepted by default: 16 MiB. */
export const DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024;
/** Largest HTTP upgrade request or response head accepted by default: 8 KiB. */
export const DEFAULT_MAX_HEADER_BYTES = 8 * 1024;
/** Upgrade time limit of {@linkcode wsTransport} when none is given. */
export const DEFAULT_WS_HANDSHAKE_TIMEOUT = 10_000;

// Writes larger than this go out as several frames of one message, so peers
// with smaller frame limits than ours still take them.
const WRITE_FRAGMENT = 1024 * 1024;
// Payloads up to this size are copied next to their header and written once;
// larger ones are written separately rather than copied.
const COALESCE_LIMIT = 16 * 1024;
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
// How long a Close frame may take to go out before the connection is closed anyway.
const CLOSE_GRACE = 2000;

const OP_CONTINUATION = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

/** Close status codes this module sends. */
export const CloseCode = {
  normal: 1000,
  protocolError: 1002,
  unsupportedData: 1003,
  tooBig: 1009,
} as const;

/** The upgrade failed: a bad or refused HTTP request or response. */
export class WebSocketHandshakeError extends Error {
  /**
   * @param message what was wrong
   * @param status the HTTP status sent (server side) or received (client side), if any
   */
  constructor(message: string, readonly status?: number) {
    super(message);
    this.name = "WebSocketHandshakeError";
  }
}

/** The peer broke RFC 6455, or closed with an error code; the connection is closed. */
export class WebSocketProtocolError extends ConnectionClosedError {
  /**
   * @param message what was wrong
   * @param code the close status code sent or received
   */
  constructor(message: string, readonly code: number) {
    super(message);
    this.name = "WebSocketProtocolError";
  }
}

/** The upgrade request a server accepted. */
export interface WebSocketRequest {
  /** Always `GET`. */
  method: string;
  /** Request target as sent, such as `/o3sr?token=x`. */
  target: string;
  /** The target's path, without the query. */
  path: string;
  /** Header fields, names in lower case; repeated fields joined with `, `. */
  headers: Map<string, string>;
}

// ---- Masking ----

/**
 * XORs `data` in place with the 4-byte `key`, as if `data` started `phase`
 * bytes into the masked payload. Whole 32-bit words where aligned.
 */
export function applyMask(data: Uint8Array, key: Uint8Array, phase = 0): void {
  const n = data.length;
  let i = 0;
  while (i < n && ((data.byteOffset + i) & 3) !== 0) {
    data[i] ^= key[(phase + i) & 3];
    i++;
  }
  const words = (n - i) >>> 2;
  if (words > 0) {
    // The key rotated to this position, in the platform's byte order (as the
    // Uint32Array view reads data).
    const rotated = new Uint8Array(4);
    for (let j = 0; j < 4; j++) rotated[j] = key[(phase + i + j) & 3];
    const k = new Uint32Array(rotated.buffer)[0];
    const view = new Uint32Array(data.buffer, data.byteOffset + i, words);
    for (let w = 0; w < words; w++) view[w] ^= k;
    i += words << 2;
  }
  for (; i < n; i++) data[i] ^= key[(phase + i) & 3];
}

/** The frame header for a payload of `length` bytes; 4 more bytes for the mask key if `masked`. */
function frameHeader(fin: boolean, opcode: number, length: number, masked: boolean): Uint8Array {
  const lengthBytes = length < 126 ? 0 : length < 65536 ? 2 : 8;
  const header = new Uint8Array(2 + lengthBytes + (masked ? 4 : 0));
  header[0] = (fin ? 0x80 : 0) | opcode;
  const maskBit = masked ? 0x80 : 0;
  if (lengthBytes === 0) {
    header[1] = maskBit | length;
  } else if (lengthBytes === 2) {
    header[1] = maskBit | 126;
    header[2] = length >>> 8;
    header[3] = length & 0xff;
  } else {
    header[1] = maskBit | 127;
    const view = new DataView(header.buffer);
    view.setUint32(2, Math.floor(length / 2 ** 32));
    view.setUint32(6, length >>> 0);
  }
  if (masked) crypto.getRandomValues(header.subarray(header.length - 4));
  return header;
}

/**
 * Encodes one frame as one or two buffers (header, payload) ready to write.
 * Client frames (`masked`) are copied and masked; the caller's payload is
 * never changed.
 */
export function encodeFrame(fin: boolean, opcode: number, payload: Uint8Array, masked: boolean): Uint8Array[] {
  const header = frameHeader(fin, opcode, payload.length, masked);
  if (!masked) {
    if (payload.length > COALESCE_LIMIT) return [header, payload];
    const frame = new Uint8Array(header.length + payload.length);
    frame.set(header);
    frame.set(payload, header.length);
    return [frame];
  }
  // Start the frame so that its payload is 4-byte aligned: copying and masking
  // then take one pass of 32-bit words.
  const pad = (4 - (header.length & 3)) & 3;
  const frame = new Uint8Array(pad + header.length + payload.length).subarray(pad);
  frame.set(header);
  maskedCopy(frame.subarray(header.length), payload, header.subarray(header.length - 4));
  return [frame];
}

/** Writes `src` XOR the mask `key` into `dst` (same length, `dst` 4-byte aligned). */
function maskedCopy(dst: Uint8Array, src: Uint8Array, key: Uint8Array): void {
  if ((src.byteOffset & 3) !== 0) {
    dst.set(src);
    applyMask(dst, key, 0);
    return;
  }
  const words = src.length >>> 2;
  const k = new Uint32Array(key.slice().buffer)[0];
  const from = new Uint32Array(src.buffer, src.byteOffset, words);
  const to = new Uint32Array(dst.buffer, dst.byteOffset, words);
  for (let w = 0; w < words; w++) to[w] = from[w] ^ k;
  for (let i = words << 2; i < src.length; i++) dst[i] = src[i] ^ key[i & 3];
}

// ---- The connection ----

type Role = "client" | "server";

/** A WebSocket over an inner Conn, as a {@linkcode Conn}. */
export class WebSocketConn implements Conn {
  /** Server side: the upgrade request this connection answered. */
  readonly request?: WebSocketRequest;
  readonly #inner: Conn;
  readonly #role: Role;
  readonly #maxFrame: number;
  // Bytes read from the inner Conn but not yet parsed.
  #pending: Uint8Array | null;
  // Current data frame: payload bytes still to come, its mask key, and how far into it we are.
  #remaining = 0;
  #maskKey: Uint8Array | null = null;
  #phase = 0;
  #inMessage = false;
  #peerClosed = false;
  #sentClose = false;
  // Our Close frame's write, once started.
  #closeFrame: Promise<void> | null = null;
  #error: Error | null = null;
  #closedLocally = false;
  #done = false;
  readonly #abort: Promise<never>;
  #rejectAbort!: (error: Error) => void;
  // Frame writes go one at a time; control frames may slip in between the fragments of a message.
  #writeLock: Promise<void> = Promise.resolve();
  #writesInFlight = 0;
  #pongPayload: Uint8Array | null = null;
  #pings: Array<{ payload: Uint8Array; resolve(): void; reject(error: Error): void }> = [];
  readonly #closed = new Deferred<void>();
  /** Resolves once the connection is fully closed, however that happened; made on first use. */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  /**
   * Use {@linkcode wsAccept} or {@linkcode wsConnect} rather than this.
   *
   * @param inner the connection the upgrade happened on
   * @param role which end this is: clients mask their frames, servers require masked frames
   * @param leftover bytes read past the upgrade's HTTP head: the first frames
   * @param options frame size limit, and the request (server side)
   */
  constructor(
    inner: Conn,
    role: Role,
    leftover: Uint8Array | null,
    options: { maxFrameSize?: number; request?: WebSocketRequest } = {},
  ) {
    this.#inner = inner;
    this.#role = role;
    this.#pending = leftover && leftover.length > 0 ? leftover : null;
    this.#maxFrame = options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE;
    this.request = options.request;
    this.#abort = new Promise<never>((_, reject) => this.#rejectAbort = reject);
    this.#abort.catch(() => {});
    inner.closed.then(() => this.#release());
  }

  /** This end's address (the inner connection's). */
  get localAddr(): Addr {
    return this.#inner.localAddr;
  }

  /** The peer's address (the inner connection's). */
  get remoteAddr(): Addr {
    return this.#inner.remoteAddr;
  }

  /**
   * Resolves with the next payload bytes of binary messages, or `null` once
   * the peer sent a Close frame.
   *
   * @throws {WebSocketProtocolError} when the peer broke the protocol or closed with an error code
   * @throws {ConnectionClosedError} after `close()`/`reset()`, or when the connection ended without a Close frame
   */
  read(): Promise<Uint8Array | null> {
    if (this.#closedLocally) return Promise.reject(new ConnectionClosedError());
    if (this.#error) return Promise.reject(this.#error);
    return Promise.race([this.#readPayload(), this.#abort]);
  }

  /**
   * Sends `chunk` as one binary message. Resolves once the inner connection
   * took it, so a slow peer slows the writer down.
   *
   * @throws {ConnectionClosedError} after `closeWrite()`, `close()` or a failure
   */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.#error) throw this.#error;
    if (this.#sentClose || this.#done) throw new ConnectionClosedError("write after close");
    if (chunk.length === 0) return;
    const masked = this.#role === "client";
    for (let at = 0; at < chunk.length; at += WRITE_FRAGMENT) {
      const end = Math.min(at + WRITE_FRAGMENT, chunk.length);
      const opcode = at === 0 ? OP_BINARY : OP_CONTINUATION;
      await this.#send(encodeFrame(end === chunk.length, opcode, chunk.subarray(at, end), masked));
    }
  }

  /** Sends a Close frame (status 1000) after everything written before; reading goes on. */
  async closeWrite(): Promise<void> {
    if (this.#sentClose || this.#done) return;
    await this.#sendClose(CloseCode.normal, "").catch(() => {});
    if (this.#peerClosed) this.#shutDown(CloseCode.normal, "");
  }

  /**
   * Closes: a Close frame if none was sent and the writer is idle, then the
   * inner connection. Idempotent.
   */
  close(): void {
    if (this.#closedLocally) return;
    this.#closedLocally = true;
    this.#rejectAbort(new ConnectionClosedError());
    this.#failPings(new ConnectionClosedError());
    this.#shutDown(CloseCode.normal, "");
  }

  /** Aborts the inner connection. Idempotent. */
  reset(): void {
    if (this.#closedLocally && this.#done) return;
    this.#closedLocally = true;
    this.#rejectAbort(new ConnectionClosedError());
    this.#failPings(new ConnectionClosedError());
    this.#inner.reset();
    this.#release();
  }

  /**
   * Sends a Ping; resolves when its Pong arrives. Pongs are seen by `read()`,
   * so someone must be reading.
   *
   * @param payload at most 125 bytes; 8 random bytes by default
   * @throws {ConnectionClosedError} if the connection closes first
   */
  ping(payload: Uint8Array = crypto.getRandomValues(new Uint8Array(8))): Promise<void> {
    if (payload.length > 125) return Promise.reject(new RangeError("a ping payload is at most 125 bytes"));
    if (this.#done || this.#closedLocally || this.#sentClose) return Promise.reject(new ConnectionClosedError());
    const copy = payload.slice();
    return new Promise((resolve, reject) => {
      this.#pings.push({ payload: copy, resolve, reject });
      this.#send(encodeFrame(true, OP_PING, copy, this.#role === "client")).catch(reject);
    });
  }

  // ---- Reading ----

  async #readPayload(): Promise<Uint8Array | null> {
    for (;;) {
      if (this.#error) throw this.#error;
      if (this.#peerClosed) return null;
      if (this.#remaining > 0) {
        const chunk = await this.#take(this.#remaining);
        this.#remaining -= chunk.length;
        if (this.#maskKey) {
          applyMask(chunk, this.#maskKey, this.#phase);
          this.#phase = (this.#phase + chunk.length) & 3;
        }
        return chunk;
      }
      await this.#readFrameHeader();
    }
  }

  /** Reads one frame header; handles control frames whole, sets up data frames for `#readPayload`. */
  async #readFrameHeader(): Promise<void> {
    const head = await this.#exactly(2);
    const fin = (head[0] & 0x80) !== 0;
    const rsv = head[0] & 0x70;
    const opcode = head[0] & 0x0f;
    const masked = (head[1] & 0x80) !== 0;
    let length = head[1] & 0x7f;
    if (rsv !== 0) {
      this.#protocolError(CloseCode.protocolError, "frame has reserved bits set, but no extension was negotiated");
    }
    if (masked !== (this.#role === "server")) {
      this.#protocolError(
        CloseCode.protocolError,
        this.#role === "server" ? "client frame is not masked" : "server frame is masked",
      );
    }
    if (length === 126) {
      const ext = await this.#exactly(2);
      length = (ext[0] << 8) | ext[1];
    } else if (length === 127) {
      const ext = await this.#exactly(8);
      const view = new DataView(ext.buffer, ext.byteOffset, 8);
      const high = view.getUint32(0);
      if (high >= 0x200000) this.#protocolError(CloseCode.tooBig, "frame length is out of range");
      length = high * 2 ** 32 + view.getUint32(4);
    }
    const key = masked ? (await this.#exactly(4)).slice() : null;
    if (opcode >= 0x8) {
      if (!fin || length > 125) {
        this.#protocolError(CloseCode.protocolError, "control frame is fragmented or longer than 125 bytes");
      }
      const payload = length === 0 ? new Uint8Array(0) : (await this.#exactly(length)).slice();
      if (key) applyMask(payload, key, 0);
      this.#control(opcode, payload);
      return;
    }
    if (opcode === OP_TEXT) {
      this.#protocolError(
        CloseCode.unsupportedData,
        "text frame received; this connection carries binary messages only",
      );
    }
    if (opcode === OP_BINARY) {
      if (this.#inMessage) {
        this.#protocolError(CloseCode.protocolError, "new message started before the previous one ended");
      }
    } else if (opcode === OP_CONTINUATION) {
      if (!this.#inMessage) this.#protocolError(CloseCode.protocolError, "continuation frame outside a message");
    } else {
      this.#protocolError(CloseCode.protocolError, `unknown opcode ${opcode}`);
    }
    if (length > this.#maxFrame) {
      this.#protocolError(CloseCode.tooBig, `frame of ${length} bytes is over the limit of ${this.#maxFrame}`);
    }
    this.#inMessage = !fin;
    this.#remaining = length;
    this.#maskKey = key;
    this.#phase = 0;
  }

  #control(opcode: number, payload: Uint8Array): void {
    if (opcode === OP_PING) {
      this.#queuePong(payload);
    } else if (opcode === OP_PONG) {
      const index = this.#pings.findIndex((ping) => equalBytes(ping.payload, payload));
      // A Pong answers its Ping and every one before it (RFC 6455 §5.5.3).
      for (const ping of this.#pings.splice(0, index + 1)) ping.resolve();
    } else if (opcode === OP_CLOSE) {
      if (payload.length === 1) this.#protocolError(CloseCode.protocolError, "close frame with a 1-byte payload");
      const code = payload.length >= 2 ? (payload[0] << 8) | payload[1] : 1005;
      const reason = new TextDecoder().decode(payload.subarray(2));
      this.#peerClosed = true;
      if (code !== 1000 && code !== 1001 && code !== 1005) {
        // Not a clean end: what came before may be cut short.
        this.#error = new WebSocketProtocolError(
          `peer closed the WebSocket with status ${code}${reason ? ` (${reason})` : ""}`,
          code,
        );
        this.#shutDown(code === CloseCode.protocolError ? code : CloseCode.normal, "");
        throw this.#error;
      }
      if (this.#sentClose) this.#shutDown(CloseCode.normal, "");
    } else {
      this.#protocolError(CloseCode.protocolError, `unknown control opcode ${opcode}`);
    }
  }

  /** Up to `max` bytes, at least one; reads the inner connection when nothing is pending. */
  async #take(max: number): Promise<Uint8Array> {
    let pending = this.#pending;
    while (pending === null) {
      const chunk = await this.#inner.read().catch((error) => {
        throw this.#fail(error instanceof ConnectionClosedError ? error : new ConnectionClosedError(String(error)));
      });
      if (chunk === null) {
        throw this.#fail(new ConnectionClosedError("WebSocket connection ended without a Close frame"));
      }
      if (chunk.length > 0) pending = chunk;
    }
    if (pending.length <= max) {
      this.#pending = null;
      return pending;
    }
    this.#pending = pending.subarray(max);
    return pending.subarray(0, max);
  }

  /** Exactly `n` bytes (small: headers, control payloads). */
  async #exactly(n: number): Promise<Uint8Array> {
    const first = await this.#take(n);
    if (first.length === n) return first;
    const out = new Uint8Array(n);
    out.set(first);
    let at = first.length;
    while (at < n) {
      const more = await this.#take(n - at);
      out.set(more, at);
      at += more.length;
    }
    return out;
  }

  /** Closes with `code` and throws: the peer broke the protocol. */
  #protocolError(code: number, message: string): never {
    const error = new WebSocketProtocolError(`WebSocket protocol error: ${message}`, code);
    this.#fail(error);
    this.#shutDown(code, message.slice(0, 120));
    throw error;
  }

  // ---- Writing ----

  /** Writes frames under the write lock; rejects if the inner connection fails. */
  #send(parts: Uint8Array[]): Promise<void> {
    this.#writesInFlight++;
    const run = this.#writeLock.then(async () => {
      for (const part of parts) await this.#inner.write(part);
    });
    this.#writeLock = run.catch(() => {});
    return run.finally(() => this.#writesInFlight--);
  }

  #queuePong(payload: Uint8Array): void {
    if (this.#sentClose || this.#done) return;
    // Only the latest Ping needs an answer (RFC 6455 §5.5.3); one Pong at a time.
    const queued = this.#pongPayload !== null;
    this.#pongPayload = payload;
    if (queued) return;
    this.#writeLock.then(() => {
      const latest = this.#pongPayload;
      this.#pongPayload = null;
      if (latest === null || this.#sentClose || this.#done) return;
      this.#send(encodeFrame(true, OP_PONG, latest, this.#role === "client")).catch(() => {});
    });
  }

  #sendClose(code: number, reason: string): Promise<void> {
    this.#sentClose = true;
    const text = new TextEncoder().encode(reason);
    const payload = new Uint8Array(2 + text.length);
    payload[0] = code >>> 8;
    payload[1] = code & 0xff;
    payload.set(text, 2);
    this.#closeFrame = this.#send(encodeFrame(true, OP_CLOSE, payload, this.#role === "client"));
    return this.#closeFrame;
  }

  // ---- Endings ----

  /**
   * Ends the connection: our Close frame (unless sent already), then the
   * inner connection once it is out. A write in progress may be stuck on a
   * peer that does not read, and the Close frame would wait behind it, so
   * then the inner connection is closed at once; so it is if the Close frame
   * itself takes longer than the grace period.
   */
  #shutDown(code: number, reason: string): void {
    if (this.#done) return;
    if (this.#closeFrame === null) {
      if (this.#writesInFlight > 0) return this.#closeInner();
      this.#sendClose(code, reason);
    } else if (this.#writesInFlight > 1) {
      return this.#closeInner();
    }
    const timer = setTimeout(() => this.#closeInner(), CLOSE_GRACE);
    // A safety net only: it must not keep the process alive where timers can say so.
    (timer as { unref?: () => void }).unref?.();
    const done = () => {
      clearTimeout(timer);
      this.#closeInner();
    };
    this.#closeFrame!.then(done, done);
  }

  #closeInner(): void {
    this.#inner.close();
    this.#release();
  }

  #fail(error: Error): Error {
    if (!this.#error) this.#error = error;
    return this.#error;
  }

  #failPings(error: Error): void {
    for (const ping of this.#pings.splice(0)) ping.reject(error);
  }

  #release(): void {
    if (this.#done) return;
    this.#done = true;
    this.#failPings(new ConnectionClosedError("connection closed"));
    this.#closed.resolve();
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---- The HTTP upgrade ----

const encoder = new TextEncoder();

/** Bytes as text, one char per byte (HTTP heads are ASCII; nothing here is lost or rejected by decoding). */
function latin1(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode(...bytes.subarray(i, Math.min(i + 4096, bytes.length)));
  }
  return out;
}

function base64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

/** `Sec-WebSocket-Accept` for a key: base64 of SHA-1 of key + GUID. */
export async function acceptKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", encoder.encode(key + GUID));
  return base64(new Uint8Array(digest));
}

/**
 * Reads an HTTP head (up to the blank line) from `conn`.
 *
 * @returns the head's text and the bytes read past it
 * @throws {WebSocketHandshakeError} with status 431 when it exceeds `max` bytes, or when the connection ends first
 */
async function readHead(
  conn: Conn,
  first: Uint8Array | null,
  max: number,
): Promise<{ head: string; rest: Uint8Array }> {
  let buffer = new Uint8Array(0);
  let chunk: Uint8Array | null = first && first.length > 0 ? first : await conn.read();
  for (;;) {
    if (chunk === null) {
      throw new WebSocketHandshakeError(
        buffer.length === 0
          ? "connection ended before the HTTP upgrade"
          : "connection ended in the middle of the HTTP head",
      );
    }
    const joined = new Uint8Array(buffer.length + chunk.length);
    joined.set(buffer);
    joined.set(chunk, buffer.length);
    // The blank line may straddle the previous chunk and this one.
    const end = findHeadEnd(joined, Math.max(0, buffer.length - 3));
    buffer = joined;
    if (end >= 0) {
      if (end > max) throw new WebSocketHandshakeError(`HTTP head is over the limit of ${max} bytes`, 431);
      return { head: latin1(buffer.subarray(0, end)), rest: buffer.slice(end + 4) };
    }
    if (buffer.length > max) throw new WebSocketHandshakeError(`HTTP head is over the limit of ${max} bytes`, 431);
    chunk = await conn.read();
  }
}

function findHeadEnd(bytes: Uint8Array, from: number): number {
  for (let i = from; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Parses header lines strictly: `name: value`, no folding, no space before the colon. */
function parseHeaders(lines: string[]): Map<string, string> | string {
  const headers = new Map<string, string>();
  const seen = new Set<string>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0) return `malformed header line ${JSON.stringify(line.slice(0, 60))}`;
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) return `malformed header name ${JSON.stringify(name.slice(0, 60))}`;
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (hasControlCharacter(value)) return `control character in header ${name}`;
    const key = name.toLowerCase();
    if (seen.has(key)) {
      if (SINGLE_HEADERS.has(key)) return `header ${name} appears more than once`;
      headers.set(key, `${headers.get(key)}, ${value}`);
    } else {
      seen.add(key);
      headers.set(key, value);
    }
  }
  return headers;
}

/** Whether text holds a control character other than tab (CR and LF included). */
function hasControlCharacter(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return true;
  }
  return false;
}

const SINGLE_HEADERS = new Set([
  "host",
  "upgrade",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-accept",
]);

/** Whether a comma-separated header value holds `token` (case-insensitive). */
function hasToken(value: string | undefined, token: string): boolean {
  return value !== undefined && value.split(",").some((part) => part.trim().toLowerCase() === token);
}

const REASONS: Record<number, string> = {
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  426: "Upgrade Required",
  431: "Request Header Fields Too Large",
};

/** Answers with an HTTP error, closes `conn`, and returns the error to throw. */
async function refuse(conn: Conn, status: number, message: string, extra = ""): Promise<WebSocketHandshakeError> {
  const body = `${message}\n`;
  const response = `HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}\r\n` +
    `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${encoder.encode(body).length}\r\n` +
    `Connection: close\r\n${extra}\r\n${body}`;
  try {
    await conn.write(encoder.encode(response));
    await conn.closeWrite();
  } catch {
    // The peer left; nothing more to tell it.
  }
  conn.close();
  return new WebSocketHandshakeError(`WebSocket upgrade refused with ${status}: ${message}`, status);
}

/** Options for {@linkcode wsAccept}. */
export interface WsAcceptOptions {
  /** Accept only this path (the query is ignored); others get 404. Default: any. */
  path?: string;
  /** Largest upgrade request head, in bytes. Default 8 KiB. */
  maxHeaderBytes?: number;
  /** Largest frame payload accepted, in bytes. Default 16 MiB. */
  maxFrameSize?: number;
}

/**
 * Server side of the upgrade: reads and checks the HTTP/1.1 request, answers
 * `101 Switching Protocols`, and returns the WebSocket. A bad request gets
 * 400 (404 for another path, 405 for a method other than GET, 426 for a
 * version other than 13, 431 for an oversize head) and the connection is
 * closed. How long the client may take is the caller's to limit (close
 * `conn` to give up).
 *
 * @param conn a fresh connection (plain or TLS)
 * @param firstBytes bytes already read from `conn`, such as by {@linkcode sniffWebSocket}
 * @param options path check and limits
 * @throws {WebSocketHandshakeError} saying what was wrong with the request
 */
export async function wsAccept(
  conn: Conn,
  firstBytes?: Uint8Array | null,
  options: WsAcceptOptions = {},
): Promise<WebSocketConn> {
  let head: string, rest: Uint8Array;
  try {
    ({ head, rest } = await readHead(conn, firstBytes ?? null, options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES));
  } catch (error) {
    if (error instanceof WebSocketHandshakeError && error.status) throw await refuse(conn, error.status, error.message);
    conn.close();
    throw error instanceof WebSocketHandshakeError ? error : new WebSocketHandshakeError(String(error));
  }
  const [requestLine, ...lines] = head.split("\r\n");
  const parts = requestLine.split(" ");
  if (parts.length !== 3 || !TOKEN.test(parts[0]) || !/^HTTP\/1\.\d$/.test(parts[2])) {
    throw await refuse(conn, 400, `malformed request line ${JSON.stringify(requestLine.slice(0, 80))}`);
  }
  const [method, target, version] = parts;
  if (version === "HTTP/1.0") throw await refuse(conn, 400, "WebSocket needs HTTP/1.1");
  if (method !== "GET") {
    throw await refuse(conn, 405, `method ${method} is not allowed; a WebSocket upgrade is a GET`, "Allow: GET\r\n");
  }
  if (!target.startsWith("/") || /[^\x21-\x7e]/.test(target)) {
    throw await refuse(conn, 400, `request target ${JSON.stringify(target.slice(0, 80))} is not a path`);
  }
  const headers = parseHeaders(lines);
  if (typeof headers === "string") throw await refuse(conn, 400, headers);
  const path = target.split("?")[0];
  if (options.path !== undefined && path !== options.path) {
    throw await refuse(conn, 404, `no WebSocket endpoint at ${path}`);
  }
  if (!headers.get("host")) throw await refuse(conn, 400, "Host header is missing");
  if (!hasToken(headers.get("upgrade"), "websocket")) {
    throw await refuse(conn, 400, "not a WebSocket upgrade: Upgrade: websocket is missing");
  }
  if (!hasToken(headers.get("connection"), "upgrade")) {
    throw await refuse(conn, 400, "not a WebSocket upgrade: Connection: Upgrade is missing");
  }
  const wsVersion = headers.get("sec-websocket-version");
  if (wsVersion !== "13") {
    throw await refuse(
      conn,
      426,
      `Sec-WebSocket-Version ${
        wsVersion === undefined ? "is missing" : JSON.stringify(wsVersion) + " is not supported"
      }; use 13`,
      "Sec-WebSocket-Version: 13\r\n",
    );
  }
  const key = headers.get("sec-websocket-key");
  if (key === undefined || !/^[A-Za-z0-9+/]{22}==$/.test(key)) {
    throw await refuse(
      conn,
      400,
      `Sec-WebSocket-Key ${key === undefined ? "is missing" : "is not 16 bytes of base64"}`,
    );
  }
  const response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n\r\n`;
  try {
    await conn.write(encoder.encode(response));
  } catch (error) {
    conn.close();
    throw new WebSocketHandshakeError(
      `client left during the upgrade: ${error instanceof Error ? error.message : error}`,
    );
  }
  return new WebSocketConn(conn, "server", rest, {
    maxFrameSize: options.maxFrameSize,
    request: { method, target, path, headers },
  });
}

/** Options for {@linkcode wsConnect}. */
export interface WsConnectOptions {
  /** The `Host` header: the server's name, with `:port` if not the scheme's default. */
  host: string;
  /** Request target. Default `/`. */
  path?: string;
  /** Extra request headers, such as `Authorization`. */
  headers?: Record<string, string>;
  /** Largest response head, in bytes. Default 8 KiB. */
  maxHeaderBytes?: number;
  /** Largest frame payload accepted, in bytes. Default 16 MiB. */
  maxFrameSize?: number;
}

/**
 * Client side of the upgrade: sends the request with a fresh random key,
 * checks the `101` answer and its `Sec-WebSocket-Accept`, and returns the
 * WebSocket. On failure `conn` is closed. How long the server may take is
 * the caller's to limit (close `conn` to give up).
 *
 * @param conn a fresh connection to the server (plain, or TLS for wss)
 * @param options `Host`, path and extra headers
 * @throws {WebSocketHandshakeError} saying what the server answered instead
 */
export async function wsConnect(conn: Conn, options: WsConnectOptions): Promise<WebSocketConn> {
  const path = options.path ?? "/";
  const where = `${options.host}${path}`;
  if (!path.startsWith("/") || /[^\x21-\x7e]/.test(path)) {
    conn.close();
    throw new WebSocketHandshakeError(
      `WebSocket path ${JSON.stringify(path)} must start with / and hold no spaces or control characters`,
    );
  }
  let extra = "";
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    if (!TOKEN.test(name) || hasControlCharacter(value)) {
      conn.close();
      throw new WebSocketHandshakeError(`header ${JSON.stringify(name)} is not a valid HTTP header`);
    }
    extra += `${name}: ${value}\r\n`;
  }
  const key = base64(crypto.getRandomValues(new Uint8Array(16)));
  const request = `GET ${path} HTTP/1.1\r\nHost: ${options.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`;
  const fail = (message: string, status?: number) => {
    conn.close();
    return new WebSocketHandshakeError(`WebSocket upgrade at ${where} failed: ${message}`, status);
  };
  let head: string, rest: Uint8Array;
  try {
    await conn.write(encoder.encode(request));
    ({ head, rest } = await readHead(conn, null, options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES));
  } catch (error) {
    throw fail(error instanceof Error ? error.message : String(error));
  }
  const [statusLine, ...lines] = head.split("\r\n");
  const status = /^HTTP\/1\.\d (\d{3})(?: (.*))?$/.exec(statusLine);
  if (!status) throw fail(`the server did not answer with HTTP: ${JSON.stringify(statusLine.slice(0, 80))}`);
  const code = Number(status[1]);
  if (code !== 101) {
    const body = latin1(rest).trim().split("\n")[0].slice(0, 200);
    const hint = code === 404 ? "; check the path" : code === 401 || code === 403 ? "; check the credentials" : "";
    throw fail(`the server answered ${code} ${status[2] ?? ""}${body ? ` (${body})` : ""} instead of 101${hint}`, code);
  }
  const headers = parseHeaders(lines);
  if (typeof headers === "string") throw fail(`bad response: ${headers}`);
  if (!hasToken(headers.get("upgrade"), "websocket") || !hasToken(headers.get("connection"), "upgrade")) {
    throw fail("the 101 answer lacks Upgrade: websocket or Connection: Upgrade");
  }
  if (headers.get("sec-websocket-accept") !== await acceptKey(key)) {
    throw fail(
      "Sec-WebSocket-Accept does not match the key sent; a proxy or server that is not a WebSocket server answered",
    );
  }
  if (headers.has("sec-websocket-extensions") || headers.has("sec-websocket-protocol")) {
    throw fail("the server chose an extension or subprotocol that was not offered");
  }
  return new WebSocketConn(conn, "client", rest, { maxFrameSize: options.maxFrameSize });
}

// ---- Serving WebSocket and raw o3sr on one port ----

/**
 * A Conn that returns `prefix` from its first read, then reads `conn`. It
 * borrows, and reads by callback, where `conn` lends: the matcher's relay
 * sessions come through here, and their session reads by callback only if
 * the connection offers it.
 */
export function prefixConn(conn: Conn, prefix: Uint8Array | null): Conn {
  if (prefix === null || prefix.length === 0) return conn;
  return lends(conn) ? new LendingPrefixConn(conn, prefix) : new PrefixConn(conn, prefix);
}

// Classes, not an object of closures: an event or pool relay session holds
// one per client, and a dozen closures, getters and their scope cost each one
// several hundred bytes more.

/** Replays a first chunk, then reads the connection it wraps. */
class PrefixConn implements Conn {
  readonly #conn: Conn;
  #prefix: Uint8Array | null;

  constructor(conn: Conn, prefix: Uint8Array) {
    this.#conn = conn;
    this.#prefix = prefix;
  }

  get localAddr(): Addr {
    return this.#conn.localAddr;
  }

  get remoteAddr(): Addr {
    return this.#conn.remoteAddr;
  }

  get closed(): Promise<void> {
    return this.#conn.closed;
  }

  /** The prefix the first time, then null. */
  protected takePrefix(): Uint8Array | null {
    const chunk = this.#prefix;
    this.#prefix = null;
    return chunk;
  }

  read(): Promise<Uint8Array | null> {
    const chunk = this.takePrefix();
    return chunk === null ? this.#conn.read() : Promise.resolve(chunk);
  }

  write(chunk: Uint8Array): Promise<void> {
    return this.#conn.write(chunk);
  }

  closeWrite(): Promise<void> {
    return this.#conn.closeWrite();
  }

  close(): void {
    this.#conn.close();
  }

  reset(): void {
    this.#conn.reset();
  }
}

/** A {@linkcode PrefixConn} over a connection that lends its chunks: lends them too. */
class LendingPrefixConn extends PrefixConn {
  readonly #lender: Lender;
  /** The prefix while it is borrowed: it was never the lender's, so it is not given back to it. */
  #prefixOut: Uint8Array | null = null;

  constructor(lender: Lender, prefix: Uint8Array) {
    super(lender, prefix);
    this.#lender = lender;
  }

  readBorrowed(): Promise<Uint8Array | null> {
    const chunk = this.#lendPrefix();
    return chunk === null ? this.#lender.readBorrowed() : Promise.resolve(chunk);
  }

  readBorrowedThen(onChunk: (chunk: Uint8Array | null) => void, onError: (error: Error) => void): void {
    const chunk = this.#lendPrefix();
    if (chunk !== null) onChunk(chunk);
    else if (this.#lender.readBorrowedThen) this.#lender.readBorrowedThen(onChunk, onError);
    else this.#lender.readBorrowed().then(onChunk, onError);
  }

  giveBack(chunk: Uint8Array): void {
    if (chunk === this.#prefixOut) this.#prefixOut = null;
    else this.#lender.giveBack(chunk);
  }

  #lendPrefix(): Uint8Array | null {
    const chunk = this.takePrefix();
    if (chunk !== null) this.#prefixOut = chunk;
    return chunk;
  }
}

/**
 * Reads the first bytes of a fresh connection and says whether they start an
 * HTTP request (an ASCII method such as `GET `: `websocket`) or anything
 * else (`raw`: an o3sr HELLO starts with the version, bytes `00 00 00 02`).
 * The returned Conn replays those bytes, so it can go to {@linkcode wsAccept}
 * or to the raw protocol as if nothing was read. How long the peer may stay
 * silent is the caller's to limit (close `conn` to give up).
 *
 * @param conn a fresh connection
 */
export async function sniffWebSocket(conn: Conn): Promise<{ kind: "websocket" | "raw"; conn: Conn }> {
  const first = await conn.read();
  // One byte decides: o3sr frames start with 0x00, HTTP methods with A-Z.
  const kind = first !== null && first.length > 0 && first[0] >= 0x41 && first[0] <= 0x5a ? "websocket" : "raw";
  return { kind, conn: prefixConn(conn, first) };
}

// ---- As a transport ----

/** Where a `ws://` or `wss://` URL points. */
export interface WebSocketEndpoint {
  /** Host to dial (IPv6 without brackets). */
  hostname: string;
  /** Port to dial: the URL's, else 80 for ws and 443 for wss. */
  port: number;
  /** Request target: path and query. */
  path: string;
  /** Whether it is `wss://`: dial with `tls` in the connect options. */
  tls: boolean;
}

/**
 * Parses a `ws://host[:port]/path` or `wss://…` URL into what
 * {@linkcode wsTransport} needs:
 *
 * ```ts
 * const at = parseWebSocketUrl("wss://hub.example.com/o3sr");
 * const conn = await wsTransport(transport, { path: at.path })
 *   .connect({ hostname: at.hostname, port: at.port, tls: at.tls ? { ca } : undefined });
 * ```
 *
 * @throws {Error} naming what is wrong with the URL
 */
export function parseWebSocketUrl(url: string): WebSocketEndpoint {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`${JSON.stringify(url)} is not a URL; expected ws://host[:port]/path or wss://host[:port]/path`);
  }
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    throw new Error(`${JSON.stringify(url)} is not a WebSocket URL; expected ws:// or wss://`);
  }
  if (parsed.username || parsed.password) {
    throw new Error(`${JSON.stringify(url)} holds credentials; pass them as a header instead of in the URL`);
  }
  if (parsed.hash) throw new Error(`${JSON.stringify(url)} has a #fragment, which WebSocket URLs must not have`);
  const tls = parsed.protocol === "wss:";
  return {
    hostname: parsed.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: parsed.port ? Number(parsed.port) : tls ? 443 : 80,
    path: `${parsed.pathname || "/"}${parsed.search}`,
    tls,
  };
}

/** Options for {@linkcode wsTransport}. */
export interface WsTransportOptions {
  /** The endpoint's path: listeners accept only it (others get 404), clients request it. Default `/`. */
  path?: string;
  /** Extra request headers clients send, such as `Authorization`. */
  headers?: Record<string, string>;
  /** Milliseconds an upgrade may take, on either side. Default 10 000. */
  handshakeTimeout?: number;
  /** Largest frame payload accepted, in bytes. Default 16 MiB. */
  maxFrameSize?: number;
}

/**
 * WebSocket over another transport. Listeners upgrade each accepted
 * connection in the background (a slow client never delays the others; a bad
 * request is answered, dropped, and reported to `onHandshakeError`);
 * `connect` dials and upgrades. Pass `tls` in the listen or connect options to
 * get `wss://` (TLS first, then the upgrade).
 *
 * ```ts
 * // relay: dial wss://hub.example.com:443/o3sr
 * const conn = await wsTransport(transport, { path: "/o3sr" })
 *   .connect({ hostname: "hub.example.com", port: 443, tls: {} });
 * ```
 *
 * @param inner TCP (or any transport) underneath
 * @param options path, headers and limits
 */
export function wsTransport(inner: Transport, options: WsTransportOptions = {}): Transport {
  const path = options.path ?? "/";
  const timeout = options.handshakeTimeout ?? DEFAULT_WS_HANDSHAKE_TIMEOUT;
  return {
    name: `ws+${inner.name}`,
    async listen(listenOptions: ListenOptions) {
      const listener = await inner.listen(listenOptions);
      return acceptInBackground(
        listener,
        (conn) => wsAccept(conn, null, { path, maxFrameSize: options.maxFrameSize }),
        { what: "WebSocket", timeout, onHandshakeError: listenOptions.onHandshakeError },
      );
    },
    async connect(connectOptions: ConnectOptions) {
      const conn = await inner.connect(connectOptions);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const host = formatAddr({ hostname: connectOptions.hostname, port: connectOptions.port });
      try {
        return await Promise.race([
          wsConnect(conn, { host, path, headers: options.headers, maxFrameSize: options.maxFrameSize }),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => {
              conn.reset();
              reject(
                new WebSocketHandshakeError(
                  `WebSocket upgrade at ${host}${path} did not complete within ${timeout} ms`,
                ),
              );
            }, timeout);
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
