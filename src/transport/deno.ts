/**
 * TCP and TLS transport for Deno: TCP over `Deno.listen` / `Deno.connect`,
 * TLS (with `tls` in the options) made of `node:tls` over those TCP
 * connections (see `node_tls.ts` for why not `Deno.listenTls`/`Deno.startTls`).
 *
 * Built on `read()`/`write()`/`closeWrite()` rather than `conn.readable`, which
 * closes the whole socket at EOF and so breaks half-close. Half-close works
 * over TLS too: `closeWrite()` sends close_notify and FIN, and the peer reads
 * the end of the stream.
 *
 * @module
 */

import { type Deferred, endSignal } from "../async.ts";
import { acceptInBackground } from "./accept.ts";
import { Inbound, type InboundFlow, sharedReadBudget } from "./inbound.ts";
import { MAX_READ, ReadBuffers } from "./read_buffers.ts";
import type { NodeTlsLike } from "./node_tls.ts";
import { checkListenTls, DEFAULT_HANDSHAKE_TIMEOUT, importNodeTls, tlsVerification } from "./tls.ts";
import {
  type Addr,
  type Conn,
  ConnectionClosedError,
  type ConnectOptions,
  type Listener,
  type ListenOptions,
  type Transport,
} from "./types.ts";

/** The slice of a Deno TCP connection this adapter uses. */
export interface DenoConnLike {
  readonly localAddr: unknown;
  readonly remoteAddr: unknown;
  read(buffer: Uint8Array): Promise<number | null>;
  write(data: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
  setNoDelay?(noDelay?: boolean): void;
}

/** The slice of a Deno listener this adapter uses. */
export interface DenoListenerLike {
  readonly addr: unknown;
  accept(): Promise<DenoConnLike>;
  close(): void;
}

/** The slice of the `Deno` namespace this adapter uses. */
export interface DenoLike {
  listen(options: { hostname: string; port: number; transport: "tcp" }): DenoListenerLike;
  connect(options: { hostname: string; port: number; transport: "tcp" }): Promise<DenoConnLike>;
}

// Reads start small and grow while the peer keeps filling them: an idle
// connection's pending read holds its buffer. 512 B against 1 KiB: a Deno
// matcher + relay hold 17.8 KiB per idle stream instead of 18.9 (1 KiB against
// 2 KiB had saved 2 of 26); a larger request costs one more read.
const MIN_READ = 512;
/** A read this small that is answered at once is a request or a reply. */
const SMALL_READ = 16 * 1024;
/**
 * Bytes read ahead of the consumer before reading stops. Reading only when the
 * consumer asks leaves a busy consumer's socket unread for milliseconds, so
 * Linux never grows its receive buffer (it grows it only for a reader that
 * keeps up), and that stream then crawls beside its siblings for good.
 */
const READ_AHEAD = 512 * 1024;

function toAddr(addr: unknown): Addr {
  const { hostname, port } = addr as { hostname?: string; port?: number };
  return { hostname: hostname ?? "", port: port ?? 0 };
}

function describe(error: unknown): string {
  const name = error instanceof Error ? error.name : "";
  if (name === "ConnectionReset") return "connection reset by peer";
  if (name === "BrokenPipe") return "connection closed by peer";
  return error instanceof Error ? error.message : String(error);
}

class DenoConn implements Conn, InboundFlow {
  readonly #conn: DenoConnLike;
  // Pausing is the read loop stopping while the queue says so (full, or past the
  // shared budget with no reader waiting); resuming starts it again. The
  // connection is the queue's flow itself: no object and closures per connection.
  readonly #inbound: Inbound = new Inbound(READ_AHEAD, this, sharedReadBudget);
  #reading = false;
  #readSize = MIN_READ;
  /** Room given to the read under way: less than `#readSize` when it fills the rest of a buffer. */
  #asked = 0;
  /** Where reads land; chunks lent by {@linkcode readBorrowed} let their memory be read into again. */
  readonly #buffers = new ReadBuffers();
  #wroteFin = false;
  #done = false;
  #closed: Deferred<void> | null = null;
  /** Resolves once the connection is fully closed, however that happened; made on first use. */
  get closed(): Promise<void> {
    return (this.#closed ??= endSignal(this.#done)).promise;
  }

  constructor(conn: DenoConnLike) {
    this.#conn = conn;
    try {
      conn.setNoDelay?.(true);
    } catch {
      // Not every Deno connection type supports it; latency only.
    }
  }

  // Made when asked (a few times per connection), not kept: an idle connection holds Deno's copies already.
  get localAddr(): Addr {
    return toAddr(this.#conn.localAddr);
  }

  get remoteAddr(): Addr {
    return toAddr(this.#conn.remoteAddr);
  }

  read(): Promise<Uint8Array | null> {
    const chunk = this.#inbound.read();
    this.#readAhead();
    return chunk;
  }

  readBorrowed(): Promise<Uint8Array | null> {
    const chunk = this.#inbound.readBorrowed();
    this.#readAhead();
    return chunk;
  }

  readBorrowedThen(onChunk: (chunk: Uint8Array | null) => void, onError: (error: Error) => void): void {
    this.#inbound.readBorrowedThen(onChunk, onError);
    this.#readAhead();
  }

  giveBack(chunk: Uint8Array): void {
    this.#buffers.giveBack(chunk);
  }

  /** {@linkcode InboundFlow}: the read buffers learn whether `chunk` comes back. */
  delivered(chunk: Uint8Array, borrowed: boolean): void {
    if (borrowed) this.#buffers.lend(chunk);
    else this.#buffers.keep(chunk);
  }

  /** {@linkcode InboundFlow}: the read loop checks the queue before each read, so nothing to do here. */
  pause(): void {}

  /** {@linkcode InboundFlow}: the reader caught up; read again. */
  resume(): void {
    this.#readAhead();
  }

  /**
   * Reads into the queue until it is full, the peer's end, or a failure. Each
   * read continues in callbacks bound once rather than in an async function,
   * so an idle connection's pending read holds no suspended frame as well.
   */
  #readAhead(): void {
    if (this.#reading) return;
    this.#reading = true;
    this.#readNext();
  }

  #readNext(): void {
    if (this.#done || this.#inbound.ended || this.#inbound.paused) {
      this.#reading = false;
      return;
    }
    const buffer = this.#buffers.room(this.#readSize);
    this.#asked = buffer.length;
    this.#conn.read(buffer).then(this.#onRead, this.#onReadError);
  }

  readonly #onReadError = (error: unknown): void => {
    this.#reading = false;
    this.#release(describe(error));
  };

  readonly #onRead = (n: number | null): void => {
    if (n === null) {
      this.#reading = false;
      this.#inbound.end();
      if (this.#wroteFin) this.#release("connection closed");
      return;
    }
    const size = this.#readSize;
    // A read given less room than asked (the rest of a buffer) and filled says nothing about the size.
    if (n === this.#asked) {
      if (n === size) this.#readSize = Math.min(size * 2, MAX_READ);
    } else if (n < size >>> 2) this.#readSize = Math.max(size >>> 1, MIN_READ);
    // A small chunk for an idle reader is a request or a reply: read next
    // only when asked, so its answer is written first (one syscall less
    // before it). Bulk data keeps the reads going.
    const interactive = this.#inbound.waiting && n <= SMALL_READ;
    // Settled first: a reader called back may read again at once, and that
    // must start the next read.
    if (interactive) this.#reading = false;
    if (this.#inbound.pushJoined(this.#buffers.filled(n))) this.#buffers.joined();
    if (!interactive) this.#readNext();
  };

  async write(chunk: Uint8Array): Promise<void> {
    if (this.#done || this.#wroteFin) throw new ConnectionClosedError("write after close");
    try {
      let offset = 0;
      while (offset < chunk.length) {
        offset += await this.#conn.write(offset === 0 ? chunk : chunk.subarray(offset));
      }
    } catch (error) {
      // Released already (closed here, or the read side failed first): that reason stands.
      this.#release(describe(error));
      throw this.#inbound.error!;
    }
  }

  async closeWrite(): Promise<void> {
    if (this.#done || this.#wroteFin) return;
    this.#wroteFin = true;
    try {
      await this.#conn.closeWrite();
    } catch {
      // The peer already closed; nothing left to finish.
    }
    if (this.#inbound.ended) this.#release("connection closed");
  }

  close(): void {
    this.#inbound.closeLocally();
    this.#release("connection closed");
  }

  reset(): void {
    // Deno offers no SO_LINGER, so the peer may see a plain close here.
    this.close();
  }

  /** The socket is finished with: queued bytes stay readable, then reads give the end or `reason`. */
  #release(reason: string): void {
    if (this.#done) return;
    this.#done = true;
    this.#inbound.fail(reason);
    try {
      this.#conn.close();
    } catch {
      // Already closed by the runtime.
    }
    this.#closed?.resolve();
  }
}

class DenoListener implements Listener {
  readonly addr: Addr;
  readonly #listener: DenoListenerLike;
  #closed = false;

  constructor(listener: DenoListenerLike) {
    this.#listener = listener;
    this.addr = toAddr(listener.addr);
  }

  async accept(): Promise<Conn | null> {
    if (this.#closed) return null;
    try {
      return new DenoConn(await this.#listener.accept());
    } catch (error) {
      if (this.#closed) return null;
      throw error;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
  }
}

/** TLS over `node:tls`, as the adapter uses it. */
interface TlsModules {
  adapter: typeof import("./node_tls.ts");
  nodeTls: NodeTlsLike;
}

function listenTls(
  deno: DenoLike,
  { adapter, nodeTls }: TlsModules,
  options: ListenOptions & { tls: NonNullable<ListenOptions["tls"]> },
) {
  const { hostname, port, tls } = options;
  const context = adapter.serverContext(nodeTls, tls);
  const raw = new DenoListener(deno.listen({ hostname, port, transport: "tcp" }));
  return acceptInBackground(raw, (conn) => adapter.acceptNodeTls(nodeTls, conn, context), {
    what: "TLS",
    timeout: tls.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT,
    onHandshakeError: options.onHandshakeError,
  });
}

/**
 * Creates the TCP transport for Deno; with `tls` in the options it speaks TLS.
 *
 * @param deno the `Deno` namespace, or a stand-in with the same slice
 * @param nodeTls the `node:tls` module (for TLS), or a stand-in; by default imported at the first TLS listen or connect
 * @returns a {@linkcode Transport} named `tcp`
 */
export function denoTransport(
  deno: DenoLike = (globalThis as unknown as { Deno: DenoLike }).Deno,
  nodeTls?: NodeTlsLike,
): Transport {
  // Loaded at the first TLS listen or connect: together they cost every process ~7 MiB.
  const tlsModules = async (): Promise<TlsModules> => ({
    adapter: await import("./node_tls.ts"),
    nodeTls: nodeTls ?? await importNodeTls<NodeTlsLike>(),
  });
  return {
    name: "tcp",
    listen(options: ListenOptions): Promise<Listener> {
      try {
        if (options.tls) {
          checkListenTls(options.tls);
          const tls = options.tls;
          return tlsModules().then((modules) => listenTls(deno, modules, { ...options, tls }));
        }
        return Promise.resolve(
          new DenoListener(deno.listen({ hostname: options.hostname, port: options.port, transport: "tcp" })),
        );
      } catch (error) {
        return Promise.reject(error);
      }
    },
    async connect(options: ConnectOptions): Promise<Conn> {
      // Bad TLS options fail before anything is dialed.
      if (options.tls) tlsVerification(options.tls, options.hostname);
      const raw = new DenoConn(
        await deno.connect({ hostname: options.hostname, port: options.port, transport: "tcp" }),
      );
      if (!options.tls) return raw;
      const { adapter, nodeTls } = await tlsModules();
      return await adapter.startNodeTls(nodeTls, raw, { ...options, tls: options.tls });
    },
  };
}
