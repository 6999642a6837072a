/**
 * One multiplexed stream: a {@linkcode Conn} carried inside a session, with
 * credit-based flow control in each direction.
 *
 * @module
 */

import { Deferred, endSignal, RESOLVED } from "../async.ts";
import { callBack, type ReadNow, settled, WAIT } from "../transport/reads.ts";
import type { Addr, Conn, Lender } from "../transport/types.ts";
import { ConnectionClosedError } from "../transport/types.ts";
import { ProtocolError, StreamResetError } from "./errors.ts";
import { FrameType, MAX_WINDOW } from "./frame.ts";
import type { WindowBudget } from "./window.ts";
import { COPY_LIMIT, type FrameWriter } from "./writer.ts";

/** What a stream needs from its session. */
export interface StreamHost {
  readonly writer: FrameWriter;
  /** Largest TRAFFIC payload to send in one frame. */
  readonly maxFramePayload: number;
  /** Largest receive window a stream grows to. */
  readonly maxWindow: number;
  /** Where a stream's window grows from beyond its initial size. */
  readonly windowBudget: WindowBudget;
  readonly localAddr: Addr;
  readonly remoteAddr: Addr;
  /** Called once when the stream is done, so the session forgets it. */
  release(stream: Stream): void;
  /** Counts payload bytes for session statistics. */
  countBytes(sent: number, received: number): void;
}

const encoder = new TextEncoder();

/**
 * Read-buffer memory that queued payloads smaller than half of their buffer
 * may hold on to, across the process. A payload is a view into the chunk the
 * session read (up to 512 KiB, shared with other streams' bytes), and while it
 * is queued that whole chunk cannot be reused or freed. Under bulk load most
 * payloads are such pieces and their readers take them a moment later, so
 * within the budget they are queued as they are; past it (readers that stall
 * hold their share) they are copied, and a stalled reader costs only its bytes.
 */
export class PieceBudget {
  /** The budget's size in bytes. */
  readonly size: number;
  /** Bytes in use: the buffer size of each queued piece. */
  held = 0;
  /** Queued pieces charged to the budget, and the buffer size each was charged. */
  readonly #charged = new WeakMap<Uint8Array, number>();

  /** @param size bytes of read buffers queued pieces may hold, together */
  constructor(size: number) {
    this.size = size;
  }

  /** Whether `payload` may be queued as it is: it is large for its buffer, or the budget has room (then it is charged). */
  mayQueue(payload: Uint8Array): boolean {
    const size = payload.buffer.byteLength;
    if (payload.byteLength * 2 >= size) return true;
    if (this.held + size > this.size) return false;
    this.held += size;
    this.#charged.set(payload, size);
    return true;
  }

  /** `chunk` left a stream's queue: its charge, if any, comes back. */
  release(chunk: Uint8Array): void {
    const size = this.#charged.get(chunk);
    if (size === undefined) return;
    this.#charged.delete(chunk);
    this.held -= size;
  }
}

/** Default size of {@linkcode sharedPieceBudget}. */
export const DEFAULT_PIECE_BUDGET = 32 * 1024 * 1024;

/** The budget every stream in the process queues pieces under. */
export const sharedPieceBudget: PieceBudget = new PieceBudget(DEFAULT_PIECE_BUDGET);

/**
 * A chunk the session's connection lent it (see `Conn.readBorrowed`), held by
 * the payloads decoded from it: given back once the last of them is.
 */
export class Loan {
  /** The connection that lent {@linkcode Loan.chunk}. */
  readonly conn: Lender;
  /** The bytes lent. */
  readonly chunk: Uint8Array;
  /** Holders: the session while it decodes the chunk, and each payload lent on. */
  #holders = 1;

  /**
   * Made by the session for each chunk it borrows, held by the session itself.
   *
   * @param conn the connection that lent `chunk`
   * @param chunk the bytes lent
   */
  constructor(conn: Lender, chunk: Uint8Array) {
    this.conn = conn;
    this.chunk = chunk;
  }

  /** Whether `payload` is part of the lent chunk (a payload put together from several chunks is not). */
  covers(payload: Uint8Array): boolean {
    return payload.buffer === this.chunk.buffer;
  }

  /** One more holder. */
  hold(): void {
    this.#holders++;
  }

  /** A holder is done; the last one gives the chunk back. */
  release(): void {
    if (--this.#holders === 0) this.conn.giveBack(this.chunk);
  }
}

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: Error): void;
}

