/**
 * Two-way copy between connections, with half-close and backpressure.
 *
 * @module
 */

import { formatDuration } from "./log.ts";
import { type Conn, lends } from "./transport/types.ts";

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
  const result: PipeResult = { aToB: 0, bToA: 0, error: null };
  const fail = (error: unknown) => {
    if (result.error === null) result.error = error instanceof Error ? error : new Error(String(error));
    a.reset();
    b.reset();
  };
  let active = Date.now();
  const idle = options.idleTimeout ?? 0;
  // One coarse timer per pipe instead of resetting a timer on every chunk.
  const timer = idle > 0
    ? setInterval(() => {
      if (Date.now() - active >= idle) fail(new Error(`idle for ${formatDuration(idle)}`));
    }, Math.max(50, idle / 4))
    : null;
  const moved = idle > 0
    ? (n: number) => {
      active = Date.now();
      return n;
    }
    : (n: number) => n;
  // Not an async function: a pipe waiting on idle peers holds two suspended
  // copies, not a third frame waiting on them.
  return Promise.all([
    copy(a, b, (n) => result.aToB += moved(n), options.pendingRead).catch(fail),
    copy(b, a, (n) => result.bToA += moved(n)).catch(fail),
  ]).then(() => {
    if (timer !== null) clearInterval(timer);
    a.close();
    b.close();
    return result;
  });
}

/** Options of {@linkcode pipe}. */
export interface PipeOptions {
  /** Reset both ends after this many milliseconds without a byte either way; 0: never. @default {0} */
  idleTimeout?: number;
  /** A read of `a` already under way: its result is the first chunk copied to `b`. */
  pendingRead?: Promise<Uint8Array | null>;
}

/** Copies `from` into `to` until end of input, then half-closes `to`. */
async function copy(
  from: Conn,
  to: Conn,
  count: (n: number) => void,
  pendingRead?: Promise<Uint8Array | null>,
): Promise<void> {
  // A resolved write holds no reference to its chunk, so chunks can be borrowed.
  const lender = lends(from) ? from : null;
  for (;;) {
    const chunk = await (pendingRead ?? (lender ? lender.readBorrowed() : from.read()));
    pendingRead = undefined;
    if (chunk === null) return to.closeWrite();
    await to.write(chunk);
    lender?.giveBack(chunk);
    count(chunk.length);
  }
}
