/**
 * Listeners whose connections need a handshake (TLS, WebSocket upgrade)
 * before they are useful. The handshakes run in the background, each with a
 * timeout, so one slow or silent peer never holds up `accept()`, and a failed
 * handshake drops that one connection instead of surfacing as an accept error.
 *
 * @module
 */

import { type Addr, type Conn, formatAddr, type Listener } from "./types.ts";

/** Ready connections (and accept errors) waiting for {@linkcode Listener.accept}. */
export class ReadyQueue {
  #items: Array<Conn | Error> = [];
  #waiter: ((item: Conn | Error | null) => void) | null = null;
  #space: (() => void) | null = null;
  #ended = false;

  /** Entries waiting to be taken. */
  get length(): number {
    return this.#items.length;
  }

  /** Whether {@linkcode end} was called. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Queues a connection (or an accept error to throw from `accept()`); resets it after `end()`. */
  push(item: Conn | Error): void {
    if (this.#ended) {
      if (!(item instanceof Error)) item.reset();
      return;
    }
    const waiter = this.#waiter;
    if (waiter !== null) {
      this.#waiter = null;
      waiter(item);
    } else {
      this.#items.push(item);
    }
  }

  /** Resolves once fewer than `limit` entries wait (or at the end). */
  room(limit: number): Promise<void> {
    if (this.#items.length < limit || this.#ended) return Promise.resolve();
    return new Promise((resolve) => this.#space = resolve);
  }

  /** The next connection, `null` after `end()`; throws a queued accept error. */
  async take(): Promise<Conn | null> {
    let item = this.#items.shift() ?? null;
    if (item === null && !this.#ended) item = await new Promise((resolve) => this.#waiter = resolve);
    const space = this.#space;
    this.#space = null;
    space?.();
    if (item instanceof Error) throw item;
    return item;
  }

  /** No more connections: pending and later `take()`s get `null`, queued ones are reset. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#waiter?.(null);
    this.#waiter = null;
    this.#space?.();
    this.#space = null;
    for (const item of this.#items) if (!(item instanceof Error)) item.reset();
    this.#items = [];
  }
}

/** Options for {@linkcode acceptInBackground}. */
export interface BackgroundAcceptOptions {
  /** Milliseconds each handshake may take; then the connection is reset. */
  timeout: number;
  /** What the handshake is, for messages: `TLS`, `WebSocket`. */
  what: string;
  /** Told about each dropped connection. */
  onHandshakeError?: (error: Error, remote: Addr) => void;
}

// Ready connections held while nobody calls accept(); past this the listener
// stops taking new ones, leaving them in the kernel's backlog as plain TCP does.
const READY_LIMIT = 16;

/**
 * Wraps a listener so that each accepted connection first runs `handshake`
 * in the background; `accept()` returns only connections whose handshake
 * succeeded.
 *
 * @param inner the listener of raw connections; closed with the result
 * @param handshake turns a raw connection into a ready one, or throws
 * @param options timeout and error reporting
 * @returns a listener of ready connections
 */
export function acceptInBackground(
  inner: Listener,
  handshake: (conn: Conn) => Promise<Conn>,
  options: BackgroundAcceptOptions,
): Listener {
  const ready = new ReadyQueue();
  const pending = new Set<Conn>();

  const run = async (raw: Conn) => {
    // Read now: a connection that was reset may no longer know its peer.
    const remote = raw.remoteAddr;
    pending.add(raw);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          reject(
            new Error(
              `${options.what} handshake from ${formatAddr(remote)} did not complete within ${options.timeout} ms`,
            ),
          );
        }, options.timeout);
      });
      const conn = await Promise.race([handshake(raw), timedOut]);
      ready.push(conn);
    } catch (error) {
      raw.reset();
      if (!ready.ended) {
        options.onHandshakeError?.(error instanceof Error ? error : new Error(String(error)), remote);
      }
    } finally {
      clearTimeout(timer);
      pending.delete(raw);
    }
  };

  (async () => {
    while (!ready.ended) {
      await ready.room(READY_LIMIT);
      if (ready.ended) break;
      let raw: Conn | null;
      try {
        raw = await inner.accept();
      } catch (error) {
        // Such as too many open files: the caller hears of it and paces itself.
        ready.push(error instanceof Error ? error : new Error(String(error)));
        await ready.room(1);
        continue;
      }
      if (raw === null) break;
      if (ready.ended) {
        raw.reset();
        break;
      }
      run(raw);
    }
    ready.end();
  })();

  return {
    addr: inner.addr,
    accept: () => ready.take(),
    close() {
      if (ready.ended) return;
      ready.end();
      inner.close();
      for (const conn of pending) conn.reset();
      pending.clear();
    },
  };
}
