/**
 * The receiving half of a callback-driven connection (Bun sockets, `node:net`,
 * `node:tls`): bytes queue here until the one reader takes them. Past the
 * high-water mark the socket is asked to pause, and to resume below half of
 * it, so a slow reader slows the peer down instead of growing memory.
 *
 * @module
 */

import { ConnectionClosedError } from "./types.ts";

/** What the queue tells its socket. */
export interface InboundFlow {
  /** More than the high-water mark is queued: stop reading from the network. */
  pause(): void;
  /** The reader caught up: read again. */
  resume(): void;
}

/** Received bytes for one reader: chunks, then an end (FIN) or a failure. */
export class Inbound {
  readonly #highWater: number;
  readonly #flow: InboundFlow;
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
  #reader: { resolve(chunk: Uint8Array | null): void; reject(error: Error): void } | null = null;

  /**
   * @param highWater queued bytes at which the socket is paused
   * @param flow how to pause and resume the socket
   */
  constructor(highWater: number, flow: InboundFlow) {
    this.#highWater = highWater;
    this.#flow = flow;
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
    return this.#reader !== null;
  }

  /** Whether at least the high-water mark is queued. */
  get full(): boolean {
    return this.#buffered >= this.#highWater;
  }

  /** Next chunk, `null` after the peer's end, or the failure. */
  read(): Promise<Uint8Array | null> {
    if (this.#closedLocally) return Promise.reject(new ConnectionClosedError());
    const chunk = this.#chunks.shift();
    if (chunk !== undefined) {
      this.#buffered -= chunk.length;
      if (this.#paused && this.#buffered < this.#highWater >>> 1) {
        this.#paused = false;
        this.#flow.resume();
      }
      return Promise.resolve(chunk);
    }
    if (this.#eof) return Promise.resolve(null);
    if (this.failed) return Promise.reject(this.error);
    return new Promise((resolve, reject) => this.#reader = { resolve, reject });
  }

  /** Bytes arrived; the queue keeps `chunk`. */
  push(chunk: Uint8Array): void {
    if (this.failed || this.#closedLocally) return;
    const reader = this.#reader;
    if (reader !== null) {
      this.#reader = null;
      reader.resolve(chunk);
      return;
    }
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    if (!this.#paused && this.#buffered >= this.#highWater) {
      this.#paused = true;
      this.#flow.pause();
    }
  }

  /** The peer finished sending: after the queued bytes, reads give `null`. */
  end(): void {
    if (this.#closedLocally || this.#eof) return;
    this.#eof = true;
    const reader = this.#reader;
    if (reader !== null && this.#chunks.length === 0) {
      this.#reader = null;
      reader.resolve(null);
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
    const reader = this.#reader;
    if (reader !== null) {
      this.#reader = null;
      if (this.#closedLocally || !this.#eof) reader.reject(this.error!);
      else reader.resolve(null);
    }
  }

  /** Whether the connection is gone. */
  get failed(): boolean {
    return this.#reason !== null;
  }

  /** This side closed: every read fails from now on. */
  closeLocally(): void {
    this.#closedLocally = true;
  }

  /** The failure, if any. */
  get error(): Error | null {
    if (this.#reason !== null) this.#error ??= new ConnectionClosedError(this.#reason);
    return this.#error;
  }
}
