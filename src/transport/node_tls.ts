/**
 * TLS made of `node:tls` over any {@linkcode Conn} (client and server side),
 * as a Conn. The Deno adapter's TLS is built on this, over its TCP Conns,
 * rather than on Deno's own TLS API, because with `Deno.listenTls` /
 * `Deno.connectTls` / `Deno.startTls`:
 *
 * - closing a connection whose handshake has not completed waits for the
 *   handshake first, so a silent peer keeps its socket open however often
 *   it is closed (a slow-loris hole in a server, a leak per timed-out dial in
 *   a client). Here the TCP Conn underneath is ours to close.
 * - `caCerts` only adds to the default roots, so a given CA would not be the
 *   only one trusted; `node:tls` takes an exclusive `ca` list.
 * - the peer's certificate is never shown, so a pin could not be checked;
 *   `node:tls` hands out its DER bytes.
 *
 * The TLS layer runs over a `node:stream` Duplex fed from the inner Conn and
 * is never paused: in Deno 2.9 a paused and resumed `node:tls` socket loses
 * the peer's end of stream (a half-closed reply never ends). Read
 * backpressure is applied below TLS instead: the inner Conn is not read
 * while the decrypted bytes waiting for `read()` are over the high-water
 * mark. Half-close works: `closeWrite()` sends close_notify and then FIN on
 * the inner Conn, and reading goes on.
 *
 * Deno's `node:tls` client resumes sessions by server name (for the same
 * verification settings). On a resumed session the peer certificate, and so
 * the pin check, is the one of the original full handshake, which the server
 * proved it holds the keys for by resuming: sound, but two servers in one
 * process share ticket keys, so tests must dial them by different names.
 *
 * @module
 */

import { Deferred } from "../async.ts";
import { createPublicKey, X509Certificate } from "node:crypto";
import { Duplex } from "node:stream";
import { type Addr, type Conn, ConnectionClosedError, type ConnectOptions, type TlsConnectOptions } from "./types.ts";
import { Inbound, sharedReadBudget } from "./inbound.ts";
import {
  checkFingerprint,
  DEFAULT_HANDSHAKE_TIMEOUT,
  handshakeTimeoutError,
  tlsClientError,
  type TlsVerification,
  tlsVerification,
} from "./tls.ts";

/** The slice of a `node:tls` `TLSSocket` this module uses. */
export interface NodeTlsSocketLike {
  readonly authorized: boolean;
  readonly authorizationError?: Error | string | null;
  getPeerCertificate(detailed?: boolean): { raw?: Uint8Array } | null;
  write(data: Uint8Array, callback: (error?: Error | null) => void): boolean;
  end(callback?: () => void): void;
  destroy(error?: Error): void;
  on(event: "secureConnect" | "secure" | "end", listener: () => void): unknown;
  on(event: "data", listener: (data: Uint8Array) => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  on(event: "close", listener: (hadError: boolean) => void): unknown;
}

/** The options this module passes to `tls.connect`. */
export interface NodeTlsConnectOptions {
  socket: Duplex;
  servername?: string;
  ca?: string[];
  rejectUnauthorized: boolean;
  allowHalfOpen: true;
  checkServerIdentity(hostname: string, cert: unknown): Error | undefined;
}

/** The slice of the `node:tls` module this module uses. */
export interface NodeTlsLike {
  connect(options: NodeTlsConnectOptions): NodeTlsSocketLike;
  checkServerIdentity(hostname: string, cert: never): Error | undefined;
  createSecureContext(options: { cert: string; key: string }): unknown;
  TLSSocket: new (socket: Duplex, options: { isServer: true; secureContext: unknown }) => NodeTlsSocketLike;
}

// Decrypted bytes held before the inner connection is no longer read.
const READ_HIGH_WATER = 256 * 1024;
// How long close_notify may take to go out before the connection is dropped anyway.
const CLOSE_GRACE = 2000;

type Waiter<T> = { resolve(value: T): void; reject(error: Error): void };

/** The inner connection as the Duplex `node:tls` reads ciphertext from and writes it to. */
function ciphertextStream(inner: Conn, room: () => Promise<void>): Duplex {
  let pumping = false;
  const duplex: Duplex = new Duplex({
    allowHalfOpen: true,
    read() {
      if (pumping) return;
      pumping = true;
      (async () => {
        try {
          for (;;) {
            await room();
            const chunk = await inner.read();
            if (chunk === null) {
              duplex.push(null);
              return;
            }
            duplex.push(chunk);
          }
        } catch (error) {
          duplex.destroy(error as Error);
        }
      })();
    },
    write(chunk: Uint8Array, _encoding, callback) {
      inner.write(chunk).then(() => callback(), callback);
    },
    final(callback) {
      inner.closeWrite().then(() => callback(), callback);
    },
    destroy(error, callback) {
      if (error) inner.reset();
      else inner.close();
      callback(error);
    },
  });
  return duplex;
}

/** One `node:tls` session over an inner Conn, as a {@linkcode Conn}. */
class NodeTlsConn implements Conn {
  readonly localAddr: Addr;
  readonly remoteAddr: Addr;
  readonly #inner: Conn;
  #socket!: NodeTlsSocketLike;
  // The TLS socket is never paused (Deno's would lose the peer's end); the
  // ciphertext feeder waits while the queue is paused instead. Decrypted bytes
  // count into the process's read budget like any socket's.
  readonly #inbound = new Inbound(
    READ_HIGH_WATER,
    { pause: () => {}, resume: () => this.#wake() },
    sharedReadBudget,
  );
  #room: (() => void) | null = null;
  #writers = new Set<Waiter<void>>();
  #finSent = false;
  #closedLocally = false;
  #done = false;
  readonly #closed = new Deferred<void>();
  /** Resolves once the connection is fully closed, however that happened; made on first use. */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  constructor(inner: Conn) {
    this.#inner = inner;
    this.localAddr = inner.localAddr;
    this.remoteAddr = inner.remoteAddr;
  }

