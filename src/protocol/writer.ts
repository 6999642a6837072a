/**
 * Coalescing frame writer: headers and small frames are encoded straight into
 * one of two buffers; while one is being written to the connection the next
 * fills up, so a burst of small frames costs one write, and buffers that grew
 * are reused (small ones are let go while the writer is idle). Large payloads
 * are not copied: they are written from the caller's buffer, between the bytes
 * queued before and after them.
 *
 * @module
 */

import type { Conn } from "../transport/types.ts";
import { writeHeader, writeUint32 } from "./codec.ts";
import { HEADER_LENGTH } from "./frame.ts";

// Small to start: with a session per client (pool, event) a matcher and a
// relay hold thousands of writers, and a busy one grows its two buffers to
// fit. 1 KiB holds a handshake and a few control frames; against 4 KiB it cut
// an idle `event` client from 51 to 35 KiB (Bun, 5,000 clients). Buffers no
// larger than this are let go whenever the writer is idle: making one again
// costs far less than the write it is for, and an idle writer then holds none.
const INITIAL_BUFFER = 1024;
/** No buffer: the next frame makes one. */
const NONE = new Uint8Array(0);

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

/** Writes frames to a connection, in the order they were queued. */
export class FrameWriter {
  readonly #conn: Conn;
  readonly #highWater: number;
  readonly #onError: (error: unknown) => void;
  #fill = NONE;
  #fillLength = 0;
  #fillCuts: Cut[] = [];
  #spare = NONE;
  /** Bytes ever queued, and ever handed to the connection: positions in the output. */
  #queued = 0;
  #written = 0;
  #writing = false;
  #failed = false;
  #drainWaiters: Array<() => void> = [];
  #writtenWaiters: Array<{ position: number; resolve: () => void }> = [];

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
    if (!this.congested || this.#failed) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
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
    if (this.#written >= position || this.#failed) return Promise.resolve();
    return new Promise((resolve) => this.#writtenWaiters.push({ position, resolve }));
  }

  /** Resolves once everything queued so far was handed to the connection. */
  flushed(): Promise<void> {
    return this.written(this.#queued);
  }

  #reserve(size: number): number {
    const at = this.#fillLength;
    if (at + size > this.#fill.length) {
      const grown = new Uint8Array(Math.max(this.#fill.length * 2, at + size, INITIAL_BUFFER));
      grown.set(this.#fill.subarray(0, at));
      this.#fill = grown;
    }
    this.#fillLength = at + size;
    this.#queued += size;
    if (!this.#writing) {
      this.#writing = true;
      // Defer to a microtask so frames queued in the same tick share one write.
      queueMicrotask(() => this.#flush());
    }
    return at;
  }

  async #flush(): Promise<void> {
    try {
      while (this.#fillLength > 0 && !this.#failed) {
        const buffer = this.#fill;
        const length = this.#fillLength;
        const cuts = this.#fillCuts;
        this.#fill = this.#spare;
        this.#fillLength = 0;
        this.#fillCuts = [];
        this.#spare = buffer;
        let from = 0;
        for (const cut of cuts) {
          await this.#write(buffer.subarray(from, cut.at));
          await this.#write(cut.payload);
          from = cut.at;
        }
        if (from < length) await this.#write(buffer.subarray(from, length));
      }
    } catch (error) {
      this.#failed = true;
      this.#fillLength = 0;
      this.#fillCuts = [];
      this.#written = this.#queued;
      this.#onError(error);
    } finally {
      this.#writing = false;
      if (this.#spare.length <= INITIAL_BUFFER) this.#spare = NONE;
      if (this.#fillLength === 0 && this.#fill.length <= INITIAL_BUFFER) this.#fill = NONE;
      this.#wake();
    }
  }

  async #write(bytes: Uint8Array): Promise<void> {
    if (this.#failed) return;
    await this.#conn.write(bytes);
    this.#written += bytes.length;
    this.#wake();
  }

  #wake(): void {
    const waiting = this.#writtenWaiters;
    if (waiting.length > 0 && (waiting[0].position <= this.#written || this.#failed)) {
      let done = 0;
      while (done < waiting.length && (waiting[done].position <= this.#written || this.#failed)) done++;
      for (const waiter of waiting.splice(0, done)) waiter.resolve();
    }
    if (this.#drainWaiters.length === 0 || (this.congested && !this.#failed)) return;
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const wake of waiters) wake();
  }
}
