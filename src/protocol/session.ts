/**
 * A session: many streams over one connection. It runs the handshake, routes
 * frames to streams, answers heartbeats, and ends cleanly (go-away) or on the
 * first protocol violation, without disturbing other sessions.
 *
 * @module
 */

import { Deferred, reportLater, RESOLVED } from "../async.ts";
import { errorMessage, toError } from "../errors.ts";
import { formatDuration } from "../log.ts";
import { type Addr, type Conn, ConnectionClosedError, type Lender, lends } from "../transport/types.ts";
import { EMPTY, FrameDecoder, readUint32 } from "./codec.ts";
import { ProtocolError } from "./errors.ts";
import {
  type Frame,
  FrameType,
  frameTypeName,
  isKnownFrameType,
  MAX_PAYLOAD,
  MAX_STREAM_ID,
  MAX_WINDOW,
} from "./frame.ts";
import { Loan, Stream, type StreamHost } from "./stream.ts";
import { INITIAL_WINDOW, sharedWindowBudget, type WindowBudget } from "./window.ts";
import { FrameWriter } from "./writer.ts";

/** The JSON object each side sends in its HELLO frame. */
export interface Hello {
  /** Receive window the sender grants each new stream at first, in bytes; it may grant more later. */
  window: number;
  /** Largest payload the sender accepts in one frame (absent: the protocol's maximum). */
  maxFrame?: number;
  /** Any further fields: role, software version, extensions. */
  [key: string]: unknown;
}

/** Tunables of a session; every field has a default. */
export interface SessionOptions {
  /**
   * Which end of the connection this is. The dialer (relay) sends its HELLO
   * first; the acceptor (matcher) answers. Acceptor-opened streams get odd
   * ids, dialer-opened streams even ones, so ids never collide.
   */
  side: "dialer" | "acceptor";
  /** Fields for this side's HELLO (the window is added). */
  hello?: Record<string, unknown>;
  /** Inspects the peer's HELLO; throw to refuse the session with that message. */
  checkHello?: (hello: Hello) => void;
  /**
   * Acceptor: require an AUTH answer to this side's HELLO (which carries the
   * challenge) before the session opens. Throw to refuse; the peer is told
   * `refused: <message>`.
   */
  authenticate?: (answer: Record<string, unknown>) => Promise<void>;
  /**
   * Dialer: the AUTH answer to the acceptor's HELLO, or null (returned at
   * once, not as a promise) when it asked for none. Throw to give up.
   */
  answer?: (hello: Hello) => Promise<Record<string, unknown>> | null;
  /**
   * Largest receive window a stream grows to, in bytes. Streams start with
   * {@linkcode INITIAL_WINDOW} (or this, if smaller) and grow while their
   * readers keep up and `windowBudget` has room.
   * @default {4194304}
   */
  window?: number;
  /**
   * Where stream windows grow from beyond their initial size.
   * @default {sharedWindowBudget}
   */
  windowBudget?: WindowBudget;
  /**
   * Largest TRAFFIC payload this side sends.
   * @default {262144}
   */
  maxFramePayload?: number;
  /**
   * Largest payload accepted from the peer.
   * @default {MAX_PAYLOAD}
   */
  maxPayload?: number;
  /**
   * Queued outgoing bytes above which stream writers wait.
   * @default {262144}
   */
  writeHighWater?: number;
  /**
   * Milliseconds between PINGs; 0 disables heartbeats.
   * @default {10000}
   */
  heartbeatInterval?: number;
  /**
   * Milliseconds of silence after which the peer is declared dead; checked at
   * each heartbeat, and only while one of our PINGs is unanswered.
   * @default {30000}
   */
  heartbeatTimeout?: number;
  /**
   * Milliseconds allowed for the handshake.
   * @default {10000}
   */
  handshakeTimeout?: number;
  /**
   * Streams open at once; further CONNECTs are refused with a reset.
   * @default {65536}
   */
  maxStreams?: number;
  /** Called for each stream the peer opens. Without it, such streams are refused. */
  onStream?: (stream: Stream) => void;
}

