/**
 * TCP transport over `Bun.listen` / `Bun.connect`.
 *
 * Bun's sockets are callback-based and unbuffered: `write()` may take only
 * part of a chunk (the rest goes out on `drain`), the `data` buffer must be
 * copied, `allowHalfOpen` keeps a socket writable after the peer's FIN, and
 * `pause()`/`resume()` give read backpressure.
 *
 * @module
 */

import {
  type Addr,
  type Conn,
  type ConnectOptions,
  ConnectionClosedError,
  type Listener,
  type ListenOptions,
  type Transport,
} from "./types.ts";

/** The slice of a Bun socket this adapter uses. */
export interface BunSocketLike {
  data: BunConn;
  readonly remoteAddress: string;
  readonly remotePort?: number;
  readonly localAddress?: string;
  readonly localPort: number;
  write(data: Uint8Array): number;
  shutdown(halfClose?: boolean): void;
  end(): void;
  terminate(): void;
  pause(): void;
  resume(): void;
  setNoDelay(noDelay?: boolean): boolean;
}

/** Socket event handlers, as `Bun.listen`/`Bun.connect` take them. */
export interface BunHandlers {
  binaryType: "uint8array";
  open(socket: BunSocketLike): void;
  data(socket: BunSocketLike, data: Uint8Array): void;
  drain(socket: BunSocketLike): void;
  end(socket: BunSocketLike): void;
  close(socket: BunSocketLike, error?: Error): void;
  error(socket: BunSocketLike, error: Error): void;
  connectError?(socket: BunSocketLike, error: Error): void;
}

/** The slice of the `Bun` namespace this adapter uses. */
export interface BunLike {
  listen(options: {
    hostname: string;
    port: number;
    allowHalfOpen: boolean;
    socket: BunHandlers;
  }): { readonly hostname: string; readonly port: number; stop(closeActive?: boolean): void };
  connect(options: {
    hostname: string;
    port: number;
    allowHalfOpen: boolean;
    data?: unknown;
    socket: BunHandlers;
  }): Promise<BunSocketLike>;
}

// Received bytes held before the socket is paused; one reader drains them.
const READ_HIGH_WATER = 256 * 1024;

type Waiter<T> = { resolve(value: T): void; reject(error: Error): void };

