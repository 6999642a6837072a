/**
 * TCP and TLS transport over `node:net` (and `node:tls` with `tls`), for the
 * npm package: `npx o3sr` runs under Node, which cannot run the other
 * adapters. Bun and Deno implement `node:net` too, so this adapter also runs
 * there (`bunx o3sr` runs the same bundle under Bun).
 *
 * Node sockets are streams: `write()` queues and returns `false` past the
 * high-water mark (then `drain` says when there is room), `end()` sends FIN
 * after everything queued, `allowHalfOpen` keeps a socket writable after the
 * peer's FIN, and `pause()`/`resume()` stop and restart reading from the
 * kernel, which is the read backpressure.
 *
 * TLS uses `node:tls` sockets, which are `node:net` sockets too, so one
 * {@linkcode Conn} class serves both. Servers use `tls.createServer`, which
 * hands out a socket only once its handshake completed and drops those that
 * fail or time out; clients verify as `tls.ts` describes (CA, name, pin).
 *
 * @module
 */

import { Deferred } from "../async.ts";
import * as netModule from "node:net";
import * as tlsModule from "node:tls";
import { ReadyQueue } from "./accept.ts";
import {
  checkFingerprint,
  checkListenTls,
  DEFAULT_HANDSHAKE_TIMEOUT,
  handshakeTimeoutError,
  tlsClientError,
  tlsVerification,
} from "./tls.ts";
import {
  type Addr,
  type Conn,
  ConnectionClosedError,
  type ConnectOptions,
  type Listener,
  type ListenOptions,
  type Transport,
} from "./types.ts";
import { Inbound, sharedReadBudget } from "./inbound.ts";