/** The session options a matcher or relay passes through from its settings (`maxFrame` is `maxPayload`). */
export interface SessionTunables {
  /** Largest per-stream receive window in bytes. @default {4194304} */
  window?: number;
  /** Milliseconds between heartbeats; 0 disables them. @default {10000} */
  heartbeatInterval?: number;
  /** Milliseconds of silence before the peer is declared dead. @default {30000} */
  heartbeatTimeout?: number;
  /** Milliseconds allowed for a session's handshake. @default {10000} */
  handshakeTimeout?: number;
  /** Streams open at once on one session. @default {10000} */
  maxStreams?: number;
  /** Largest frame payload accepted from the peer. @default {1024000} */
  maxFrame?: number;
}

/** Picks the {@linkcode SessionTunables} out of a larger options object, as session options. */
export function tunablesOf(options: SessionTunables): Partial<SessionOptions> {
  const { window, heartbeatInterval, heartbeatTimeout, handshakeTimeout, maxStreams, maxFrame } = options;
  return { window, heartbeatInterval, heartbeatTimeout, handshakeTimeout, maxStreams, maxPayload: maxFrame };
}

/** A snapshot of a session's counters. */
export interface SessionStats {
  /** Streams open now. */
  openStreams: number;
  /** Streams opened since the session began, by either side. */
  totalStreams: number;
  /** Stream payload bytes sent. */
  bytesSent: number;
  /** Stream payload bytes received. */
  bytesReceived: number;
  /** Last heartbeat round-trip time in milliseconds, or null before the first. */
  rttMs: number | null;
  /** When the session began (ms since the epoch). */
  since: number;
}

/** Session defaults, shared with config so that help texts show them. */
export const SESSION_DEFAULTS = {
  window: 4 * 1024 * 1024,
  maxFramePayload: MAX_PAYLOAD,
  writeHighWater: 256 * 1024,
  heartbeatInterval: 10_000,
  heartbeatTimeout: 30_000,
  handshakeTimeout: 10_000,
  maxStreams: 65_536,
} as const;

/** Smallest frame limit a peer may announce, so control frames always fit. */
const MIN_FRAME_LIMIT = 1024;

/** How long a graceful close waits for the peer's FIN. */
const LINGER = 1000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A PING's payload, its send time: filled in and copied into each PING frame as it is queued. */
const PING = new Uint8Array(8);
const PING_VIEW = new DataView(PING.buffer);

/**
 * Open streams by id. The first is kept in a field and a Map is made only for
 * more: a session of the pool or event channel carries one stream, and a Map,
 * even with one entry, costs it about 0.4 KB.
 */
class StreamTable {
  #firstId = 0;
  #first: Stream | null = null;
  #more: Map<number, Stream> | null = null;