/** One Bun socket as a {@linkcode Conn}. */
class BunConn implements Conn {
  localAddr: Addr = { hostname: "", port: 0 };
  remoteAddr: Addr = { hostname: "", port: 0 };
  #socket: BunSocketLike | null = null;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #paused = false;
  #eof = false;
  #error: Error | null = null;
  #reader: Waiter<Uint8Array | null> | null = null;
  #unwritten: Uint8Array | null = null;
  #writer: Waiter<void> | null = null;
  #finRequested = false;
  #finSent = false;
  #closedLocally = false;
  #done = false;
  #resolveClosed!: () => void;
  readonly closed: Promise<void> = new Promise((resolve) => this.#resolveClosed = resolve);

  attach(socket: BunSocketLike): void {
    this.#socket = socket;
    socket.setNoDelay(true);
    this.localAddr = { hostname: socket.localAddress ?? "", port: socket.localPort };
    this.remoteAddr = { hostname: socket.remoteAddress, port: socket.remotePort ?? 0 };
  }

  // ---- Conn ----

  read(): Promise<Uint8Array | null> {
    if (this.#closedLocally) return Promise.reject(new ConnectionClosedError());
    const chunk = this.#chunks.shift();
    if (chunk !== undefined) {
      this.#buffered -= chunk.length;
      if (this.#paused && this.#buffered < READ_HIGH_WATER >>> 1) {
        this.#paused = false;
        this.#socket?.resume();
      }
      return Promise.resolve(chunk);
    }
    if (this.#eof) return Promise.resolve(null);
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => this.#reader = { resolve, reject });
  }

  write(chunk: Uint8Array): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    if (this.#done || this.#finRequested) {
      return Promise.reject(new ConnectionClosedError("write after close"));
    }
    const written = this.#socket!.write(chunk);
    if (written === chunk.length) return Promise.resolve();
    if (written < 0) return Promise.reject(this.#fail(new ConnectionClosedError("connection closed")));
    this.#unwritten = chunk.subarray(written);
    return new Promise((resolve, reject) => this.#writer = { resolve, reject });
  }

  closeWrite(): Promise<void> {
    if (this.#finRequested || this.#done) return Promise.resolve();
    this.#finRequested = true;
    if (this.#unwritten === null) this.#sendFin();
    return Promise.resolve();
  }

  close(): void {
    if (this.#closedLocally) return;
    this.#closedLocally = true;
    this.#socket?.end();
    this.#release(new ConnectionClosedError("connection closed"));
  }

  reset(): void {
    if (this.#closedLocally) return;
    this.#closedLocally = true;
    this.#socket?.terminate();
    this.#release(new ConnectionClosedError("connection closed"));
  }

  // ---- Socket events ----

  onData(data: Uint8Array): void {
    if (this.#done) return;
    // Bun reuses the buffer it passes in; keep a copy.
    const chunk = data.slice();
    const reader = this.#reader;
    if (reader !== null) {
      this.#reader = null;
      reader.resolve(chunk);
      return;
    }
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    if (!this.#paused && this.#buffered >= READ_HIGH_WATER) {
      this.#paused = true;
      this.#socket?.pause();
    }
  }

  onDrain(): void {
    const rest = this.#unwritten;
    if (rest === null) return;
    const written = this.#socket!.write(rest);
    if (written < 0) {
      this.#fail(new ConnectionClosedError("connection closed"));
      return;
    }
    if (written < rest.length) {
      this.#unwritten = rest.subarray(written);
      return;
    }
    this.#unwritten = null;
    const writer = this.#writer;
    this.#writer = null;
    writer?.resolve();
    if (this.#finRequested && !this.#finSent) this.#sendFin();
  }

  onEnd(): void {
    if (this.#closedLocally) return;
    this.#eof = true;
    const reader = this.#reader;
    if (reader !== null && this.#chunks.length === 0) {
      this.#reader = null;
      reader.resolve(null);
    }
    if (this.#finSent) this.#finish();
  }

  onClose(error?: Error): void {
    // Without an error the peer closed cleanly; after our own FIN, Bun reports
    // the peer's FIN this way instead of through `end`.
    if (!error) this.onEnd();
    this.#release(new ConnectionClosedError(error ? error.message : "connection closed by peer"));
  }

  // ---- Internals ----

  #sendFin(): void {
    this.#finSent = true;
    this.#socket?.shutdown();
    if (this.#eof) this.#finish();
  }

  /** Both directions ended cleanly: free the socket; unread bytes stay readable. */
  #finish(): void {
    this.#socket?.end();
    this.#release(new ConnectionClosedError("connection closed"));
  }

  #fail(error: Error): Error {
    if (!this.#error) this.#error = error;
    const reader = this.#reader;
    if (reader !== null) {
      // A pending reader has no buffered chunks; after a clean end it gets EOF.
      this.#reader = null;
      if (this.#closedLocally || !this.#eof) reader.reject(this.#error);
      else reader.resolve(null);
    }
    const writer = this.#writer;
    this.#writer = null;
    this.#unwritten = null;
    writer?.reject(this.#error);
    return this.#error;
  }

  #release(error: Error): void {
    if (this.#done) return;
    this.#done = true;
    this.#fail(error);
    this.#resolveClosed();
  }
}

const handlers: BunHandlers = {
  binaryType: "uint8array",
  open(socket) {
    // Listener sockets get their state here; dialed ones brought it along.
    if (!(socket.data instanceof BunConn)) socket.data = new BunConn();
    socket.data.attach(socket);
  },
  data: (socket, data) => socket.data.onData(data),
  drain: (socket) => socket.data.onDrain(),
  end: (socket) => socket.data.onEnd(),
  close: (socket, error) => socket.data?.onClose(error),
  error: (socket, error) => socket.data?.onClose(error),
};

class BunListener implements Listener {
  readonly addr: Addr;
  readonly #server: { stop(closeActive?: boolean): void };
  #queue: Conn[] = [];
  #waiter: ((conn: Conn | null) => void) | null = null;
  #closed = false;

  constructor(bun: BunLike, options: ListenOptions) {
    const server = bun.listen({
      hostname: options.hostname,
      port: options.port,
      allowHalfOpen: true,
      socket: {
        ...handlers,
        open: (socket) => {
          handlers.open(socket);
          this.#deliver(socket.data);
        },
      },
    });
    this.#server = server;
    this.addr = { hostname: server.hostname, port: server.port };
  }

  #deliver(conn: Conn): void {
    if (this.#closed) return conn.reset();
    const waiter = this.#waiter;
    if (waiter !== null) {
      this.#waiter = null;
      waiter(conn);
    } else {
      this.#queue.push(conn);
    }
  }

  accept(): Promise<Conn | null> {
    const conn = this.#queue.shift();
    if (conn !== undefined) return Promise.resolve(conn);
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => this.#waiter = resolve);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.stop(false);
    this.#waiter?.(null);
    this.#waiter = null;
    for (const conn of this.#queue) conn.reset();
    this.#queue = [];
  }
}

/**
 * Creates the TCP transport for Bun.
 *
 * @param bun the `Bun` namespace, or a stand-in with the same slice
 * @returns a {@linkcode Transport} named `tcp`
 */
export function bunTransport(bun: BunLike = (globalThis as unknown as { Bun: BunLike }).Bun): Transport {
  return {
    name: "tcp",
    listen(options: ListenOptions): Promise<Listener> {
      try {
        return Promise.resolve(new BunListener(bun, options));
      } catch (error) {
        return Promise.reject(error);
      }
    },
    async connect(options: ConnectOptions): Promise<Conn> {
      const conn = new BunConn();
      await bun.connect({
        hostname: options.hostname,
        port: options.port,
        allowHalfOpen: true,
        data: conn,
        socket: { ...handlers, connectError: () => {} },
      });
      return conn;
    },
  };
}
