/**
 * TCP and TLS transport over `Bun.listen` / `Bun.connect` (TLS with their
 * `tls` options).
 *
 * Bun's sockets are callback-based and unbuffered: `write()` may take only
 * part of a chunk (the rest goes out on `drain`), the `data` buffer must be
 * copied, `allowHalfOpen` keeps a socket writable after the peer's FIN, and
 * `pause()`/`resume()` give read backpressure.
 *
 * TLS: with a `handshake` handler, `open` fires at TCP connect and
 * `handshake` once TLS is up, so listeners hand out a connection only from
 * `handshake` (a timer drops those that never get there) and clients check
 * the server there (CA and name by Bun, then again here; or the pinned
 * fingerprint). Half-close works over TLS: `shutdown()` sends close_notify
 * and FIN, and the socket stays readable.
 *
 * @module
 */

import { type Deferred, endSignal, RESOLVED } from "../async.ts";
import {
  checkFingerprint,
  checkListenTls,
  DEFAULT_HANDSHAKE_TIMEOUT,
  handshakeTimeoutError,
  importNodeTls,
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
import { Inbound, type InboundFlow, sharedReadBudget } from "./inbound.ts";

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
  /** TLS sockets: whether the peer's certificate verified. */
  readonly authorized?: boolean;
  /** TLS sockets: the peer's certificate, `raw` being its DER bytes. */
  getPeerCertificate?(): { raw?: Uint8Array } | null;
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
  handshake?(socket: BunSocketLike, success: boolean, authorizationError: Error | null): void;
}

/** The `tls` options this adapter passes to `Bun.listen` / `Bun.connect`. */
export interface BunTlsOptions {
  cert?: string;
  key?: string;
  ca?: string;
  serverName?: string;
  rejectUnauthorized?: boolean;
}

/** The slice of `node:tls` this adapter uses: the same name check Node applies. */
export interface BunNodeTlsLike {
  checkServerIdentity(hostname: string, cert: never): Error | undefined;
}

/** The slice of the `Bun` namespace this adapter uses. */
export interface BunLike {
  listen(options: {
    hostname: string;
    port: number;
    allowHalfOpen: boolean;
    tls?: BunTlsOptions;
    socket: BunHandlers;
  }): { readonly hostname: string; readonly port: number; stop(closeActive?: boolean): void };
  connect(options: {
    hostname: string;
    port: number;
    allowHalfOpen: boolean;
    tls?: BunTlsOptions;
    data?: unknown;
    socket: BunHandlers;
  }): Promise<BunSocketLike>;
}

// Received bytes held before the socket is paused; one reader drains them.
// uSockets hands over up to 512 KiB per event, so a lower mark would pause
// and resume the socket (two epoll_ctl calls) after nearly every event.
const READ_HIGH_WATER = 1024 * 1024;

// A TLS socket's end() sends close_notify and keeps the socket open until the
// peer answers, and from then on it can no longer be aborted: a peer that never
// answers would hold it forever. So TLS sockets are closed with shutdown(),
// end() once the peer's close arrived, and terminate() after this many ms.
const TLS_CLOSE_GRACE = 2000;

/**
 * Frees a chunk Bun handed over, now rather than at a collection: its reader
 * is done, and each event's buffer is the chunk's alone. Bun collects after
 * every few MiB of reads, and by then the chunks still queued (in streams, in
 * the session's writer) survive into the old generation, where they stay until
 * a full collection: under bulk load that memory, not the data in flight, is
 * most of the process's size.
 */
function free(chunk: Uint8Array): void {
  // Small ones are left to the collector: freeing them costs more than it saves.
  if (chunk.byteLength < FREE_AT) return;
  const memory = chunk.buffer as ArrayBuffer & { transfer?(length: number): ArrayBuffer };
  // Detaching an ArrayBuffer releases its memory (ES2024 transfer).
  if (chunk.byteOffset === 0 && chunk.byteLength === memory.byteLength) memory.transfer?.(0);
}

/** Chunks at least this large are freed when given back. */
const FREE_AT = 16 * 1024;

type Waiter<T> = { resolve(value: T): void; reject(error: Error): void };

/** Who waits for a TLS socket's handshake, and hears if it closes first. */
interface HandshakeWatch {
  handshake(socket: BunSocketLike, success: boolean, authorizationError: Error | null): void;
  closed(error?: Error): void;
}