  get size(): number {
    return (this.#first === null ? 0 : 1) + (this.#more === null ? 0 : this.#more.size);
  }

  get(id: number): Stream | undefined {
    if (this.#first !== null && this.#firstId === id) return this.#first;
    return this.#more?.get(id);
  }

  /** Adds a stream under an id not in use. */
  set(id: number, stream: Stream): void {
    if (this.#first === null) {
      this.#firstId = id;
      this.#first = stream;
    } else {
      (this.#more ??= new Map()).set(id, stream);
    }
  }

  delete(id: number): void {
    if (this.#first !== null && this.#firstId === id) {
      this.#first = null;
      // One from the Map takes the field, so a pool session whose registration
      // stream ends before its client's holds no Map for the client's stream.
      const more = this.#more;
      if (more === null) return;
      const [nextId, next] = more.entries().next().value!;
      this.#firstId = nextId;
      this.#first = next;
      more.delete(nextId);
    } else {
      this.#more?.delete(id);
    }
    if (this.#more?.size === 0) this.#more = null;
  }

  /** The streams, as a list of their own (it may change while the caller goes through it). */
  list(): Stream[] {
    const streams = this.#more === null ? [] : [...this.#more.values()];
    if (this.#first !== null) streams.unshift(this.#first);
    return streams;
  }

  clear(): void {
    this.#first = null;
    this.#more = null;
  }
}

/**
 * Ticks of a heartbeat group per interval. Each tick sends the PINGs that are
 * due, so with thousands of sessions (pool, event) a tick sends a thirty-second
 * of them rather than a burst of all; a PING goes out at most that much late.
 */
const HEARTBEAT_TICKS = 32;
/** Shortest tick, for the short intervals of tests. */
const MIN_HEARTBEAT_TICK = 5;

/** Sends a session its heartbeat tick; set by {@linkcode Session}, which keeps the work private. */
let beat: (session: Session, now: number, interval: number) => void;

/**
 * The sessions with one heartbeat interval, on one timer instead of one each:
 * with the pool and event channels there is a session per client.
 */
class HeartbeatGroup {
  static readonly #groups = new Map<number, HeartbeatGroup>();
  readonly #interval: number;
  readonly #sessions = new Set<Session>();
  readonly #timer: ReturnType<typeof setInterval>;

  private constructor(interval: number) {
    this.#interval = interval;
    this.#timer = setInterval(() => {
      const now = Date.now();
      // A session that ends here leaves the set; iterating goes on past it.
      for (const session of this.#sessions) {
        try {
          beat(session, now, interval);
        } catch (error) {
          // Reported as a timer of its own would be, without keeping the other sessions from their beat.
          reportLater(error);
        }
      }
    }, Math.max(MIN_HEARTBEAT_TICK, Math.floor(interval / HEARTBEAT_TICKS)));
  }

  static join(session: Session, interval: number): HeartbeatGroup {
    let group = HeartbeatGroup.#groups.get(interval);
    if (group === undefined) HeartbeatGroup.#groups.set(interval, group = new HeartbeatGroup(interval));
    group.#sessions.add(session);
    return group;
  }

  leave(session: Session): void {
    this.#sessions.delete(session);
    if (this.#sessions.size > 0) return;
    // No timer left behind to keep the process alive.
    clearInterval(this.#timer);
    HeartbeatGroup.#groups.delete(this.#interval);
  }
}

/** Streams multiplexed over one connection. */
export class Session implements StreamHost {
  /** The frame writer shared by all streams. */
  readonly writer: FrameWriter;
  /** Largest TRAFFIC payload this side sends: its own limit or the peer's, whichever is smaller. */
  maxFramePayload: number;
  readonly #conn: Conn;
  readonly #options: SessionOptions;
  /** Largest receive window a stream grows to. */
  readonly maxWindow: number;
  /** Receive window a stream starts with, as announced in HELLO. */
  readonly #window: number;
  readonly windowBudget: WindowBudget;
  readonly #streams = new StreamTable();
  readonly #decoder: FrameDecoder;
  /** The borrowed chunk being decoded, if the connection lends its chunks. */
  #loan: Loan | null = null;
  #state: "handshake" | "open" | "closed" = "handshake";
  /** Where the AUTH step stands: not needed, or waiting for the peer's AUTH frame. */
  #authWait: "none" | "answer" | "consent" = "none";
  #peerHello: Hello | null = null;
  #nextId: number;
  #lastPeerId = 0;
  #sentGoAway = false;
  #receivedGoAway = false;
  #lastReceived = Date.now();
  /** A PING went out and nothing has arrived since. */
  #awaitingPeer = false;
  /** Its heartbeat group while heartbeats run, and when the next PING is due. */
  #heartbeats: HeartbeatGroup | null = null;
  #nextPing = 0;
  #handshakeTimer: ReturnType<typeof setTimeout> | null = null;
  #stats: SessionStats = {
    openStreams: 0,
    totalStreams: 0,
    bytesSent: 0,
    bytesReceived: 0,
    rttMs: null,
    since: Date.now(),
  };
  #closeReason = "";
  #drainReason = "";
  /** Whether the peer's end of the connection was read; a Deferred while a graceful close waits for it. */
  #peerEnded: Deferred<void> | boolean = false;
  #closeError: Error | null = null;
  // Quiet: a failed handshake is observed through `closed` too. Dropped once
  // the handshake is done: a session of the pool or event channel lives as
  // long as its client, and an awaited promise with it.
  #ready: Deferred<Hello> | null = new Deferred<Hello>(true);
  /** Made when someone asks for `closed`: sessions of the pool and event channels are watched with whenClosed. */
  #closed: Deferred<string> | null = null;
  #closeListeners: Array<(reason: string) => void> | null = null;

  /** Resolves with the peer's HELLO once the handshake is complete; rejects if the session ends first. */
  get ready(): Promise<Hello> {
    return this.#ready?.promise ?? Promise.resolve(this.#peerHello!);
  }

  /** Resolves with the reason once the session has ended. */
  get closed(): Promise<string> {
    if (this.#closed === null) {
      this.#closed = new Deferred<string>();
      if (this.#state === "closed") this.#closed.resolve(this.#closeReason);
    }
    return this.#closed.promise;
  }

  /**
   * Calls `listener` with the reason once the session has ended, as
   * {@linkcode Session.closed} resolves, but without a promise: a matcher or
   * relay with a session per client (pool, event) spares each one a promise,
   * its resolving functions and a reaction. Called in a microtask, never
   * inside the call that ended the session; `listener` must not throw.
   *
   * @param listener called once, with the reason
   */
  whenClosed(listener: (reason: string) => void): void {
    if (this.#state !== "closed") {
      (this.#closeListeners ??= []).push(listener);
      return;
    }
    const reason = this.#closeReason;
    queueMicrotask(() => listener(reason));
  }

  /**
   * Starts a session over `conn`: reads at once and, as the dialer, sends HELLO.
   *
   * @param conn an open connection the session now owns
   * @param options side and tunables
   * @throws {RangeError} on a window outside 1..2^31-1
   */
  constructor(conn: Conn, options: SessionOptions) {
    this.#conn = conn;
    this.#options = options;
    this.maxWindow = options.window ?? SESSION_DEFAULTS.window;
    if (!Number.isInteger(this.maxWindow) || this.maxWindow < 1 || this.maxWindow > MAX_WINDOW) {
      throw new RangeError(`Cannot start session: window must be 1-${MAX_WINDOW} bytes, received ${this.maxWindow}`);
    }
    this.#window = Math.min(INITIAL_WINDOW, this.maxWindow);
    this.windowBudget = options.windowBudget ?? sharedWindowBudget;
    this.maxFramePayload = Math.min(
      options.maxFramePayload ?? SESSION_DEFAULTS.maxFramePayload,
      MAX_PAYLOAD,
    );
    this.#nextId = options.side === "acceptor" ? 1 : 2;
    this.writer = new FrameWriter(
      conn,
      options.writeHighWater ?? SESSION_DEFAULTS.writeHighWater,
      (error) => this.#end(`write failed: ${errorMessage(error)}`, toError(error)),
    );
    this.#decoder = new FrameDecoder((frame) => this.#dispatch(frame), {
      maxPayload: options.maxPayload,
      splitTraffic: true,
    });
    const handshakeTimeout = options.handshakeTimeout ?? SESSION_DEFAULTS.handshakeTimeout;
    if (handshakeTimeout > 0) {
      this.#handshakeTimer = setTimeout(() => {
        if (this.#state === "handshake") {
          this.#fail(new ProtocolError("handshake", `no handshake within ${handshakeTimeout} ms`));
        }
      }, handshakeTimeout);
    }
    if (options.side === "dialer") this.#sendHello();
    this.#startReading();
  }

  /** This end's address. */
  get localAddr(): Addr {
    return this.#conn.localAddr;
  }

  /** The peer's address. */
  get remoteAddr(): Addr {
    return this.#conn.remoteAddr;
  }

  /** The peer's HELLO, once received. */
  get peerHello(): Hello | null {
    return this.#peerHello;
  }

  /** Whether new streams may be opened on this session. */
  get acceptingStreams(): boolean {
    return this.#state === "open" && !this.#sentGoAway && !this.#receivedGoAway;
  }

  /** Whether the session has ended. */
  get isClosed(): boolean {
    return this.#state === "closed";
  }

  /** Streams open now. */
  get openStreams(): number {
    return this.#streams.size;
  }

  /** Why the session ended, empty while it runs. */
  get closeReason(): string {
    return this.#closeReason;
  }

  /** The protocol violation or I/O error that ended the session, if any. */
  get closeError(): Error | null {
    return this.#closeError;
  }

  /** A snapshot of the session's counters. */
  stats(): SessionStats {
    return { ...this.#stats, openStreams: this.#streams.size };
  }

  /**
   * Opens a stream to the peer.
   *
   * @param meta optional metadata, sent as JSON in the CONNECT frame
   * @returns the new stream
   * @throws {Error} if the session is not open or either side is going away
   */
  openStream(meta?: Record<string, unknown>): Stream {
    if (!this.acceptingStreams) {
      throw new Error(`Cannot open stream: session is ${this.#state === "open" ? "going away" : this.#state}`);
    }
    const id = this.#nextId;
    if (id > MAX_STREAM_ID) {
      this.goAway("stream ids exhausted");
      throw new Error("Cannot open stream: this session has used all stream ids; a new session is needed");
    }
    this.#nextId += 2;
    const stream = new Stream(this, id, this.#window, this.#peerHello!.window, meta, true);
    this.#streams.set(id, stream);
    this.#stats.totalStreams++;
    this.writer.frame(FrameType.CONNECT, id, meta ? encoder.encode(JSON.stringify(meta)) : EMPTY);
    return stream;
  }

  /**
   * Starts a graceful end: tells the peer no new streams will be opened or
   * accepted, and closes once the open streams have finished.
   */
  goAway(reason = "going away"): void {
    if (this.#state === "closed") return;
    this.#drainReason ||= reason;
    this.#sendGoAway(reason);
    this.#closeIfDrained();
  }

  /** Ends the session now; open streams fail. */
  close(reason = "closed"): void {
    this.#end(reason, null);
  }

  // ---- StreamHost ----

  /** @internal */
  release(stream: Stream): void {
    if (this.#streams.get(stream.id) !== stream) return;
    this.#streams.delete(stream.id);
    this.#closeIfDrained();
  }

  /** @internal */
  countBytes(sent: number, received: number): void {
    this.#stats.bytesSent += sent;
    this.#stats.bytesReceived += received;
  }

  // ---- Reading and dispatch ----

  /** Reads the connection until its end: by callbacks where it offers them (no promise per read), else in a loop. */
  #startReading(): void {
    const conn = this.#conn;
    // Borrowed chunks go back to the connection once every payload decoded
    // from them was given back by its stream's reader (see Loan).
    const lender = lends(conn) ? conn : null;
    if (lender?.readBorrowedThen === undefined) {
      this.#readLoop(lender);
      return;
    }
    let pumping = false;
    let again = false;
    const onChunk = (chunk: Uint8Array | null): void => {
      if (chunk === null) return this.#readEnded(null);
      try {
        this.#received(chunk, lender);
      } catch (error) {
        return this.#readEnded(error);
      }
      next();
    };
    const onError = (error: Error): void => this.#readEnded(error);
    // A chunk already queued comes back before readBorrowedThen returns: loop
    // here instead of recursing once per queued chunk.
    const next = (): void => {
      if (pumping) {
        again = true;
        return;
      }
      pumping = true;
      do {
        again = false;
        lender.readBorrowedThen!(onChunk, onError);
      } while (again);
      pumping = false;
    };
    next();
  }

  async #readLoop(lender: Lender | null): Promise<void> {
    let ended: unknown = null;
    try {
      for (;;) {
        const chunk = await (lender ? lender.readBorrowed() : this.#conn.read());
        if (chunk === null) break;
        this.#received(chunk, lender);
      }
    } catch (error) {
      ended = error;
    }
    this.#readEnded(ended);
  }

  /** A chunk arrived: its frames are dispatched. Throws a ProtocolError for a bad frame. */
  #received(chunk: Uint8Array, lender: Lender | null): void {
    // After the end, keep reading (and ignoring) until the peer's FIN, so
    // closing never resets a peer that still has our last frames unread.
    if (this.#state === "closed") {
      lender?.giveBack(chunk);
      return;
    }
    this.#lastReceived = Date.now();
    this.#awaitingPeer = false;
    const loan = lender ? new Loan(lender, chunk) : null;
    this.#loan = loan;
    try {
      this.#decoder.push(chunk);
    } finally {
      this.#loan = null;
      loan?.release();
    }
  }

  /** Reading ended: at the peer's end (`error` null), on a bad frame, or with the connection. */
  #readEnded(error: unknown): void {
    if (error === null) this.#end("peer closed the connection", null);
    else if (error instanceof ProtocolError) this.#fail(error);
    else this.#end(`connection lost: ${errorMessage(error)}`, toError(error));
    const waiting = this.#peerEnded;
    this.#peerEnded = true;
    if (waiting instanceof Deferred) waiting.resolve();
  }

  /** Resolves once the peer's end of the connection was read. */
  #peerEndRead(): Promise<void> {
    if (this.#peerEnded === true) return RESOLVED;
    if (this.#peerEnded === false) this.#peerEnded = new Deferred<void>();
    return this.#peerEnded.promise;
  }

  #dispatch(frame: Frame): void {
    if (this.#state === "closed") return;
    const { type, streamId, payload } = frame;
    if (!isKnownFrameType(type)) {
      throw new ProtocolError("unknown-frame-type", `peer sent unknown frame type ${type} on stream ${streamId}`);
    }
    if (
      type === FrameType.HELLO || type === FrameType.AUTH || type === FrameType.PING || type === FrameType.PONG ||
      type === FrameType.GOAWAY
    ) {
      if (streamId !== 0) {
        throw new ProtocolError(
          "bad-frame",
          `peer sent ${frameTypeName(type)} on stream ${streamId}; it belongs on stream 0`,
        );
      }
      return this.#sessionFrame(type, payload);
    }
    if (streamId === 0) {
      throw new ProtocolError("bad-frame", `peer sent ${frameTypeName(type)} on stream 0`);
    }
    if (this.#state !== "open") {
      throw new ProtocolError("handshake", `peer sent ${frameTypeName(type)} before the handshake completed`);
    }
    const ours = streamId % 2 === (this.#options.side === "acceptor" ? 1 : 0);
    if (type === FrameType.CONNECT && !ours) return this.#acceptStream(streamId, payload);
    const stream = this.#streams.get(streamId);
    if (stream === undefined) {
      // Frames for a stream that ended a moment ago cross on the wire; ids only
      // grow, so an id never handed out is the one real error.
      if (this.#wasEverOpened(streamId)) return;
      throw new ProtocolError(
        "unknown-stream",
        `peer sent ${frameTypeName(type)} for stream ${streamId}, which was never opened`,
      );
    }
    switch (type) {
      case FrameType.CONNECT:
        return stream.receiveAccept(parseMeta(streamId, payload));
      case FrameType.TRAFFIC:
        return stream.receiveData(payload, this.#loan?.covers(payload) ? this.#loan : null);
      case FrameType.WINDOW:
        if (payload.length !== 4) {
          throw new ProtocolError("bad-frame", `peer sent a WINDOW frame of ${payload.length} bytes; it must be 4`);
        }
        return stream.receiveWindow(readUint32(payload, 0));
      case FrameType.FIN:
        return stream.receiveFin();
      case FrameType.DISCONNECT:
        return stream.receiveReset(decoder.decode(payload));
    }
  }

  #sessionFrame(type: number, payload: Uint8Array): void {
    switch (type) {
      case FrameType.HELLO:
        return this.#receiveHello(payload);
      case FrameType.AUTH:
        return this.#receiveAuth(payload);
      case FrameType.PING:
        // Copied: the writer may hold a long payload, and it may be borrowed memory.
        this.writer.frame(FrameType.PONG, 0, payload.slice());
        return;
      case FrameType.PONG:
        if (payload.length === 8) {
          const sentAt = new DataView(payload.buffer, payload.byteOffset, 8).getFloat64(0);
          const rtt = Date.now() - sentAt;
          if (rtt >= 0 && rtt < 3_600_000) this.#stats.rttMs = rtt;
        }
        return;
      case FrameType.GOAWAY:
        // Answer with our own GOAWAY: once both are sent, no CONNECT can still
        // be on the wire, and the session may close as soon as it is empty.
        this.#receivedGoAway = true;
        this.#drainReason ||= `peer going away: ${decoder.decode(payload)}`;
        this.#sendGoAway("acknowledged");
        this.#closeIfDrained();
        return;
    }
  }

  #receiveHello(payload: Uint8Array): void {
    if (this.#peerHello !== null) {
      throw new ProtocolError("handshake", "peer sent a second HELLO");
    }
    let hello: Hello;
    try {
      hello = JSON.parse(decoder.decode(payload));
    } catch {
      throw new ProtocolError("handshake", "peer sent a HELLO that is not JSON");
    }
    if (typeof hello !== "object" || hello === null || Array.isArray(hello)) {
      throw new ProtocolError("handshake", "peer sent a HELLO that is not a JSON object");
    }
    const window = hello.window;
    if (!Number.isInteger(window) || window < 1 || window > MAX_WINDOW) {
      throw new ProtocolError(
        "handshake",
        `peer sent a HELLO with window ${JSON.stringify(window)}; expected 1-${MAX_WINDOW}`,
      );
    }
    const maxFrame = hello.maxFrame ?? MAX_PAYLOAD;
    if (!Number.isInteger(maxFrame) || (maxFrame as number) < MIN_FRAME_LIMIT || (maxFrame as number) > MAX_PAYLOAD) {
      throw new ProtocolError(
        "handshake",
        `peer sent a HELLO with maxFrame ${JSON.stringify(maxFrame)}; expected ${MIN_FRAME_LIMIT}-${MAX_PAYLOAD}`,
      );
    }
    this.maxFramePayload = Math.min(this.maxFramePayload, maxFrame as number);
    try {
      this.#options.checkHello?.(hello);
    } catch (error) {
      throw new ProtocolError("handshake", errorMessage(error));
    }
    this.#peerHello = hello;
    const { authenticate, answer } = this.#options;
    if (this.#options.side === "acceptor") {
      this.#sendHello();
      if (authenticate) this.#authWait = "answer";
      else this.#open();
    } else {
      // Without a challenge the session opens now: the acceptor's first
      // CONNECT may follow in the same chunk as its HELLO.
      let reply: Promise<Record<string, unknown>> | null;
      try {
        reply = answer?.(hello) ?? null;
      } catch (error) {
        throw new ProtocolError("auth", errorMessage(error));
      }
      if (reply === null) return this.#open();
      this.#authWait = "consent";
      reply.then((body) => {
        if (this.#state !== "handshake") return;
        this.writer.frame(FrameType.AUTH, 0, encoder.encode(JSON.stringify(body)));
      }, (error) => this.#fail(new ProtocolError("auth", errorMessage(error))));
    }
  }

  /** The AUTH step: an answer to our challenge (acceptor), or consent to ours (dialer). */
  #receiveAuth(payload: Uint8Array): void {
    const expected = this.#authWait;
    if (expected === "none" || this.#state !== "handshake") {
      throw new ProtocolError("handshake", "peer sent an AUTH frame that was not asked for");
    }
    this.#authWait = "none";
    let body: unknown;
    try {
      body = JSON.parse(decoder.decode(payload));
    } catch {
      // Reported below.
    }
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      throw new ProtocolError("handshake", "peer sent an AUTH frame that is not a JSON object");
    }
    if (expected === "consent") {
      if ((body as { ok?: unknown }).ok !== true) {
        throw new ProtocolError("auth", "peer sent an AUTH frame without consent");
      }
      return this.#open();
    }
    this.#options.authenticate!(body as Record<string, unknown>).then(() => {
      if (this.#state !== "handshake") return;
      this.writer.frame(FrameType.AUTH, 0, encoder.encode('{"ok":true}'));
      this.#open();
    }, (error) => {
      const reason = `refused: ${errorMessage(error)}`;
      if (this.#state === "closed") return;
      this.writer.frame(FrameType.GOAWAY, 0, encoder.encode(reason));
      this.#end(reason, new ProtocolError("auth", errorMessage(error)), true);
    });
  }

  #open(): void {
    this.#state = "open";
    // Dropped, not only cleared: a session of the pool or event channel lives
    // as long as its client, and the timer with its closure would too.
    if (this.#handshakeTimer !== null) clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = null;
    this.#startHeartbeat();
    this.#ready!.resolve(this.#peerHello!);
    this.#ready = null;
  }

  #acceptStream(id: number, payload: Uint8Array): void {
    if (id <= this.#lastPeerId) {
      throw new ProtocolError("bad-frame", `peer opened stream ${id} after ${this.#lastPeerId}; ids must grow`);
    }
    this.#lastPeerId = id;
    const meta = parseMeta(id, payload);
    const maxStreams = this.#options.maxStreams ?? SESSION_DEFAULTS.maxStreams;
    let refusal = "";
    if (this.#sentGoAway) refusal = "going away";
    else if (this.#streams.size >= maxStreams) refusal = `too many streams (limit ${maxStreams})`;
    else if (!this.#options.onStream) refusal = "this side does not accept streams";
    if (refusal) {
      this.writer.frame(FrameType.DISCONNECT, id, encoder.encode(refusal));
      return;
    }
    const stream = new Stream(this, id, this.#window, this.#peerHello!.window, meta);
    this.#streams.set(id, stream);
    this.#stats.totalStreams++;
    try {
      this.#options.onStream!(stream);
    } catch (error) {
      // The application's failure ends its stream, not the session.
      stream.reset(`stream handler failed: ${errorMessage(error)}`);
    }
  }

  #wasEverOpened(id: number): boolean {
    const ours = id % 2 === (this.#options.side === "acceptor" ? 1 : 0);
    return ours ? id < this.#nextId : id <= this.#lastPeerId;
  }

  // ---- Lifecycle ----

  #sendHello(): void {
    const hello = { ...this.#options.hello, window: this.#window, maxFrame: this.#decoder.maxPayload };
    this.writer.frame(FrameType.HELLO, 0, encoder.encode(JSON.stringify(hello)));
  }

  #startHeartbeat(): void {
    const interval = this.#options.heartbeatInterval ?? SESSION_DEFAULTS.heartbeatInterval;
    if (interval <= 0) return;
    this.#nextPing = Date.now() + interval;
    this.#heartbeats = HeartbeatGroup.join(this, interval);
  }

  /** Called by its heartbeat group on each tick: sends a PING when one is due, or ends a silent session. */
  #beat(now: number, interval: number): void {
    if (now < this.#nextPing) return;
    this.#nextPing = now + interval;
    const timeout = this.#options.heartbeatTimeout ?? SESSION_DEFAULTS.heartbeatTimeout;
    const silent = now - this.#lastReceived;
    // Only silence after a PING counts: with an interval above the timeout a
    // live peer is quiet for a whole interval between its PONGs.
    if (silent >= timeout && this.#awaitingPeer) {
      return this.#end(`peer silent for ${formatDuration(silent)} (heartbeat timeout)`, null);
    }
    PING_VIEW.setFloat64(0, now);
    // Copied into the frame buffer at once, so one buffer serves every session.
    this.writer.frame(FrameType.PING, 0, PING);
    this.#awaitingPeer = true;
  }

  static {
    beat = (session, now, interval) => session.#beat(now, interval);
  }

  /** Ends the session for a protocol violation: tell the peer why, then close. */
  #fail(error: ProtocolError): void {
    if (this.#state === "closed") return;
    this.writer.frame(FrameType.GOAWAY, 0, encoder.encode(`protocol error: ${error.message}`));
    this.#end(`protocol error (${error.code}): ${error.message}`, error, true);
  }

  #sendGoAway(reason: string): void {
    if (this.#sentGoAway) return;
    this.#sentGoAway = true;
    this.writer.frame(FrameType.GOAWAY, 0, encoder.encode(reason));
  }

  /** Closes gracefully once both sides said GOAWAY and no stream is open. */
  #closeIfDrained(): void {
    if (this.#sentGoAway && this.#receivedGoAway && this.#streams.size === 0) {
      this.#end(this.#drainReason, null, true);
    }
  }

  /**
   * Ends the session. `graceful` sends what is queued and a FIN, then waits
   * briefly for the peer's FIN before closing, so our last frames are read.
   */
  #end(reason: string, error: Error | null, graceful = false): void {
    if (this.#state === "closed") return;
    const wasOpen = this.#state === "open";
    this.#state = "closed";
    this.#closeReason = reason;
    this.#closeError = error;
    this.#heartbeats?.leave(this);
    this.#heartbeats = null;
    if (this.#handshakeTimer !== null) clearTimeout(this.#handshakeTimer);
    const streamError = new ConnectionClosedError(`session closed: ${reason}`);
    for (const stream of this.#streams.list()) stream.abort(streamError);
    this.#streams.clear();
    if (!wasOpen) this.#ready!.reject(new Error(`session ended before the handshake completed: ${reason}`));
    if (graceful) {
      // Never wait long on a stuck peer.
      const timer = setTimeout(() => this.#conn.close(), LINGER);
      this.writer.flushed()
        .then(() => this.#conn.closeWrite())
        .then(() => this.#peerEndRead())
        .finally(() => {
          clearTimeout(timer);
          this.#conn.close();
        });
    } else {
      this.#conn.close();
    }
    this.#closed?.resolve(reason);
    const listeners = this.#closeListeners;
    if (listeners !== null) {
      this.#closeListeners = null;
      queueMicrotask(() => {
        for (const listener of listeners) listener(reason);
      });
    }
  }
}

/** Reads a CONNECT payload: empty, or a JSON object. */
function parseMeta(id: number, payload: Uint8Array): Record<string, unknown> {
  if (payload.length === 0) return {};
  let meta: unknown;
  try {
    meta = JSON.parse(decoder.decode(payload));
  } catch {
    throw new ProtocolError("bad-frame", `peer sent CONNECT for stream ${id} with a payload that is not JSON`);
  }
  if (typeof meta !== "object" || meta === null || Array.isArray(meta)) {
    throw new ProtocolError("bad-frame", `peer sent CONNECT for stream ${id} with a payload that is not a JSON object`);
  }
  return meta as Record<string, unknown>;
}
