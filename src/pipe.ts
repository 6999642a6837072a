/**
 * Two-way copy between connections, with half-close and backpressure.
 *
 * @module
 */

import { formatDuration } from "./log.ts";
import { type Conn, type Lender, lends } from "./transport/types.ts";

/** Bytes moved by {@linkcode pipe}, each way. */
export interface PipeResult {
  /** Bytes copied from `a` to `b`. */
  aToB: number;
  /** Bytes copied from `b` to `a`. */
  bToA: number;
  /** The first error, if the pipe ended by one; both ends were then reset. */
  error: Error | null;
}

/**
 * Copies bytes both ways until both directions have ended. An end of input on
 * one side becomes a half-close on the other, so a request/response protocol
 * that shuts down writing still gets its full reply. An error on either side
 * resets both, so neither peer mistakes a broken transfer for a complete one.
 * Both connections are closed when the pipe resolves; it never rejects.
 *
 * @param a one end
 * @param b the other end
 * @returns bytes copied each way, and the error that ended it, if any
 */
export function pipe(a: Conn, b: Conn, options: PipeOptions = {}): Promise<PipeResult> {
  return new Promise((resolve) => new Pipe(a, b, options, resolve));
}

/**
 * {@linkcode pipe} with a callback instead of a promise: `done` gets the
 * result. For callers that keep many pipes open and only act when one ends:
 * the promise, its resolving functions and a `then` cost each idle pipe a
 * few hundred bytes more.
 *
 * @param a one end
 * @param b the other end
 * @param done called once with the result when both directions have ended; must not throw
 */
export function pipeThen(a: Conn, b: Conn, done: (result: PipeResult) => void, options: PipeOptions = {}): void {
  new Pipe(a, b, options, done);
}

/** Options of {@linkcode pipe}. */
export interface PipeOptions {
  /** Reset both ends after this many milliseconds without a byte either way; 0: never. @default {0} */
  idleTimeout?: number;
  /** A read of `a` already under way: its result is the first chunk copied to `b`. */
  pendingRead?: Promise<Uint8Array | null>;
}

// The pipe and its two copies run on callbacks bound once, not on async
// functions: an idle pipe then holds its objects and one pending read each way,
// not two suspended frames with the promises and closures of their awaits.

/** Both directions of one {@linkcode pipe}, and what they moved. */
class Pipe {
  readonly #a: Conn;
  readonly #b: Conn;
  readonly #resolve: (result: PipeResult) => void;
  readonly #aToB: Copy;
  readonly #bToA: Copy;
  #error: Error | null = null;
  #running = 2;
  /** When a byte last moved, if an idle timeout is set. */
  #active = 0;
  readonly #timer: ReturnType<typeof setInterval> | null = null;

  constructor(a: Conn, b: Conn, options: PipeOptions, resolve: (result: PipeResult) => void) {
    this.#a = a;
    this.#b = b;
    this.#resolve = resolve;
    const idle = options.idleTimeout ?? 0;
    if (idle > 0) {
      this.#active = Date.now();
      // One coarse timer per pipe instead of resetting a timer on every chunk.
      this.#timer = setInterval(() => {
        if (Date.now() - this.#active >= idle) this.fail(new Error(`idle for ${formatDuration(idle)}`));
      }, Math.max(50, idle / 4));
    }
    this.#aToB = new Copy(this, a, b);
    this.#bToA = new Copy(this, b, a);
    this.#aToB.start(options.pendingRead);
    this.#bToA.start();
  }

  /** A chunk went through: the idle timeout starts over. */
  moved(): void {
    if (this.#timer !== null) this.#active = Date.now();
  }

  /** Ends the pipe with `error` (the first one counts): both ends are reset. */
  fail(error: unknown): void {
    if (this.#error === null) this.#error = error instanceof Error ? error : new Error(String(error));
    this.#a.reset();
    this.#b.reset();
  }

  /** One direction ended (cleanly or not); after both, the pipe resolves. */
  copyDone(): void {
    if (--this.#running > 0) return;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#a.close();
    this.#b.close();
    this.#resolve({ aToB: this.#aToB.moved, bToA: this.#bToA.moved, error: this.#error });
  }
}

/** Copies `from` into `to` until end of input, then half-closes `to`. */
class Copy {
  readonly #pipe: Pipe;
  readonly #from: Conn;
  readonly #to: Conn;
  /** Set if `from` lends its chunks: a resolved write holds no reference to its chunk, so chunks can be borrowed. */
  readonly #lender: Lender | null;
  #chunk: Uint8Array | null = null;
  /** Bytes copied so far. */
  moved = 0;

  constructor(pipe: Pipe, from: Conn, to: Conn) {
    this.#pipe = pipe;
    this.#from = from;
    this.#to = to;
    this.#lender = lends(from) ? from : null;
  }

  /** Starts copying, with `pendingRead` (a read of `from` under way) as the first chunk if given. */
  start(pendingRead?: Promise<Uint8Array | null>): void {
    if (pendingRead === undefined) return this.#read();
    pendingRead.then(this.#onChunk, this.#onError);
  }

  #read(): void {
    let next: Promise<Uint8Array | null>;
    try {
      const lender = this.#lender;
      if (lender?.readBorrowedThen !== undefined) return lender.readBorrowedThen(this.#onChunk, this.#onError);
      next = lender !== null ? lender.readBorrowed() : this.#from.read();
    } catch (error) {
      return this.#onError(error);
    }
    next.then(this.#onChunk, this.#onError);
  }

  readonly #onChunk = (chunk: Uint8Array | null): void => {
    let written: Promise<void>;
    try {
      if (chunk === null) {
        // Made here, once per copy: an idle copy holds no closure for its end.
        this.#to.closeWrite().then(() => this.#pipe.copyDone(), this.#onError);
        return;
      }
      this.#chunk = chunk;
      written = this.#to.write(chunk);
    } catch (error) {
      return this.#onError(error);
    }
    written.then(this.#onWritten, this.#onError);
  };

  readonly #onWritten = (): void => {
    const chunk = this.#chunk!;
    this.#chunk = null;
    // Counted first: a chunk given back may be freed (Bun), and then its length reads 0.
    this.moved += chunk.length;
    this.#lender?.giveBack(chunk);
    this.#pipe.moved();
    this.#read();
  };

  readonly #onError = (error: unknown): void => {
    this.#pipe.fail(error);
    this.#pipe.copyDone();
  };
}
