/**
 * An in-memory transport: connected pairs of byte pipes with the same
 * semantics as TCP (half-close, reset, backpressure). For fast, deterministic
 * unit tests of everything above the transport.
 *
 * @module
 */

import { Deferred } from "../async.ts";
import {
  type Addr,
  type Conn,
  ConnectionClosedError,
  type ConnectOptions,
  type Listener,
  type ListenOptions,
  type Transport,
} from "./types.ts";

const HIGH_WATER = 64 * 1024;

/** One direction of a memory connection. */
class Pipe {
  #chunks: Uint8Array[] = [];
  #bytes = 0;
  #ended = false;
  #error: Error | null = null;
  #reader: { resolve(v: Uint8Array | null): void; reject(e: Error): void } | null = null;
  #drainWaiters: Array<{ resolve(): void; reject(e: Error): void }> = [];

  get ended(): boolean {
    return this.#ended;
  }

  push(chunk: Uint8Array): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    if (this.#ended) return Promise.reject(new ConnectionClosedError("write after closeWrite()"));
    if (chunk.length === 0) return Promise.resolve();
    const copy = chunk.slice();
    const reader = this.#reader;
    if (reader) {
      this.#reader = null;
      reader.resolve(copy);
      return Promise.resolve();
    }
    this.#chunks.push(copy);
    this.#bytes += copy.length;
    if (this.#bytes < HIGH_WATER) return Promise.resolve();
    return new Promise((resolve, reject) => this.#drainWaiters.push({ resolve, reject }));
  }

  read(): Promise<Uint8Array | null> {
    const chunk = this.#chunks.shift();
    if (chunk !== undefined) {
      this.#bytes -= chunk.length;
      if (this.#bytes < HIGH_WATER) this.#wakeWriters(null);
      return Promise.resolve(chunk);
    }
    if (this.#error) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => this.#reader = { resolve, reject });
  }

  end(): void {
    if (this.#ended || this.#error) return;
    this.#ended = true;
    if (this.#reader && this.#chunks.length === 0) {
      this.#reader.resolve(null);
      this.#reader = null;
    }
  }

  fail(error: Error): void {
    if (this.#error) return;
    this.#error = error;
    this.#chunks = [];
    this.#bytes = 0;
    this.#reader?.reject(error);
    this.#reader = null;
    this.#wakeWriters(error);
  }

  #wakeWriters(error: Error | null): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const waiter of waiters) error ? waiter.reject(error) : waiter.resolve();
  }
}

class MemoryConn implements Conn {
  peer!: MemoryConn;
  readonly #inbound: Pipe;
  readonly #outbound: Pipe;
  #done = false;
  readonly #closed = new Deferred<void>();
  /** Resolves once the connection is fully closed, however that happened; made on first use. */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  constructor(readonly localAddr: Addr, readonly remoteAddr: Addr, inbound: Pipe, outbound: Pipe) {
    this.#inbound = inbound;
    this.#outbound = outbound;
  }

  async read(): Promise<Uint8Array | null> {
    const chunk = await this.#inbound.read();
    if (chunk === null && this.#outbound.ended) this.#finish();
    return chunk;
  }

  write(chunk: Uint8Array): Promise<void> {
    return this.#outbound.push(chunk);
  }

  closeWrite(): Promise<void> {
    this.#outbound.end();
    return Promise.resolve();
  }

  close(): void {
    if (this.#done) return;
    this.#outbound.end();
    // Like TCP: the peer may still read what was sent, but its writes now fail.
    this.#inbound.fail(new ConnectionClosedError("connection closed"));
    this.#finish();
  }

  reset(): void {
    if (this.#done) return;
    this.#outbound.fail(new ConnectionClosedError("connection reset by peer"));
    this.#inbound.fail(new ConnectionClosedError("connection closed"));
    this.#finish();
    this.peer.#finish();
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    this.#closed.resolve();
  }
}

class MemoryListener implements Listener {
  #queue: Conn[] = [];
  #waiter: ((conn: Conn | null) => void) | null = null;
  #closed = false;

  constructor(readonly addr: Addr, readonly onClose: () => void) {}

  deliver(conn: Conn): boolean {
    if (this.#closed) return false;
    if (this.#waiter) {
      this.#waiter(conn);
      this.#waiter = null;
    } else {
      this.#queue.push(conn);
    }
    return true;
  }

  accept(): Promise<Conn | null> {
    const conn = this.#queue.shift();
    if (conn) return Promise.resolve(conn);
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => this.#waiter = resolve);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.onClose();
    this.#waiter?.(null);
    this.#waiter = null;
    for (const conn of this.#queue) conn.reset();
    this.#queue = [];
  }
}

/**
 * Creates an isolated in-memory network: listeners and dialers of one
 * transport see each other, and nothing else.
 *
 * @returns a {@linkcode Transport} named `memory`
 */
export function memoryTransport(): Transport {
  const listeners = new Map<string, MemoryListener>();
  let nextPort = 40000;
  let nextClientPort = 50000;
  const key = (hostname: string, port: number) => `${hostname}:${port}`;

  return {
    name: "memory",
    listen(options: ListenOptions): Promise<Listener> {
      let port = options.port;
      if (port === 0) {
        do port = nextPort++; while (listeners.has(key(options.hostname, port)));
      }
      const id = key(options.hostname, port);
      if (listeners.has(id)) {
        return Promise.reject(new Error(`address ${id} is already in use`));
      }
      const listener = new MemoryListener({ hostname: options.hostname, port }, () => listeners.delete(id));
      listeners.set(id, listener);
      return Promise.resolve(listener);
    },
    connect(options: ConnectOptions): Promise<Conn> {
      const listener = listeners.get(key(options.hostname, options.port)) ??
        listeners.get(key("0.0.0.0", options.port));
      if (!listener) {
        return Promise.reject(new Error(`connection refused: nothing listens on ${options.hostname}:${options.port}`));
      }
      const clientAddr = { hostname: "127.0.0.1", port: nextClientPort++ };
      const toServer = new Pipe();
      const toClient = new Pipe();
      const client = new MemoryConn(clientAddr, listener.addr, toClient, toServer);
      const server = new MemoryConn(listener.addr, clientAddr, toServer, toClient);
      client.peer = server;
      server.peer = client;
      listener.deliver(server);
      return Promise.resolve(client);
    },
  };
}
