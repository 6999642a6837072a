/**
 * The receiving half of a callback-driven connection (Bun sockets, `node:net`,
 * `node:tls`): bytes queue here until the one reader takes them. Past the
 * high-water mark the socket is asked to pause, and to resume below half of
 * it, so a slow reader slows the peer down instead of growing memory.
 *
 * Queues may share a {@linkcode ReadBudget}: once the bytes queued across all
 * of them pass it, each socket pauses as soon as it has delivered a chunk and
 * reads again only when its reader asks. A thousand clients uploading into a
 * relay that cannot keep up then hold about one chunk each, not a high-water
 * mark each; a reader that asks always gets its socket read, so nothing waits
 * on another connection's queue.
 *
 * @module
 */

import { callBack, type ReadNow, settled, WAIT } from "./reads.ts";
import { ConnectionClosedError } from "./types.ts";

/** What the queue tells its socket. */
export interface InboundFlow {
  /** More than the high-water mark is queued: stop reading from the network. */
  pause(): void;
  /** The reader caught up: read again. */
  resume(): void;
  /**
   * A chunk went to the reader, lent or its to keep. A flow that tracks its
   * chunks itself (Deno's read buffers) does it here, and the queue then
   * records none of them: tagging them after the read, in a `then`, cost an
   * idle connection a promise and a closure more.
   */
  delivered?(chunk: Uint8Array, borrowed: boolean): void;
}

/** Bytes queued by the {@linkcode Inbound}s sharing it, and how many they may queue before reading only on demand. */
export class ReadBudget {
  /** Queued bytes above which sockets read only when their reader asks. */
  readonly size: number;
  /** Bytes queued now, across the queues sharing this budget. */
  queued = 0;

  /** @param size queued bytes above which sockets read only when their reader asks */
  constructor(size: number) {
    this.size = size;
  }

  /** Whether more than `size` bytes are queued. */
  get exceeded(): boolean {
    return this.queued > this.size;
  }
}

/** Default size of {@linkcode sharedReadBudget}. */
export const DEFAULT_READ_BUDGET = 64 * 1024 * 1024;

/** The budget the TCP adapters' connections share in a process. */
export const sharedReadBudget: ReadBudget = new ReadBudget(DEFAULT_READ_BUDGET);

/**
 * Chunks lent by every queue's {@linkcode Inbound.readBorrowed} and not given
 * back yet. One set for the process: a set per connection would cost an idle
 * connection more than its queue.
 */
const lent = new WeakSet<Uint8Array>();

/** Received bytes for one reader: chunks, then an end (FIN) or a failure. */
export class Inbound {
  readonly #highWater: number;
  readonly #flow: InboundFlow;
  readonly #budget: ReadBudget | null;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #paused = false;
  #eof = false;
  /**
   * Why the connection ended, until someone needs it as an Error: most
   * connections end cleanly and nobody asks, and an Error costs a stack trace.
   */
  #reason: string | null = null;
  /** Made from `#reason` on first use. */
  #error: Error | null = null;
  #closedLocally = false;
  /** The waiting reader, if any: a promise's resolving functions, or the callbacks of {@linkcode Inbound.readBorrowedThen}. */
  #onChunk: ((chunk: Uint8Array | null) => void) | null = null;
  #onError: ((error: Error) => void) | null = null;
  /** Whether the waiting reader borrows the chunk it gets. */
  #readerBorrows = false;

  /**
   * @param highWater queued bytes at which the socket is paused
   * @param flow how to pause and resume the socket
   * @param budget shared with other queues, if any
   */
  constructor(highWater: number, flow: InboundFlow, budget: ReadBudget | null = null) {
    this.#highWater = highWater;
    this.#flow = flow;
    this.#budget = budget;
  }

  /** Whether the peer's end (FIN) arrived. */
  get ended(): boolean {
    return this.#eof;
  }

  /** Whether the socket is paused because the reader is behind. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Whether a reader waits for the next chunk (nothing is queued). */
  get waiting(): boolean {
    return this.#onChunk !== null;
  }

  /** Whether at least the high-water mark is queued. */
  get full(): boolean {
    return this.#buffered >= this.#highWater;
  }

  /** Next chunk, `null` after the peer's end, or the failure. */
  read(): Promise<Uint8Array | null> {
    return this.#read(false);
  }

  /**
   * Like {@linkcode Inbound.read}, but the chunk is lent: once its reader is
   * done it comes back through {@linkcode Inbound.giveBack}, which says
   * whether it was lent, so the connection may free its memory at once.
   */
  readBorrowed(): Promise<Uint8Array | null> {
    return this.#read(true);
  }