  /** The Duplex to hand to `tls.connect`. */
  stream(): Duplex {
    return ciphertextStream(this.#inner, () => {
      if (!this.#inbound.paused || this.#done) return Promise.resolve();
      return new Promise((resolve) => this.#room = resolve);
    });
  }

  attach(socket: NodeTlsSocketLike): void {
    this.#socket = socket;
    socket.on("data", (data) => this.#onData(data));
    socket.on("end", () => this.#onEnd());
    socket.on("error", (error) => this.#fail(error.message));
    socket.on("close", () => this.#release("connection closed by peer"));
  }

  // ---- Conn ----

  read(): Promise<Uint8Array | null> {
    return this.#inbound.read();
  }

  write(chunk: Uint8Array): Promise<void> {
    if (this.#inbound.failed) return Promise.reject(this.#inbound.error!);
    if (this.#done || this.#finSent) return Promise.reject(new ConnectionClosedError("write after close"));
    // The callback comes once the ciphertext was handed to the inner Conn, so
    // the peer's pace is the writer's pace and `chunk` is no longer needed.
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      this.#writers.add(waiter);
      this.#socket.write(chunk, (error) => {
        if (!this.#writers.delete(waiter)) return;
        if (!error) return resolve();
        this.#fail(error.message);
        reject(this.#inbound.error!);
      });
    });
  }

  closeWrite(): Promise<void> {
    if (this.#finSent || this.#done) return Promise.resolve();
    this.#finSent = true;
    // Queues close_notify, then the inner Conn's FIN, after pending writes.
    this.#socket.end();
    if (this.#inbound.ended) this.#finish();
    return Promise.resolve();
  }

  close(): void {
    if (this.#closedLocally) return;
    this.#closedLocally = true;
    this.#inbound.closeLocally();
    this.#finish();
  }

  reset(): void {
    if (this.#closedLocally) return;
    this.#closedLocally = true;
    this.#inbound.closeLocally();
    this.#inner.reset();
    this.#socket?.destroy();
    this.#release("connection closed");
  }

  // ---- Socket events ----

  #onData(buffer: Uint8Array): void {
    if (this.#done) return;
    // A plain Uint8Array view, not a Buffer: Buffer's slice() shares memory where Uint8Array's copies.
    this.#inbound.push(new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength));
  }

  #onEnd(): void {
    if (this.#closedLocally) return;
    this.#inbound.end();
    if (this.#finSent) this.#finish();
  }

  // ---- Internals ----

  #wake(): void {
    const room = this.#room;
    this.#room = null;
    room?.();
  }

  /** Done with the connection: close_notify if not sent yet, then release; unread bytes stay readable. */
  #finish(): void {
    const socket = this.#socket;
    if (this.#writers.size > 0) {
      // A write is stuck behind a peer that does not read; close_notify would wait behind it.
      socket.destroy();
    } else {
      // close_notify alone may be stuck too, if the peer reads nothing more.
      const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE);
      (timer as { unref?: () => void }).unref?.();
      socket.end(() => {
        clearTimeout(timer);
        socket.destroy();
      });
    }
    this.#release("connection closed");
  }

  /** The connection failed or ended: readers and writers learn why. */
  #fail(reason: string): void {
    this.#inbound.fail(reason);
    for (const writer of this.#writers) writer.reject(this.#inbound.error!);
    this.#writers.clear();
  }

  #release(reason: string): void {
    if (this.#done) return;
    this.#done = true;
    this.#fail(reason);
    this.#wake();
    this.#closed.resolve();
  }
}

const IP_ADDRESS = /^(\d{1,3}(\.\d{1,3}){3}|\[?[0-9a-f:]*:[0-9a-f:.]*\]?)$/i;

/**
 * Runs a TLS client handshake through `node:tls` over `inner`, verifying the
 * server as `options.tls` says. Resolves once the handshake and the
 * verification succeeded; on failure `inner` is reset.
 *
 * @param tls the `node:tls` module, or a stand-in with the same slice
 * @param inner a fresh connection to the server, such as a TCP one
 * @param options what was dialed (for the server name and messages) and `tls`
 * @throws {Error} saying what failed (unverified, pin mismatch, timeout) and what to do
 */
export function startNodeTls(
  tls: NodeTlsLike,
  inner: Conn,
  options: ConnectOptions & { tls: TlsConnectOptions },
): Promise<Conn> {
  let verification: TlsVerification;
  try {
    verification = tlsVerification(options.tls, options.hostname);
  } catch (error) {
    inner.reset();
    return Promise.reject(error);
  }
  const peer = `${options.hostname}:${options.port}`;
  const timeout = options.tls.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
  const { serverName } = verification;
  const conn = new NodeTlsConn(inner);
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      conn.reset();
      reject(tlsClientError(error, peer, verification));
    };
    const timer = setTimeout(() => fail(handshakeTimeoutError("TLS", peer, timeout)), timeout);
    let socket: NodeTlsSocketLike;
    try {
      socket = tls.connect({
        socket: conn.stream(),
        // SNI must not be an IP address (RFC 6066); the identity check below still covers IPs.
        servername: IP_ADDRESS.test(serverName) ? undefined : serverName,
        ca: verification.mode === "ca" ? [verification.ca] : undefined,
        rejectUnauthorized: verification.mode === "default" || verification.mode === "ca",
        allowHalfOpen: true,
        // Consulted once the chain verified; checks the name the caller asked for.
        checkServerIdentity: (_hostname, cert) => tls.checkServerIdentity(serverName, cert as never),
      });
    } catch (error) {
      return fail(error);
    }
    conn.attach(socket);
    socket.on("error", fail);
    socket.on("close", () => fail(new Error("the server closed the connection during the handshake")));
    socket.on("secureConnect", async () => {
      try {
        if (verification.mode === "fingerprint") {
          await checkFingerprint(socket.getPeerCertificate(true)?.raw, verification.fingerprint, peer);
        } else if (verification.mode !== "insecure" && !socket.authorized) {
          // rejectUnauthorized already refuses these; this guards against a shim that does not.
          throw new Error(String(socket.authorizationError ?? "certificate not authorized"));
        }
      } catch (error) {
        return fail(error);
      }
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(conn);
    });
  });
}

/**
 * A server's certificate and key, checked and loaded once per listener.
 *
 * @throws {Error} saying the certificate or key was refused, and why
 */
export function serverContext(tls: NodeTlsLike, options: { cert: string; key: string }): unknown {
  try {
    // Deno's createSecureContext takes a key of another certificate, and every handshake would then fail.
    const publicKey = (pem: string | X509Certificate) =>
      Array.from(
        (typeof pem === "string" ? createPublicKey(pem) : pem.publicKey).export({ type: "spki", format: "der" }),
      ).join(",");
    if (publicKey(options.key) !== publicKey(new X509Certificate(options.cert))) {
      throw new Error("the key does not belong to the (first) certificate");
    }
    return tls.createSecureContext({ cert: options.cert, key: options.key });
  } catch (error) {
    throw new Error(
      `TLS cert and key were refused: ${error instanceof Error ? error.message : error}. ` +
        `Check that the key belongs to the certificate and both are PEM.`,
    );
  }
}

/**
 * Runs a TLS server handshake through `node:tls` over `inner`. Resolves once
 * it completed; on failure `inner` is reset. Its duration is the caller's to
 * limit (resetting `inner` ends it).
 *
 * @param tls the `node:tls` module, or a stand-in with the same slice
 * @param inner a freshly accepted connection, such as a TCP one
 * @param context from {@linkcode serverContext}
 * @throws {Error} saying why the handshake failed
 */
export function acceptNodeTls(tls: NodeTlsLike, inner: Conn, context: unknown): Promise<Conn> {
  const conn = new NodeTlsConn(inner);
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      conn.reset();
      reject(new Error(`TLS handshake failed: ${error instanceof Error ? error.message : error}`));
    };
    let socket: NodeTlsSocketLike;
    try {
      socket = new tls.TLSSocket(conn.stream(), { isServer: true, secureContext: context });
    } catch (error) {
      return fail(error);
    }
    conn.attach(socket);
    socket.on("error", fail);
    socket.on("close", () => fail(new Error("the peer closed the connection")));
    socket.on("secure", () => {
      if (settled) return;
      settled = true;
      resolve(conn);
    });
  });
}
