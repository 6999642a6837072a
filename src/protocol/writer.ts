/**
 * Coalescing frame writer: frames are encoded straight into one of two
 * buffers; while one is being written to the connection the next fills up, so
 * a burst of small frames costs one write and steady state allocates nothing.
 *
 * @module
 */

import type { Conn } from "../transport/types.ts";
import { writeHeader, writeUint32 } from "./codec.ts";
import { HEADER_LENGTH } from "./frame.ts";

const INITIAL_BUFFER = 64 * 1024;

/** Writes frames to a connection, in the order they were queued. */
export class FrameWriter {
  readonly #conn: Conn;
  readonly #highWater: number;
  readonly #onError: (error: unknown) => void;
  #fill = new Uint8Array(INITIAL_BUFFER);
  #fillLength = 0;
  #spare = new Uint8Array(INITIAL_BUFFER);
  #inFlight = 0;
  #writing = false;
  #failed = false;
  #drainWaiters: Array<() => void> = [];

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
    return this.#fillLength + this.#inFlight;
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

  /** Queues a frame; copies `payload`, so the caller may reuse it at once. */
  frame(type: number, streamId: number, payload?: Uint8Array): void {
    if (this.#failed) return;
    const length = payload === undefined ? 0 : payload.length;
    const at = this.#reserve(HEADER_LENGTH + length);
    writeHeader(this.#fill, at, type, streamId, length);
    if (length > 0) this.#fill.set(payload!, at + HEADER_LENGTH);
  }

  /** Queues a frame whose payload is one uint32 (such as a window increment). */
  frameUint32(type: number, streamId: number, value: number): void {
    if (this.#failed) return;
    const at = this.#reserve(HEADER_LENGTH + 4);
    writeHeader(this.#fill, at, type, streamId, 4);
    writeUint32(this.#fill, at + HEADER_LENGTH, value);
  }

  /** Resolves once everything queued so far was handed to the connection. */
  async flushed(): Promise<void> {
    while ((this.#writing || this.#fillLength > 0) && !this.#failed) {
      await new Promise<void>((resolve) => this.#drainWaiters.push(resolve));
    }
  }

  #reserve(size: number): number {
    const at = this.#fillLength;
    if (at + size > this.#fill.length) {
      const grown = new Uint8Array(Math.max(this.#fill.length * 2, at + size));
      grown.set(this.#fill.subarray(0, at));
      this.#fill = grown;
    }
    this.#fillLength = at + size;
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
        this.#fill = this.#spare;
        this.#fillLength = 0;
        this.#spare = buffer;
        this.#inFlight = length;
        await this.#conn.write(buffer.subarray(0, length));
        this.#inFlight = 0;
        if (!this.congested) this.#wake();
      }
    } catch (error) {
      this.#failed = true;
      this.#fillLength = 0;
      this.#inFlight = 0;
      this.#onError(error);
    } finally {
      this.#writing = false;
      this.#wake();
    }
  }

  #wake(): void {
    const waiters = this.#drainWaiters;
    if (waiters.length === 0) return;
    this.#drainWaiters = [];
    for (const wake of waiters) wake();
  }
}