/**
 * A stream inside a session. Usable wherever a {@linkcode Conn} is: read until
 * `null`, write with backpressure, half-close with `closeWrite()`.
 *
 * Flow control: the peer may have at most `window` unread bytes in flight; the
 * stream grants more as the consumer reads. A stalled consumer therefore costs
 * at most one window of memory and never stalls other streams. The window
 * starts small and doubles, up to the host's `maxWindow`, while the consumer
 * keeps up and the host's `windowBudget` has room.
 */
export class Stream implements Conn {
  /** Stream id, unique within its session. */
  readonly id: number;
  /** Metadata the opener sent with CONNECT (parsed JSON), if any. */
  readonly meta: Record<string, unknown>;
  readonly #host: StreamHost;
  /** Current receive window: the initial one, plus what it grew by. */
  #window: number;
  /** Bytes the window grew by, taken from the host's budget. */
  #grown = 0;

  // Receiving.
  #chunks: Uint8Array[] = [];
  #recvCredit: number;
  #unacknowledged = 0;
  #remoteFin = false;
  /** The waiting reader, if any: a promise's resolving functions, or the callbacks of {@linkcode Stream.readBorrowedThen}. */
  #onChunk: ((chunk: Uint8Array | null) => void) | null = null;
  #onError: ((error: Error) => void) | null = null;
  /** Whether the waiting reader borrows (see {@linkcode Stream.readBorrowed}). */
  #readerBorrows = false;
  /**
   * Received payloads still part of a chunk the session borrowed, queued or
   * lent on: the first in a slot of its own (an interactive stream has one at
   * a time, and then makes no map per message), the others in a map.
   */
  #lentChunk: Uint8Array | null = null;
  #lentLoan: Loan | null = null;
  #loans: Map<Uint8Array, Loan> | null = null;

  // Sending.
  #sendCredit: number;
  #creditWaiter: Waiter<void> | null = null;
  /** The last write that could not be framed at once, while it runs: a half-close waits for it. */
  #slowWrite: Promise<void> | null = null;
  #localFin = false;

  #error: Error | null = null;
  #released = false;
  #readable: ReadableStream<Uint8Array> | undefined;
  #writable: WritableStream<Uint8Array> | undefined;
  #closed: Deferred<void> | null = null;

  // Acknowledgement: the receiver answers CONNECT with a CONNECT once it is
  // ready (its destination connected), so the opener knows nothing was lost.
  readonly #openedHere: boolean;
  #acknowledged = false;
  // Quiet: a refusal is reported by read() and write() too. Made up front only
  // for a stream opened here, whose opener waits for it; on the other side
  // it is made if someone asks. Once the peer accepted, only its metadata is
  // kept: the promise, awaited by the opener, would live as long as the stream.
  #accepted: Deferred<Record<string, unknown>> | Record<string, unknown> | null;

  /**
   * Made by a session for each stream; applications get streams from it.
   *
   * @param host the session carrying this stream
   * @param id stream id
   * @param window receive window this side granted the peer at first
   * @param sendWindow initial credit the peer granted this side
   * @param meta metadata from CONNECT
   * @param openedHere whether this side sent the CONNECT
   */
  constructor(
    host: StreamHost,
    id: number,
    window: number,
    sendWindow: number,
    meta: Record<string, unknown> = {},
    openedHere = false,
  ) {
    this.#host = host;
    this.id = id;
    this.#window = window;
    this.#recvCredit = window;
    this.#sendCredit = sendWindow;
    this.meta = meta;
    this.#openedHere = openedHere;
    this.#accepted = openedHere ? new Deferred(true) : null;
  }