/** The slice of a `node:net` `Socket` (or `node:tls` `TLSSocket`) this adapter uses. */
export interface NodeSocketLike {
  readonly localAddress?: string;
  readonly localPort?: number;
  readonly remoteAddress?: string;
  readonly remotePort?: number;
  /** Whether `end()` was called and everything queued before it has been flushed. */
  readonly writableFinished?: boolean;
  write(data: Uint8Array, callback: (error?: Error | null) => void): boolean;
  end(): void;
  destroy(error?: Error): void;
  /** Closes with a TCP RST (Node 18.3+); missing or throwing on TLS sockets and some runtimes. */
  resetAndDestroy?(): void;
  pause(): void;
  resume(): void;
  setNoDelay(noDelay?: boolean): unknown;
  on(event: "data", listener: (data: Uint8Array) => void): unknown;
  on(event: "end" | "drain" | "finish", listener: () => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  on(event: "close", listener: (hadError: boolean) => void): unknown;
  once(event: "connect" | "secureConnect" | "finish" | "close", listener: () => void): unknown;
  once(event: "error", listener: (error: Error) => void): unknown;
  off(event: "error", listener: (error: Error) => void): unknown;
}

/** The slice of a `node:tls` client `TLSSocket` this adapter uses. */
export interface NodeTlsSocketLike extends NodeSocketLike {
  readonly authorized: boolean;
  readonly authorizationError?: Error | string | null;
  getPeerCertificate(detailed?: boolean): { raw?: Uint8Array } | null;
}

/** The options this adapter passes to `tls.connect`. */
export interface NodeTlsConnectOptions {
  host: string;
  port: number;
  servername?: string;
  ca?: string[];
  rejectUnauthorized: boolean;
  allowHalfOpen: true;
  checkServerIdentity(hostname: string, cert: unknown): Error | undefined;
}

/** The slice of a `node:net` `Server` (or `node:tls` `Server`) this adapter uses. */
export interface NodeServerLike {
  listen(options: { host: string; port: number }, callback: () => void): unknown;
  address(): { address: string; port: number } | string | null;
  close(): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  on(event: "tlsClientError", listener: (error: Error, socket: NodeSocketLike) => void): unknown;
  once(event: "error", listener: (error: Error) => void): unknown;
  off(event: "error", listener: (error: Error) => void): unknown;
}

/** The slice of the `node:net` module this adapter uses. */
export interface NodeNetLike {
  createServer(
    options: { allowHalfOpen: true },
    connectionListener: (socket: NodeSocketLike) => void,
  ): NodeServerLike;
  connect(options: { host: string; port: number; allowHalfOpen: true }): NodeSocketLike;
}

/** The slice of the `node:tls` module this adapter uses. */
export interface NodeTlsModuleLike {
  connect(options: NodeTlsConnectOptions): NodeTlsSocketLike;
  checkServerIdentity(hostname: string, cert: never): Error | undefined;
  createServer(
    options: { cert: string; key: string; allowHalfOpen: true; handshakeTimeout: number },
    secureConnectionListener: (socket: NodeSocketLike) => void,
  ): NodeServerLike;
}

// Received bytes held before the socket is paused; one reader drains them.
const READ_HIGH_WATER = 256 * 1024;
// How long close() waits for queued bytes to reach a peer that does not read
// before it gives up and destroys the socket, so a stuck peer cannot leak it.
const CLOSE_LINGER_MS = 30_000;

type Waiter<T> = { resolve(value: T): void; reject(error: Error): void };

/** One line for a socket error, in the words the other adapters use. */
function describe(error: Error): string {
  const code = (error as { code?: string }).code;
  if (code === "ECONNRESET") return "connection reset by peer";
  if (code === "EPIPE") return "connection closed by peer";
  return error.message;
}

/** One `node:net` (or `node:tls`) socket as a {@linkcode Conn}. */
class NodeConn implements Conn {
  readonly localAddr: Addr;
  readonly remoteAddr: Addr;
  readonly #socket: NodeSocketLike;
  readonly #inbound: Inbound;
  #writers = new Set<Waiter<void>>();
  /** Writes waiting for `drain`, called when it comes (or when no more can come). */
  #drainWaiters: Array<() => void> = [];
  #finSent = false;
  #closedLocally = false;
  #destroying = false;
  #done = false;
  readonly #closed = new Deferred<void>();
  /** Resolves once the connection is fully closed, however that happened; made on first use. */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  constructor(socket: NodeSocketLike) {
    this.#socket = socket;
    this.#inbound = new Inbound(
      READ_HIGH_WATER,
      { pause: () => socket.pause(), resume: () => socket.resume() },
      sharedReadBudget,
    );
    try {
      socket.setNoDelay(true);
    } catch {
      // Latency only.
    }
    this.localAddr = { hostname: socket.localAddress ?? "", port: socket.localPort ?? 0 };
    this.remoteAddr = { hostname: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
    socket.on("data", (data) => this.#onData(data));
    socket.on("end", () => this.#onEnd());
    socket.on("drain", () => this.#onDrain());
    // Without an `error` listener Node would throw it out of the event loop.
    socket.on("error", (error) => this.#fail(describe(error)));
    socket.on("close", () => {
      this.#onDrain();
      this.#release("connection closed by peer");
    });
  }

  // ---- Conn ----

  read(): Promise<Uint8Array | null> {
    return this.#inbound.read();
  }

  write(chunk: Uint8Array): Promise<void> {
    if (this.#inbound.failed) return Promise.reject(this.#inbound.error!);
    if (this.#done || this.#finSent) return Promise.reject(new ConnectionClosedError("write after close"));
    // Resolves once the socket is done with `chunk` (its callback: the kernel
    // took it, so the caller may reuse it) and, if `write()` returned false,
    // once `drain` says the socket has room again: the peer's pace is the
    // writer's pace.
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      this.#writers.add(waiter);
      let flushed = false;
      let roomy = false;
      const settle = () => {
        if (flushed && roomy && this.#writers.delete(waiter)) resolve();
      };
      const hasRoom = this.#socket.write(chunk, (error) => {
        if (error) {
          if (!this.#writers.delete(waiter)) return;
          this.#fail(describe(error));
          reject(this.#inbound.error!);
          return;
        }
        flushed = true;
        settle();
      });
      const onRoom = () => {
        roomy = true;
        settle();
      };
      if (hasRoom) onRoom();
      else this.#drainWaiters.push(onRoom);
    });
  }

  closeWrite(): Promise<void> {
    if (this.#finSent || this.#done) return Promise.resolve();
    this.#finSent = true;
    // `end()` queues FIN after the pending writes; with allowHalfOpen the
    // socket stays readable. An ending socket never emits `drain`, so waiting
    // writes now settle on their callbacks alone.
    this.#socket.end();
    this.#onDrain();
    if (this.#inbound.ended) this.#finish();
    return Promise.resolve();
  }

  close(): void {
    if (this.#closedLocally) return;
    this.#closedLocally = true;
    this.#inbound.closeLocally();
    if (!this.#finSent) {
      this.#finSent = true;
      this.#socket.end();
    }
    // Keep reading (and dropping) so the peer's FIN can still arrive.
    if (this.#inbound.paused) this.#socket.resume();
    this.#destroyWhenFlushed();
    this.#release("connection closed");
  }

  reset(): void {
    if (this.#closedLocally) return;
    this.#closedLocally = true;
    this.#inbound.closeLocally();
    const socket = this.#socket;
    try {
      if (typeof socket.resetAndDestroy !== "function") throw new Error("no resetAndDestroy");
      socket.resetAndDestroy();
    } catch {
      // TLS sockets (and runtimes without SO_LINGER) cannot send RST; the peer sees a plain close.
      socket.destroy();
    }
    this.#release("connection closed");
  }

  // ---- Socket events ----

  #onData(data: Uint8Array): void {
    if (this.#done) return;
    // A plain view of the bytes, not the Buffer: Buffer's `slice()` would
    // share memory where the caller expects a copy.
    this.#inbound.push(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  #onEnd(): void {
    if (this.#closedLocally) return;
    this.#inbound.end();
    if (this.#finSent) this.#finish();
  }

  #onDrain(): void {
    const waiting = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const onRoom of waiting) onRoom();
  }

  // ---- Internals ----

  /** Both directions ended cleanly: free the socket; unread bytes stay readable. */
  #finish(): void {
    this.#destroyWhenFlushed();
    this.#release("connection closed");
  }

  /** Destroys the socket once FIN went out, or after {@linkcode CLOSE_LINGER_MS} if it cannot. */
  #destroyWhenFlushed(): void {
    if (this.#destroying) return;
    this.#destroying = true;
    const socket = this.#socket;
    if (socket.writableFinished) {
      socket.destroy();
      return;
    }
    const timer = setTimeout(() => socket.destroy(), CLOSE_LINGER_MS);
    // Must not keep a process alive that has nothing else to do.
    (timer as { unref?: () => void }).unref?.();
    socket.once("finish", () => {
      clearTimeout(timer);
      socket.destroy();
    });
    socket.on("close", () => clearTimeout(timer));
  }

  /** The connection failed or ended: readers and writers learn why. */
  #fail(reason: string): void {
    this.#inbound.fail(reason);
    for (const writer of this.#writers) writer.reject(this.#inbound.error!);
    this.#writers.clear();
    this.#drainWaiters = [];
  }

  #release(reason: string): void {
    if (this.#done) return;
    this.#done = true;
    this.#fail(reason);
    this.#closed.resolve();
  }
}

/** A `node:net` or `node:tls` server as a {@linkcode Listener}. */
class NodeListener implements Listener {
  readonly addr: Addr;
  readonly #server: NodeServerLike;
  readonly #ready: ReadyQueue;

  constructor(server: NodeServerLike, ready: ReadyQueue) {
    this.#server = server;
    this.#ready = ready;
    const address = server.address();
    this.addr = typeof address === "object" && address !== null
      ? { hostname: address.address, port: address.port }
      : { hostname: String(address ?? ""), port: 0 };
  }

  accept(): Promise<Conn | null> {
    return this.#ready.take();
  }

  close(): void {
    if (this.#ready.ended) return;
    // Resets connections accepted by the runtime but not yet by the caller.
    this.#ready.end();
    try {
      this.#server.close();
    } catch {
      // Already closed.
    }
  }
}

/** The gist of an OpenSSL error: Node's message is a multi-line dump, its `reason` a few words. */
function tlsReason(error: Error): string {
  const reason = (error as { reason?: unknown }).reason;
  if (typeof reason === "string" && reason !== "") return reason;
  return error.message.split("\n")[0].trim();
}

/** Binds `server`; rejects with the runtime's error (it names the address, such as `EADDRINUSE`). */
function bind(server: NodeServerLike, options: ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    server.once("error", onError);
    server.listen({ host: options.hostname, port: options.port }, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

async function listen(net: NodeNetLike, tls: NodeTlsModuleLike, options: ListenOptions): Promise<Listener> {
  const ready = new ReadyQueue();
  let server: NodeServerLike;
  if (options.tls) {
    checkListenTls(options.tls);
    const timeout = options.tls.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
    server = tls.createServer(
      { cert: options.tls.cert, key: options.tls.key, allowHalfOpen: true, handshakeTimeout: timeout },
      (socket) => ready.push(new NodeConn(socket)),
    );
    server.on("tlsClientError", (error, socket) => {
      // The address first: a destroyed socket no longer knows it.
      const remote = { hostname: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
      socket.destroy();
      if (ready.ended) return;
      const timedOut = (error as { code?: string }).code === "ERR_TLS_HANDSHAKE_TIMEOUT" ||
        /handshake timeout/i.test(error.message);
      options.onHandshakeError?.(
        timedOut
          ? handshakeTimeoutError("TLS", remote, timeout)
          : new Error(`TLS handshake failed: ${tlsReason(error)}`),
        remote,
      );
    });
  } else {
    server = net.createServer({ allowHalfOpen: true }, (socket) => ready.push(new NodeConn(socket)));
  }
  await bind(server, options);
  // After binding, a server error is an accept failure (such as too many open
  // files): accept() throws it and the caller decides whether to go on.
  server.on("error", (error) => ready.push(error));
  return new NodeListener(server, ready);
}

function connect(net: NodeNetLike, options: ConnectOptions): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: options.hostname, port: options.port, allowHalfOpen: true });
    const onError = (error: Error) => {
      socket.destroy();
      reject(error);
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      // No bytes are lost meanwhile: a socket emits no data before it has a listener.
      resolve(new NodeConn(socket));
    });
  });
}

const IP_ADDRESS = /^(\d{1,3}(\.\d{1,3}){3}|\[?[0-9a-f:]*:[0-9a-f:.]*\]?)$/i;

/** Dials a TLS server and verifies it as `options.tls` says; resolves once both succeeded. */
function connectTls(
  tls: NodeTlsModuleLike,
  options: ConnectOptions & { tls: NonNullable<ConnectOptions["tls"]> },
): Promise<Conn> {
  const verification = tlsVerification(options.tls, options.hostname);
  const peer = `${options.hostname}:${options.port}`;
  const timeout = options.tls.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
  const { serverName } = verification;
  return new Promise((resolve, reject) => {
    let settled = false;
    let tcpUp = false;
    const socket = tls.connect({
      host: options.hostname,
      port: options.port,
      // SNI must not be an IP address (RFC 6066); the identity check still covers IPs.
      servername: IP_ADDRESS.test(serverName) ? undefined : serverName,
      ca: verification.mode === "ca" ? [verification.ca] : undefined,
      rejectUnauthorized: verification.mode === "default" || verification.mode === "ca",
      allowHalfOpen: true,
      // Consulted once the chain verified; checks the name the caller asked for.
      checkServerIdentity: (_hostname, cert) => tls.checkServerIdentity(serverName, cert as never),
    });
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      // Refused or unreachable is not a TLS problem, so it gets no TLS hint.
      reject(tcpUp ? tlsClientError(error, peer, verification) : error);
    };
    const timer = setTimeout(() => fail(handshakeTimeoutError("TLS", peer, timeout)), timeout);
    socket.once("connect", () => tcpUp = true);
    socket.once("error", fail);
    socket.once("close", () => fail(new Error("the server closed the connection during the handshake")));
    socket.once("secureConnect", async () => {
      try {
        if (verification.mode === "fingerprint") {
          await checkFingerprint(socket.getPeerCertificate(true)?.raw, verification.fingerprint, peer);
        } else if (verification.mode !== "insecure" && !socket.authorized) {
          // rejectUnauthorized already refuses these; this guards against a runtime that does not.
          throw new Error(String(socket.authorizationError ?? "certificate not authorized"));
        }
      } catch (error) {
        return fail(error);
      }
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off("error", fail);
      resolve(new NodeConn(socket));
    });
  });
}

/**
 * Creates the TCP transport over `node:net`; with `tls` in the options it
 * speaks TLS over `node:tls`. Works on Node, and on Bun and Deno through
 * their `node:` modules.
 *
 * @param net the `node:net` module, or a stand-in with the same slice
 * @param tls the `node:tls` module, or a stand-in with the same slice
 * @returns a {@linkcode Transport} named `tcp`
 */
export function nodeTransport(
  net: NodeNetLike = netModule as unknown as NodeNetLike,
  tls: NodeTlsModuleLike = tlsModule as unknown as NodeTlsModuleLike,
): Transport {
  return {
    name: "tcp",
    listen: (options) => listen(net, tls, options),
    async connect(options: ConnectOptions): Promise<Conn> {
      if (options.tls) return await connectTls(tls, { ...options, tls: options.tls });
      return await connect(net, options);
    },
  };
}
