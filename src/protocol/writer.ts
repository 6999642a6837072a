/**
 * Coalescing frame writer: headers and small frames are encoded straight into
 * one of two buffers; while one is being written to the connection the next
 * fills up, so a burst of small frames costs one write, and buffers that grew
 * are reused (small ones go to a pool the process's writers share while the
 * writer is idle). Large payloads
 * are not copied: they are written from the caller's buffer, between the bytes
 * queued before and after them.
 *
 * @module
 */

import { reportLater, RESOLVED } from "../async.ts";
import type { Conn } from "../transport/types.ts";
import { writeHeader, writeUint32 } from "./codec.ts";
import { HEADER_LENGTH } from "./frame.ts";

// Small to start: with a session per client (pool, event) a matcher and a
// relay hold thousands of writers, and a busy one grows its two buffers to
// fit. 1 KiB holds a handshake and a few control frames; against 4 KiB it cut
// an idle `event` client from 51 to 35 KiB (Bun, 5,000 clients). Buffers no
// larger than this are let go whenever the writer is idle, so an idle writer
// holds none; the next writer with frames takes one of them, so a writer that
// goes idle after every message (an interactive session) makes none per message.
const INITIAL_BUFFER = 1024;
/** No buffer: the next frame takes one. */
const NONE = new Uint8Array(0);

/** Buffers of {@linkcode INITIAL_BUFFER} bytes idle writers let go, for any writer; at most {@linkcode IDLE_BUFFERS}. */
const idleBuffers: Uint8Array<ArrayBuffer>[] = [];
const IDLE_BUFFERS = 64;

function takeBuffer(): Uint8Array<ArrayBuffer> {
  return idleBuffers.pop() ?? new Uint8Array(INITIAL_BUFFER);
}

function letGo(buffer: Uint8Array<ArrayBuffer>): void {
  if (buffer.length === INITIAL_BUFFER && idleBuffers.length < IDLE_BUFFERS) idleBuffers.push(buffer);
}

/** Writers with frames queued since the last flush began; kept, not remade, between flushes. */
const dirty: Array<FrameWriter | undefined> = [];
let dirtyCount = 0;

/**
 * Payloads at least this long are written from the caller's buffer rather than
 * copied: one more write call costs less than copying them. The caller must
 * leave such a payload unchanged until {@linkcode FrameWriter.written} says so.
 */
export const COPY_LIMIT = 16 * 1024;

/** A payload written by reference, after the buffered bytes before `at`. */
interface Cut {
  at: number;
  payload: Uint8Array;
}

/** No cuts: shared until a writer queues a payload by reference (never pushed to; emptying it is a no-op). */
const NO_CUTS: Cut[] = [];

/** Writes frames to a connection, in the order they were queued. */
export class FrameWriter {
  readonly #conn: Conn;
  readonly #highWater: number;
  readonly #onError: (error: unknown) => void;
  #fill = NONE;
  #fillLength = 0;
  #fillCuts: Cut[] = NO_CUTS;
  #spare = NONE;
  /** Bytes ever queued, and ever handed to the connection: positions in the output. */
  #queued = 0;
  #written = 0;
  #writing = false;
  #failed = false;
  /** The buffer being written, how far it goes, its cuts, and where writing it has got to. */
  #out = NONE;
  #outLength = 0;
  #outCuts: Cut[] = NO_CUTS;
  #nextCut = 0;
  #outFrom = 0;
  /** Length of the write under way. */
  #writingLength = 0;
  // Made when first needed: a session per client (pool, event) seldom waits.
  #drainWaiters: Array<() => void> | null = null;
  #writtenWaiters: Array<{ position: number; resolve: () => void }> | null = null;

  /**
   * @param conn where frames go
   * @param highWater queued bytes above which {@linkcode FrameWriter.congested} is true
   * @param onError called once if a write fails; the writer then drops frames
   */
  constructor(conn: Conn, highWater: number, onError: (error: unknown) => void) {
    this.#conn = conn;
    this.#highWater = highWater;
    this.#onError = onError;
  }

  /** Bytes queued or being written. */
  get pending(): number {
    return this.#queued - this.#written;
  }

  /** Whether writers of bulk data should wait for {@linkcode FrameWriter.drained}. */
  get congested(): boolean {
    return this.pending >= this.#highWater;
  }