  /**
   * Like {@linkcode Inbound.readBorrowed}, but calls back instead of resolving
   * a promise, at once if a chunk, the end or a failure is there already. A
   * copy loop passes the same two callbacks every time, so a pending read
   * costs no promise, resolving functions or reaction. The callbacks run
   * inside the socket's event handler and must not throw.
   */
  readBorrowedThen(onChunk: (chunk: Uint8Array | null) => void, onError: (error: Error) => void): void {
    if (callBack(this.#next(true), onChunk, onError)) return;
    this.#onChunk = onChunk;
    this.#onError = onError;
  }

  /** Whether `chunk` was lent and not given back before; from now on it is not lent. */
  giveBack(chunk: Uint8Array): boolean {
    return lent.delete(chunk);
  }

  #read(borrow: boolean): Promise<Uint8Array | null> {
    const next = this.#next(borrow);
    if (next !== WAIT) return settled(next);
    return new Promise((resolve, reject) => {
      this.#onChunk = resolve;
      this.#onError = reject;
    });
  }

  /** What a read gets now: a chunk, the end (`null`), the failure, or {@linkcode WAIT} (then the reader is expected). */
  #next(borrow: boolean): ReadNow {
    if (this.#closedLocally) return new ConnectionClosedError();
    const chunk = this.#chunks.shift();
    if (chunk !== undefined) {
      this.#take(chunk.length);
      if (
        this.#paused && (this.#buffered === 0 || (this.#buffered < this.#highWater >>> 1 && !this.#budget?.exceeded))
      ) {
        this.#resume();
      }
      this.#deliver(chunk, borrow);
      return chunk;
    }
    if (this.#eof) return null;
    if (this.failed) return this.error!;
    // The reader asks and nothing is queued: read, whatever the budget says.
    if (this.#paused) this.#resume();
    this.#readerBorrows = borrow;
    return WAIT;
  }

  /** Bytes arrived; the queue keeps `chunk`. */
  push(chunk: Uint8Array): void {
    if (this.failed || this.#closedLocally) return;
    const onChunk = this.#onChunk;
    if (onChunk !== null) {
      this.#onChunk = this.#onError = null;
      this.#deliver(chunk, this.#readerBorrows);
      onChunk(chunk);
      // Over budget: the next bytes wait in the kernel until the reader asks.
      if (!this.#paused && this.#budget?.exceeded) this.#pause();
      return;
    }
    this.#chunks.push(chunk);
    this.#queue(chunk.length);
  }

  /** `length` more bytes are queued: past the high-water mark or the budget, the socket pauses. */
  #queue(length: number): void {
    this.#buffered += length;
    if (this.#budget) this.#budget.queued += length;
    if (!this.#paused && (this.#buffered >= this.#highWater || this.#budget?.exceeded)) this.#pause();
  }

  /**
   * Like {@linkcode Inbound.push}, but if `chunk` continues the last queued
   * chunk in memory, the two become one view: a reader then takes whatever
   * was read since it last asked, in one chunk. A copy loop moves a chunk per
   * turn, so without this a socket read in small pieces (a small receive
   * buffer) got a small share of a link shared with others.
   *
   * @returns whether `chunk` was joined to the last queued chunk
   */
  pushJoined(chunk: Uint8Array): boolean {
    const chunks = this.#chunks;
    // Queued bytes mean no reader waits and this side did not close; a failed
    // connection still holds its queue, but push() drops what comes after.
    const last = chunks[chunks.length - 1];
    if (
      last === undefined || this.failed || last.buffer !== chunk.buffer ||
      last.byteOffset + last.length !== chunk.byteOffset
    ) {
      this.push(chunk);
      return false;
    }
    chunks[chunks.length - 1] = new Uint8Array(last.buffer, last.byteOffset, last.length + chunk.length);
    this.#queue(chunk.length);
    return true;
  }

  /** The peer finished sending: after the queued bytes, reads give `null`. */
  end(): void {
    if (this.#closedLocally || this.#eof) return;
    this.#eof = true;
    const onChunk = this.#onChunk;
    if (onChunk !== null && this.#chunks.length === 0) {
      this.#onChunk = this.#onError = null;
      onChunk(null);
    }
  }

  /**
   * The connection is gone. A waiting reader gets `null` if the peer had
   * finished cleanly (and this side did not close), else `error`; later reads
   * still drain what was queued first. `reason` is the message of a
   * {@linkcode ConnectionClosedError}, made only if someone reads it.
   */
  fail(reason: string): void {
    this.#reason ??= reason;
    const onChunk = this.#onChunk;
    const onError = this.#onError;
    if (onChunk !== null && onError !== null) {
      this.#onChunk = this.#onError = null;
      if (this.#closedLocally || !this.#eof) onError(this.error!);
      else onChunk(null);
    }
  }

  /** Whether the connection is gone. */
  get failed(): boolean {
    return this.#reason !== null;
  }

  /** This side closed: every read fails from now on, and queued bytes are dropped. */
  closeLocally(): void {
    this.#closedLocally = true;
    this.#chunks = [];
    this.#take(this.#buffered);
  }

  #deliver(chunk: Uint8Array, borrowed: boolean): void {
    if (this.#flow.delivered !== undefined) this.#flow.delivered(chunk, borrowed);
    else if (borrowed) lent.add(chunk);
  }

  #take(length: number): void {
    this.#buffered -= length;
    if (this.#budget) this.#budget.queued -= length;
  }

  #pause(): void {
    // A reader called back may have closed the connection: its socket is left alone.
    if (this.#closedLocally || this.failed) return;
    this.#paused = true;
    this.#flow.pause();
  }

  #resume(): void {
    this.#paused = false;
    this.#flow.resume();
  }

  /** The failure, if any. */
  get error(): Error | null {
    if (this.#reason !== null) this.#error ??= new ConnectionClosedError(this.#reason);
    return this.#error;
  }
}