/** One Bun socket as a {@linkcode Conn}. */
class BunConn implements Conn, InboundFlow {
  // Read from the socket when first asked, as each getter is a system call and
  // most connections are never asked (a relay's to its destination); accepted
  // ones read the peer's at once. Kept as fields, made into objects when asked
  // for: an idle connection holds two objects fewer. null: not read yet.
  #localHost: string | null = null;
  #localPort = 0;
  #remoteHost: string | null = null;
  #remotePort = 0;
  #socket: BunSocketLike | null = null;
  // The connection is the queue's flow itself: no object and closures per connection.
  readonly #inbound: Inbound = new Inbound(READ_HIGH_WATER, this, sharedReadBudget);
  #unwritten: Uint8Array | null = null;
  #writer: Waiter<void> | null = null;
  #finRequested = false;
  #finSent = false;
  #closedLocally = false;
  #done = false;
  #closed: Deferred<void> | null = null;
  /** Resolves once the connection is fully closed, however that happened; made on first use. */
  get closed(): Promise<void> {
    return (this.#closed ??= endSignal(this.#done)).promise;
  }
  /** Set while a TLS handshake is awaited. */
  watch: HandshakeWatch | null = null;
  /** Whether this is a TLS socket. */
  tls = false;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;
  #awaitingPeerClose = false;

  /** @param accepted a listener's socket: its peer's address is read now. */
  attach(socket: BunSocketLike, accepted: boolean): void {
    // No setNoDelay(true): uSockets sets TCP_NODELAY on every socket it opens or accepts.
    this.#socket = socket;
    // A server logs and checks its peers, sometimes once the socket is gone (a handshake that timed out).
    if (accepted) this.#readRemote();
  }

  /** Empty if first asked once the connection is closed: Bun no longer knows them then. */
  get localAddr(): Addr {
    const socket = this.#socket;
    if (this.#localHost === null && socket !== null) {
      this.#localHost = socket.localAddress ?? "";
      this.#localPort = socket.localPort ?? 0;
    }
    return { hostname: this.#localHost ?? "", port: this.#localPort };
  }

  /** Empty if first asked once the connection is closed: Bun no longer knows them then. */
  get remoteAddr(): Addr {
    this.#readRemote();
    return { hostname: this.#remoteHost ?? "", port: this.#remotePort };
  }

  #readRemote(): void {
    const socket = this.#socket;
    if (this.#remoteHost !== null || socket === null) return;
    this.#remoteHost = socket.remoteAddress ?? "";
    this.#remotePort = socket.remotePort ?? 0;
  }

  // ---- Conn ----

  read(): Promise<Uint8Array | null> {
    return this.#inbound.read();
  }

  readBorrowed(): Promise<Uint8Array | null> {
    return this.#inbound.readBorrowed();
  }

  readBorrowedThen(onChunk: (chunk: Uint8Array | null) => void, onError: (error: Error) => void): void {
    this.#inbound.readBorrowedThen(onChunk, onError);
  }

  giveBack(chunk: Uint8Array): void {
    if (this.#inbound.giveBack(chunk)) free(chunk);
  }

  write(chunk: Uint8Array): Promise<void> {
    if (this.#inbound.failed) return Promise.reject(this.#inbound.error!);
    if (this.#done || this.#finRequested) {
      return Promise.reject(new ConnectionClosedError("write after close"));
    }
    const written = this.#socket!.write(chunk);
    if (written === chunk.length) return RESOLVED;
    if (written < 0) {
      this.#fail("connection closed");
      return Promise.reject(this.#inbound.error!);
    }
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
    this.#inbound.closeLocally();
    this.#end();
    this.#release("connection closed");
  }

  reset(): void {
    if (this.#closedLocally) return;
    this.#closedLocally = true;
    this.#inbound.closeLocally();
    this.#socket?.terminate();
    this.#release("connection closed");
  }

  // ---- InboundFlow ----

  /** The reader is behind: stop reading the socket. */
  pause(): void {
    this.#socket?.pause();
  }

  /** The reader caught up: read the socket again. */
  resume(): void {
    this.#socket?.resume();
  }

  // ---- Socket events ----

  onData(data: Uint8Array): void {
    if (this.#done) return;
    // Bun 1.4 hands each event a fresh buffer (Bun's own node:net keeps it
    // too), so no copy; the byte-exact tests that hold chunks while more
    // arrive would catch a runtime that reused it.
    this.#inbound.push(data);
  }

  onDrain(): void {
    const rest = this.#unwritten;
    if (rest === null) return;
    const written = this.#socket!.write(rest);
    if (written < 0) {
      this.#fail("connection closed");
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
    if (this.#awaitingPeerClose) {
      // Closed here and now by the peer too: end() completes at once.
      this.#awaitingPeerClose = false;
      this.#socket?.end();
      return;
    }
    if (this.#closedLocally) return;
    this.#inbound.end();
    if (this.#finSent) this.#finish();
  }

  onHandshake(success: boolean, authorizationError: Error | null): void {
    const watch = this.watch;
    this.watch = null;
    if (this.#socket) watch?.handshake(this.#socket, success, authorizationError);
  }

  onClose(error?: Error): void {
    clearTimeout(this.#graceTimer);
    const watch = this.watch;
    this.watch = null;
    watch?.closed(error);
    // Without an error the peer closed cleanly; after our own FIN, Bun reports
    // the peer's FIN this way instead of through `end`.
    if (!error) this.onEnd();
    this.#release(error ? error.message : "connection closed by peer");
  }

  // ---- Internals ----

  #sendFin(): void {
    this.#finSent = true;
    this.#socket?.shutdown();
    if (this.#inbound.ended) this.#finish();
  }

  /** Both directions ended cleanly: free the socket; unread bytes stay readable. */
  #finish(): void {
    this.#end();
    this.#release("connection closed");
  }

  /** Closes gracefully; a TLS socket whose peer does not close too is aborted after a grace period. */
  #end(): void {
    const socket = this.#socket;
    if (socket === null) return;
    if (!this.tls || this.#inbound.ended) {
      socket.end();
      return;
    }
    if (!this.#finSent) socket.shutdown();
    // The peer's close must be read to be seen.
    if (this.#inbound.paused) socket.resume();
    this.#awaitingPeerClose = true;
    const timer = setTimeout(() => socket.terminate(), TLS_CLOSE_GRACE);
    // Only a safety net: it must not keep the process alive.
    (timer as { unref?: () => void }).unref?.();
    this.#graceTimer = timer;
  }

  /** The connection failed or ended: readers and the writer learn why. */
  #fail(reason: string): void {
    this.#inbound.fail(reason);
    const writer = this.#writer;
    this.#writer = null;
    this.#unwritten = null;
    writer?.reject(this.#inbound.error!);
  }

  #release(reason: string): void {
    if (this.#done) return;
    this.#done = true;
    this.#fail(reason);
    this.#closed?.resolve();
  }
}

const handlers: BunHandlers = {
  binaryType: "uint8array",
  open(socket) {
    // Listener sockets get their state here; dialed ones brought it along.
    const accepted = !(socket.data instanceof BunConn);
    if (accepted) socket.data = new BunConn();
    socket.data.attach(socket, accepted);
  },
  data: (socket, data) => socket.data.onData(data),
  drain: (socket) => socket.data.onDrain(),
  end: (socket) => socket.data.onEnd(),
  handshake: (socket, success, authorizationError) => socket.data?.onHandshake(success, authorizationError),
  close: (socket, error) => socket.data?.onClose(error),
  error: (socket, error) => socket.data?.onClose(error),
};

/** For dialing: one object for every connect, since Bun keeps what it is given per socket. */
const dialHandlers: BunHandlers = {
  ...handlers,
  // A refused connect rejects the connect() promise; nothing more to do here.
  connectError: () => {},
};

class BunListener implements Listener {
  readonly addr: Addr;
  readonly #server: { stop(closeActive?: boolean): void };
  #queue: Conn[] = [];
  #waiter: ((conn: Conn | null) => void) | null = null;
  #closed = false;
  /** TLS connections still in their handshake. */
  #handshaking = new Set<BunConn>();

  constructor(bun: BunLike, options: ListenOptions) {
    const tls = options.tls;
    const server = bun.listen({
      hostname: options.hostname,
      port: options.port,
      allowHalfOpen: true,
      tls: tls ? { cert: tls.cert, key: tls.key } : undefined,
      socket: {
        ...handlers,
        open: (socket) => {
          handlers.open(socket);
          socket.data.tls = tls !== undefined;
          if (tls) this.#awaitHandshake(socket.data, tls.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT, options);
          else this.#deliver(socket.data);
        },
      },
    });
    this.#server = server;
    this.addr = { hostname: server.hostname, port: server.port };
  }

  /** Hands `conn` out once its TLS handshake completes; drops it if that fails or takes too long. */
  #awaitHandshake(conn: BunConn, timeout: number, options: ListenOptions): void {
    this.#handshaking.add(conn);
    const drop = (error: Error) => {
      clearTimeout(timer);
      this.#handshaking.delete(conn);
      conn.watch = null;
      conn.reset();
      if (!this.#closed) options.onHandshakeError?.(error, conn.remoteAddr);
    };
    const timer = setTimeout(() => drop(handshakeTimeoutError("TLS", conn.remoteAddr, timeout)), timeout);
    conn.watch = {
      handshake: (_socket, success, authorizationError) => {
        // Without requestCert there is no client certificate, so Bun's
        // authorizationError ("unable to get issuer certificate") is moot.
        if (!success) return drop(new Error(`TLS handshake failed: ${authorizationError?.message ?? "unknown error"}`));
        clearTimeout(timer);
        this.#handshaking.delete(conn);
        this.#deliver(conn);
      },
      closed: (error) => drop(new Error(`TLS handshake failed: ${error?.message ?? "the peer closed the connection"}`)),
    };
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
    for (const conn of this.#handshaking) conn.onClose(new Error("listener closed"));
  }
}

function connectTls(
  bun: BunLike,
  nodeTls: BunNodeTlsLike,
  options: ConnectOptions & { tls: NonNullable<ConnectOptions["tls"]> },
): Promise<Conn> {
  const verification = tlsVerification(options.tls, options.hostname);
  const peer = `${options.hostname}:${options.port}`;
  const timeout = options.tls.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
  const verify = verification.mode === "default" || verification.mode === "ca";
  const conn = new BunConn();
  conn.tls = true;
  return new Promise<Conn>((resolve, reject) => {
    let settled = false;
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      conn.watch = null;
      conn.reset();
      reject(tlsClientError(error, peer, verification));
    };
    const timer = setTimeout(() => fail(handshakeTimeoutError("TLS", peer, timeout)), timeout);
    conn.watch = {
      handshake: async (socket, success, authorizationError) => {
        try {
          if (verification.mode === "fingerprint") {
            await checkFingerprint(socket.getPeerCertificate?.()?.raw, verification.fingerprint, peer);
          } else if (verify) {
            if (!success || socket.authorized === false || authorizationError) {
              throw authorizationError ?? new Error("certificate not authorized");
            }
            // Bun checks the name too; checking again costs little and does not depend on it.
            const mismatch = nodeTls.checkServerIdentity(
              verification.serverName,
              socket.getPeerCertificate?.() as never,
            );
            if (mismatch) throw mismatch;
          }
        } catch (error) {
          return fail(error);
        }
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(conn);
      },
      closed: (error) => fail(error ?? new Error("the server closed the connection during the handshake")),
    };
    bun.connect({
      hostname: options.hostname,
      port: options.port,
      allowHalfOpen: true,
      tls: {
        serverName: verification.serverName,
        ca: verification.mode === "ca" ? verification.ca : undefined,
        rejectUnauthorized: verify,
      },
      data: conn,
      socket: dialHandlers,
    }).catch((error) => {
      // Refused or unreachable: not a TLS problem, so no TLS hint.
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(error);
    });
  });
}

/**
 * Creates the TCP transport for Bun; with `tls` in the options it speaks TLS.
 *
 * @param bun the `Bun` namespace, or a stand-in with the same slice
 * @param nodeTls `node:tls` (its `checkServerIdentity`), or a stand-in; by default imported at the first TLS connect
 * @returns a {@linkcode Transport} named `tcp`
 */
export function bunTransport(
  bun: BunLike = (globalThis as unknown as { Bun: BunLike }).Bun,
  nodeTls?: BunNodeTlsLike,
): Transport {
  return {
    name: "tcp",
    listen(options: ListenOptions): Promise<Listener> {
      try {
        if (options.tls) checkListenTls(options.tls);
        return Promise.resolve(new BunListener(bun, options));
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        if (options.tls && /X\.?509|PEM|KEY|certificate|private key/i.test(message)) {
          // BoringSSL's codes (such as KEY_VALUES_MISMATCH) say little on their own.
          return Promise.reject(
            new Error(
              `TLS cert and key were refused: ${message}. Check that the key belongs to the certificate and both are PEM.`,
            ),
          );
        }
        return Promise.reject(error);
      }
    },
    async connect(options: ConnectOptions): Promise<Conn> {
      if (options.tls) {
        const tlsModule = nodeTls ?? await importNodeTls<BunNodeTlsLike>();
        return await connectTls(bun, tlsModule, { ...options, tls: options.tls });
      }
      const conn = new BunConn();
      await bun.connect({
        hostname: options.hostname,
        port: options.port,
        allowHalfOpen: true,
        data: conn,
        socket: dialHandlers,
      });
      return conn;
    },
  };
}