  /** Resolves once both sides finished or the stream was reset. */
  get closed(): Promise<void> {
    return (this.#closed ??= endSignal(this.#released)).promise;
  }

  /**
   * For a stream opened here: resolves with the peer's CONNECT metadata once
   * it accepted the stream; rejects if it was reset first (which `read()` and
   * `write()` report too).
   */
  get accepted(): Promise<Record<string, unknown>> {
    const accepted = this.#accepted;
    if (accepted instanceof Deferred) return accepted.promise;
    if (accepted !== null) return Promise.resolve(accepted);
    // Only on the receiving side, which never resolves it.
    const deferred = this.#accepted = new Deferred<Record<string, unknown>>(true);
    if (this.#released && !this.#acknowledged) deferred.reject(this.#notAccepted());
    return deferred.promise;
  }

  /**
   * Tells the opener this side is ready for the stream (sends CONNECT back).
   *
   * @param meta optional metadata for the opener
   * @throws {Error} on a stream this side opened
   */
  accept(meta?: Record<string, unknown>): void {
    if (this.#openedHere) throw new Error(`stream ${this.id}: only the receiving side accepts a stream`);
    if (this.#acknowledged || this.#released) return;
    this.#acknowledged = true;
    this.#host.writer.frame(FrameType.CONNECT, this.id, meta ? encoder.encode(JSON.stringify(meta)) : undefined);
  }

  /** The session's local address. */
  get localAddr(): Addr {
    return this.#host.localAddr;
  }

  /** The session's remote address. */
  get remoteAddr(): Addr {
    return this.#host.remoteAddr;
  }

  /** Bytes received and not yet read. */
  get buffered(): number {
    let total = 0;
    for (const chunk of this.#chunks) total += chunk.length;
    return total;
  }

  /**
   * The incoming bytes as a web `ReadableStream`, made on first use; use
   * either it or `read()`, not both. Cancelling it resets the stream.
   */
  get readable(): ReadableStream<Uint8Array> {
    return this.#readable ??= new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        const chunk = await this.read();
        if (chunk === null) controller.close();
        else controller.enqueue(chunk);
      },
      cancel: (reason) => this.reset(`cancelled: ${reason ?? "by reader"}`),
    }, { highWaterMark: 0 });
  }

  /**
   * The outgoing direction as a web `WritableStream`, made on first use.
   * Closing it half-closes the stream; aborting it resets the stream.
   */
  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= new WritableStream<Uint8Array>({
      write: (chunk) => this.write(chunk),
      close: () => this.closeWrite(),
      abort: (reason) => this.reset(`aborted: ${reason ?? "by writer"}`),
    }, { highWaterMark: 1 });
  }

  /** Whether the stream is still open in at least one direction. */
  get open(): boolean {
    return !this.#released;
  }

  // ---- Conn ----

  /** Next chunk from the peer, or `null` after its FIN. */
  read(): Promise<Uint8Array | null> {
    return this.#read(false);
  }

  /**
   * Like {@linkcode Stream.read}, but the chunk may be lent: hand it back with
   * {@linkcode Stream.giveBack} once done, so the session's connection can read
   * into its memory again.
   */
  readBorrowed(): Promise<Uint8Array | null> {
    return this.#read(true);
  }

  /** Returns a chunk from {@linkcode Stream.readBorrowed}; it must not be touched afterwards. */
  giveBack(chunk: Uint8Array): void {
    if (chunk === this.#lentChunk) {
      const loan = this.#lentLoan!;
      this.#lentChunk = this.#lentLoan = null;
      return loan.release();
    }
    const loans = this.#loans;
    if (loans === null) return;
    loans.get(chunk)?.release();
    loans.delete(chunk);
    // An idle stream keeps no empty map.
    if (loans.size === 0) this.#loans = null;
  }

  /**
   * Like {@linkcode Stream.readBorrowed}, but calls back instead of resolving
   * a promise, at once if a chunk, the end or a failure is there already. A
   * copy loop passes the same two callbacks every time, so a pending read
   * costs no promise, resolving functions or reaction. The callbacks run
   * inside the session's dispatch of a frame and must not throw.
   */
  readBorrowedThen(onChunk: (chunk: Uint8Array | null) => void, onError: (error: Error) => void): void {
    if (callBack(this.#next(true), onChunk, onError)) return;
    this.#onChunk = onChunk;
    this.#onError = onError;
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
    if (this.#onChunk !== null) return new Error(`stream ${this.id}: read() while another read is pending`);
    const chunk = this.#chunks.shift();
    if (chunk !== undefined) {
      sharedPieceBudget.release(chunk);
      this.#consumed(chunk.length);
      return borrow ? chunk : this.#keep(chunk);
    }
    if (this.#error) return this.#error;
    if (this.#remoteFin) return null;
    this.#readerBorrows = borrow;
    return WAIT;
  }

  /** `chunk`, made the reader's to keep: a copy if it is lent memory. */
  #keep(chunk: Uint8Array): Uint8Array {
    if (chunk !== this.#lentChunk && this.#loans?.has(chunk) !== true) return chunk;
    const copy = chunk.slice();
    this.giveBack(chunk);
    return copy;
  }

  #borrow(payload: Uint8Array, loan: Loan): void {
    loan.hold();
    if (this.#lentChunk === null) {
      this.#lentChunk = payload;
      this.#lentLoan = loan;
      return;
    }
    (this.#loans ??= new Map()).set(payload, loan);
  }

  /**
   * Sends `chunk`, waiting for window credit and session buffer room as needed.
   * Large chunks are written from `chunk` itself, so it must stay unchanged
   * until the returned promise resolves.
   */
  write(chunk: Uint8Array): Promise<void> {
    // Most writes fit the credit and a frame: framed at once, with no async
    // function (a promise and a suspended frame per message) around them.
    const writer = this.#host.writer;
    const size = chunk.length;
    if (
      size > 0 && size <= this.#sendCredit && size <= this.#host.maxFramePayload && !writer.congested &&
      this.#error === null && !this.#localFin && !this.#released && this.#slowWrite === null
    ) {
      const position = writer.frame(FrameType.TRAFFIC, this.id, chunk);
      this.#sendCredit -= size;
      this.#host.countBytes(size, 0);
      return size >= COPY_LIMIT ? writer.written(position) : RESOLVED;
    }
    // After a write still under way, not alongside it: bytes keep their order.
    const before = this.#slowWrite;
    let written: Promise<void>;
    if (before === null) {
      written = this.#write(chunk);
    } else {
      const next = () => this.#write(chunk);
      written = before.then(next, next);
    }
    this.#slowWrite = written;
    const done = () => this.#slowWriteDone(written);
    written.then(done, done);
    return written;
  }

  #slowWriteDone(written: Promise<void>): void {
    if (this.#slowWrite === written) this.#slowWrite = null;
  }

  async #write(chunk: Uint8Array): Promise<void> {
    let offset = 0;
    let keptUntil = -1;
    while (offset < chunk.length) {
      this.#checkWritable();
      if (this.#sendCredit === 0) {
        await new Promise<void>((resolve, reject) => this.#creditWaiter = { resolve, reject });
        continue;
      }
      const writer = this.#host.writer;
      if (writer.congested) {
        await writer.drained();
        continue;
      }
      const size = Math.min(chunk.length - offset, this.#sendCredit, this.#host.maxFramePayload);
      // The whole chunk as it is: a view per frame costs more than the frame when messages are small.
      const payload = size === chunk.length ? chunk : chunk.subarray(offset, offset + size);
      const position = writer.frame(FrameType.TRAFFIC, this.id, payload);
      if (size >= COPY_LIMIT) keptUntil = position;
      this.#sendCredit -= size;
      offset += size;
      this.#host.countBytes(size, 0);
    }
    if (keptUntil >= 0) await this.#host.writer.written(keptUntil);
  }

  /**
   * Half-closes: the peer reads `null` after the bytes written so far, also
   * those of a write still waiting for window credit (so a small message and
   * the half-close after it can be sent without waiting in between: they go
   * out in one frame batch).
   */
  closeWrite(): Promise<void> {
    const waiting = this.#slowWrite;
    if (waiting !== null) {
      const retry = () => this.closeWrite();
      return waiting.then(retry, retry);
    }
    if (this.#localFin || this.#released) return Promise.resolve();
    this.#localFin = true;
    this.#host.writer.frame(FrameType.FIN, this.id);
    this.#finishIfDone();
    return Promise.resolve();
  }

  /**
   * Closes the stream. If both sides already finished this only releases it;
   * otherwise the peer gets a reset, since this side will neither read nor write.
   */
  close(): void {
    if (this.#released) return;
    if (this.#localFin && this.#remoteFin) return this.#release(null);
    this.reset("closed");
  }

  /** Aborts the stream in both directions; the peer sees a reset with `reason`. */
  reset(reason = "reset"): void {
    if (this.#released) return;
    this.#host.writer.frame(FrameType.DISCONNECT, this.id, encoder.encode(reason));
    for (const chunk of this.#chunks) this.giveBack(chunk);
    // Released first: that gives the queued pieces' charges back.
    this.#release(new StreamResetError(`stream ${this.id} reset locally: ${reason}`));
    this.#chunks = [];
  }

  // ---- Called by the session ----

  /**
   * Bytes arrived for this stream.
   *
   * @param loan set if `payload` is part of a chunk the session borrowed
   */
  receiveData(payload: Uint8Array, loan: Loan | null = null): void {
    if (this.#remoteFin) {
      throw new ProtocolError("bad-frame", `peer sent TRAFFIC on stream ${this.id} after its FIN`);
    }
    if (payload.length > this.#recvCredit) {
      throw new ProtocolError(
        "window-exceeded",
        `peer sent ${payload.length} bytes on stream ${this.id} with only ${this.#recvCredit} bytes of window left`,
      );
    }
    this.#recvCredit -= payload.length;
    this.#host.countBytes(0, payload.length);
    if (payload.length === 0) return;
    const onChunk = this.#onChunk;
    if (onChunk !== null) {
      this.#onChunk = this.#onError = null;
      this.#consumed(payload.length);
      if (loan === null) return onChunk(payload);
      if (!this.#readerBorrows) return onChunk(payload.slice());
      this.#borrow(payload, loan);
      onChunk(payload);
    } else if (sharedPieceBudget.mayQueue(payload)) {
      if (loan !== null) this.#borrow(payload, loan);
      this.#chunks.push(payload);
    } else {
      this.#chunks.push(payload.slice());
    }
  }

  /** The peer granted `increment` more bytes of credit. */
  receiveWindow(increment: number): void {
    if (increment === 0 || this.#sendCredit + increment > MAX_WINDOW) {
      throw new ProtocolError(
        "bad-frame",
        `peer sent a window update of ${increment} on stream ${this.id} (credit was ${this.#sendCredit})`,
      );
    }
    this.#sendCredit += increment;
    const waiter = this.#creditWaiter;
    if (waiter !== null) {
      this.#creditWaiter = null;
      waiter.resolve();
    }
  }

  /** The peer half-closed. */
  receiveFin(): void {
    if (this.#remoteFin) {
      throw new ProtocolError("bad-frame", `peer sent a second FIN on stream ${this.id}`);
    }
    this.#remoteFin = true;
    const onChunk = this.#onChunk;
    if (onChunk !== null && this.#chunks.length === 0) {
      this.#onChunk = this.#onError = null;
      onChunk(null);
    }
    this.#finishIfDone();
  }

  /** The peer accepted a stream this side opened. */
  receiveAccept(meta: Record<string, unknown>): void {
    if (!this.#openedHere) {
      throw new ProtocolError("bad-frame", `peer sent CONNECT for stream ${this.id}, which it opened itself`);
    }
    if (this.#acknowledged) throw new ProtocolError("bad-frame", `peer accepted stream ${this.id} twice`);
    this.#acknowledged = true;
    (this.#accepted as Deferred<Record<string, unknown>>).resolve(meta);
    this.#accepted = meta;
  }

  /** The peer reset the stream (DISCONNECT). Bytes that arrived before stay readable. */
  receiveReset(reason: string): void {
    this.#release(new StreamResetError(`stream ${this.id} reset by peer${reason ? `: ${reason}` : ""}`));
  }

  /** The session ended; the stream fails with `error`. */
  abort(error: Error): void {
    this.#release(error);
  }

  // ---- Internals ----

  #checkWritable(): void {
    if (this.#error) throw this.#error;
    if (this.#localFin || this.#released) {
      throw new ConnectionClosedError(`stream ${this.id}: write after close`);
    }
  }

  #consumed(length: number): void {
    if (this.#released || this.#remoteFin) return;
    this.#unacknowledged += length;
    // Grant credit in batches of half a window: few WINDOW frames, no stall.
    if (this.#unacknowledged < this.#window >>> 1) return;
    let increment = this.#unacknowledged;
    // Nothing left queued: the consumer keeps up, so a larger window would be used.
    if (this.#chunks.length === 0 && this.#window < this.#host.maxWindow) {
      const growth = Math.min(this.#window, this.#host.maxWindow - this.#window);
      if (this.#host.windowBudget.take(growth)) {
        this.#window += growth;
        this.#grown += growth;
        increment += growth;
      }
    }
    this.#host.writer.frameUint32(FrameType.WINDOW, this.id, increment);
    this.#recvCredit += increment;
    this.#unacknowledged = 0;
  }

  #finishIfDone(): void {
    if (this.#localFin && this.#remoteFin) this.#release(null);
  }

  #notAccepted(): Error {
    return this.#error ?? new ConnectionClosedError(`stream ${this.id} closed before it was accepted`);
  }

  #release(error: Error | null): void {
    if (this.#released) return;
    this.#released = true;
    // What is still queued stays readable, but gives its charge back now: nobody may come to read it.
    for (const chunk of this.#chunks) sharedPieceBudget.release(chunk);
    this.#host.windowBudget.give(this.#grown);
    this.#grown = 0;
    if (error) this.#error = error;
    const onChunk = this.#onChunk;
    const onError = this.#onError;
    if (onChunk !== null && onError !== null) {
      this.#onChunk = this.#onError = null;
      // Released without error means both sides sent FIN: the reader is at the end.
      if (error) onError(error);
      else onChunk(null);
    }
    const waiter = this.#creditWaiter;
    if (waiter !== null) {
      this.#creditWaiter = null;
      waiter.reject(error ?? new ConnectionClosedError(`stream ${this.id} closed`));
    }
    this.#host.release(this);
    if (!this.#acknowledged && this.#accepted instanceof Deferred) this.#accepted.reject(this.#notAccepted());
    this.#closed?.resolve();
  }
}