  /** Resolves once the queue is below the high-water mark again (or the writer failed). */
  drained(): Promise<void> {
    if (!this.congested || this.#failed) return RESOLVED;
    return new Promise((resolve) => (this.#drainWaiters ??= []).push(resolve));
  }

  /**
   * Queues a frame. A payload shorter than {@linkcode COPY_LIMIT} is copied;
   * a longer one is kept until written.
   *
   * @returns the output position just past this frame, for {@linkcode FrameWriter.written}
   */
  frame(type: number, streamId: number, payload?: Uint8Array): number {
    if (this.#failed) return this.#queued;
    const length = payload === undefined ? 0 : payload.length;
    if (length >= COPY_LIMIT) {
      const at = this.#reserve(HEADER_LENGTH);
      writeHeader(this.#fill, at, type, streamId, length);
      if (this.#fillCuts === NO_CUTS) this.#fillCuts = [];
      this.#fillCuts.push({ at: at + HEADER_LENGTH, payload: payload! });
      this.#queued += length;
      return this.#queued;
    }
    const at = this.#reserve(HEADER_LENGTH + length);
    writeHeader(this.#fill, at, type, streamId, length);
    if (length > 0) this.#fill.set(payload!, at + HEADER_LENGTH);
    return this.#queued;
  }

  /** Queues a frame whose payload is one uint32 (such as a window increment). */
  frameUint32(type: number, streamId: number, value: number): void {
    if (this.#failed) return;
    const at = this.#reserve(HEADER_LENGTH + 4);
    writeHeader(this.#fill, at, type, streamId, 4);
    writeUint32(this.#fill, at + HEADER_LENGTH, value);
  }

  /** Resolves once the output up to `position` was handed to the connection (or the writer failed). */
  written(position: number): Promise<void> {
    if (this.#written >= position || this.#failed) return RESOLVED;
    return new Promise((resolve) => (this.#writtenWaiters ??= []).push({ position, resolve }));
  }

  /** Resolves once everything queued so far was handed to the connection. */
  flushed(): Promise<void> {
    return this.written(this.#queued);
  }

  #reserve(size: number): number {
    const at = this.#fillLength;
    if (at + size > this.#fill.length) {
      if (at === 0 && size <= INITIAL_BUFFER) {
        this.#fill = takeBuffer();
      } else {
        const grown = new Uint8Array(Math.max(this.#fill.length * 2, at + size, INITIAL_BUFFER));
        grown.set(this.#fill.subarray(0, at));
        letGo(this.#fill);
        this.#fill = grown;
      }
    }
    this.#fillLength = at + size;
    this.#queued += size;
    if (!this.#writing) {
      this.#writing = true;
      // Flushed in a microtask, so frames queued in the same tick share one write.
      if (dirtyCount === 0) queueMicrotask(FrameWriter.#flushDirty);
      dirty[dirtyCount++] = this;
    }
    return at;
  }

  /** One microtask for every writer that got frames this tick, instead of a closure and a task each. */
  static #flushDirty(): void {
    // Writers dirtied meanwhile join this pass.
    for (let i = 0; i < dirtyCount; i++) {
      const writer = dirty[i]!;
      dirty[i] = undefined;
      try {
        writer.#writeNext();
      } catch (error) {
        // Only an onError that throws gets here; the other writers still flush.
        reportLater(error);
      }
    }
    dirtyCount = 0;
  }

  // The flush goes on in callbacks bound once, not in an async function: no
  // promises and suspended frames per flush and per write besides the
  // connection's own.

  /** Writes the next piece of output, moving on to the buffer filled meanwhile; stops when all is written. */
  #writeNext(): void {
    for (;;) {
      if (this.#failed) return this.#stop();
      const cuts = this.#outCuts;
      if (this.#nextCut < cuts.length) {
        const cut = cuts[this.#nextCut];
        if (this.#outFrom < cut.at) {
          const from = this.#outFrom;
          this.#outFrom = cut.at;
          return this.#write(this.#out.subarray(from, cut.at));
        }
        this.#nextCut++;
        return this.#write(cut.payload);
      }
      if (this.#outFrom < this.#outLength) {
        const from = this.#outFrom;
        this.#outFrom = this.#outLength;
        return this.#write(this.#out.subarray(from, this.#outLength));
      }
      if (this.#fillLength === 0) return this.#stop();
      // The buffer written so far becomes the spare; the filled one goes out.
      const spare = this.#out === NONE ? this.#spare : this.#out;
      this.#out = this.#fill;
      this.#outLength = this.#fillLength;
      this.#outCuts = this.#fillCuts;
      this.#nextCut = 0;
      this.#outFrom = 0;
      this.#fill = spare;
      this.#fillLength = 0;
      // The cut lists swap too, so a flush makes no array.
      cuts.length = 0;
      this.#fillCuts = cuts;
      this.#spare = NONE;
    }
  }

  #write(bytes: Uint8Array): void {
    this.#writingLength = bytes.length;
    let written: Promise<void>;
    try {
      written = this.#conn.write(bytes);
    } catch (error) {
      return this.#writeFailed(error);
    }
    written.then(this.#wrote, this.#writeFailed);
  }

  readonly #wrote = (): void => {
    this.#written += this.#writingLength;
    this.#wake();
    this.#writeNext();
  };

  readonly #writeFailed = (error: unknown): void => {
    this.#failed = true;
    this.#fillLength = 0;
    this.#fillCuts.length = 0;
    this.#written = this.#queued;
    this.#onError(error);
    this.#stop();
  };

  /** Nothing left to write (or the writer failed): small buffers are let go, waiters learn. */
  #stop(): void {
    this.#writing = false;
    const out = this.#out;
    this.#out = NONE;
    this.#outLength = this.#outFrom = this.#nextCut = 0;
    this.#outCuts.length = 0;
    if (out.length > INITIAL_BUFFER) this.#spare = out;
    else letGo(out);
    if (this.#fillLength === 0 && this.#fill.length <= INITIAL_BUFFER) {
      letGo(this.#fill);
      this.#fill = NONE;
    }
    this.#wake();
  }

  #wake(): void {
    const waiting = this.#writtenWaiters;
    if (waiting !== null && waiting.length > 0 && (waiting[0].position <= this.#written || this.#failed)) {
      let done = 0;
      while (done < waiting.length && (waiting[done].position <= this.#written || this.#failed)) done++;
      for (const waiter of waiting.splice(0, done)) waiter.resolve();
    }
    const waiters = this.#drainWaiters;
    if (waiters === null || waiters.length === 0 || (this.congested && !this.#failed)) return;
    this.#drainWaiters = null;
    for (const wake of waiters) wake();
  }
}
