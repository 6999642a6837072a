/**
 * The transport contract: everything the core needs from the network, and
 * nothing more. Adapters (`deno.ts`, `bun.ts`, `memory.ts`) fill it in; the
 * core (sessions, matcher, relay) never names a runtime.
 *
 * @module
 */

/** A network endpoint. */
export interface Addr {
  /** Host name or IP address, as the runtime reported it. */
  hostname: string;
  /** TCP port; the real one, also after listening on port 0. */
  port: number;
}

/**
 * A reliable, ordered, two-way byte connection: a TCP socket, a TLS socket or
 * one multiplexed stream. One reader and one writer at a time.
 */
export interface Conn {
  /** This end's address; ask while the connection is open (a Bun one first asked after it closed does not know). */
  readonly localAddr: Addr;
  /** The peer's address; the same holds, except for accepted connections, which know it from the start. */
  readonly remoteAddr: Addr;
  /**
   * Resolves with the next chunk of bytes, or `null` once the peer has
   * half-closed (sent FIN) and everything before it was read. The chunk is the
   * caller's to keep. Not calling `read()` is the backpressure: the transport
   * stops pulling from the network once its small buffer is full.
   *
   * @throws {ConnectionClosedError} after `close()`/`reset()` or when the peer reset.
   */
  read(): Promise<Uint8Array | null>;
  /**
   * Like `read()`, but the chunk is only lent: the caller hands it back with
   * `giveBack()` once done with it, and the transport may then read into its
   * memory again. Optional (with `giveBack`); a copy loop uses it to spare the
   * transport an allocation per read. A chunk never given back is simply kept.
   */
  readBorrowed?(): Promise<Uint8Array | null>;
  /**
   * Like `readBorrowed()`, but calls back instead of resolving a promise,
   * possibly before it returns. Optional; a copy loop that keeps a read
   * pending on thousands of idle connections spares each a promise, its
   * resolving functions and a reaction, and each chunk a microtask. The
   * callbacks run inside the transport's own event handling and must not throw.
   */
  readBorrowedThen?(onChunk: (chunk: Uint8Array | null) => void, onError: (error: Error) => void): void;
  /** Returns a chunk from `readBorrowed()`; the caller must not touch it afterwards. */
  giveBack?(chunk: Uint8Array): void;
  /**
   * Writes all of `chunk`. Resolves when the transport has taken it and has
   * room for more; a slow peer makes it resolve later. The transport may hold
   * on to `chunk` until then, so the caller must not change it before.
   *
   * @throws {ConnectionClosedError} if the connection is closed or reset.
   */
  write(chunk: Uint8Array): Promise<void>;
  /** Half-closes: sends FIN after everything written before. Reading goes on. */
  closeWrite(): Promise<void>;
  /** Closes gracefully (FIN if not yet sent) and releases the connection. Idempotent. */
  close(): void;
  /** Aborts: the peer sees a reset, not a clean end. Idempotent. */
  reset(): void;
  /** Resolves once the connection is fully closed, however that happened. */
  readonly closed: Promise<void>;
}

/** A connection that lends its chunks: it has both of `Conn`'s optional borrowing methods. */
export type Lender = Conn & Required<Pick<Conn, "readBorrowed" | "giveBack">>;

/** Whether `conn` lends its chunks (has `readBorrowed` and `giveBack`). */
export function lends(conn: Conn): conn is Lender {
  return conn.readBorrowed !== undefined && conn.giveBack !== undefined;
}

/** Accepts connections on one address. */
export interface Listener {
  /** The bound address; `port` is the real port, also after asking for port 0. */
  readonly addr: Addr;
  /**
   * Resolves with the next accepted connection, or `null` once the listener is
   * closed.
   *
   * @throws {Error} on an accept failure that may pass (such as too many open
   *   files); the caller logs it and may call again.
   */
  accept(): Promise<Conn | null>;
  /** Stops accepting. Connections already accepted stay open. Idempotent. */
  close(): void;
}

/** Options for {@linkcode Transport.listen}. */
export interface ListenOptions {
  /** Address to bind, such as `0.0.0.0` or `127.0.0.1`. */
  hostname: string;
  /** Port to bind; 0 picks a free one (see {@linkcode Listener.addr}). */
  port: number;
  /**
   * Serve TLS with this certificate. Without it, plain TCP. Each connection's
   * handshake runs in the background: {@linkcode Listener.accept} only ever
   * returns connections whose handshake completed, and a slow, silent or
   * failing peer never delays the others.
   */
  tls?: TlsListenOptions;
  /**
   * Called when a connection is dropped because its handshake (TLS, or a
   * wrapper's such as WebSocket) failed or timed out. Never an accept error:
   * the listener goes on. Without it, such failures are silent.
   */
  onHandshakeError?: (error: Error, remote: Addr) => void;
}

/** The certificate a TLS listener presents. */
export interface TlsListenOptions {
  /** Certificate chain, PEM: the server's certificate first, then any intermediates. */
  cert: string;
  /** Private key of the first certificate, PEM (PKCS#8, RSA or EC), unencrypted. */
  key: string;
  /**
   * Milliseconds a new connection may take to complete its handshake before it
   * is dropped (and reported to `onHandshakeError`). Default 10 000.
   */
  handshakeTimeout?: number;
}

/** Options for {@linkcode Transport.connect}. */
export interface ConnectOptions {
  /** Host to dial. */
  hostname: string;
  /** Port to dial. */
  port: number;
  /**
   * Speak TLS, verifying the server as described in {@linkcode TlsConnectOptions}.
   * Without it, plain TCP. `connect()` resolves only after the handshake and
   * the verification succeeded.
   */
  tls?: TlsConnectOptions;
}

/**
 * How a TLS client verifies the server. At most one of `ca`, `fingerprint`
 * and `insecure` applies; with none, the runtime's default CA store is used
 * (Mozilla's roots on both runtimes unless configured otherwise) and the
 * certificate must name `serverName`.
 */
export interface TlsConnectOptions {
  /**
   * Name sent as SNI and checked against the certificate (DNS name or IP
   * address). Default: the `hostname` dialed.
   */
  serverName?: string;
  /**
   * Trust only this CA (PEM, one or more certificates) instead of the default
   * store. The certificate must still name `serverName`.
   */
  ca?: string;
  /**
   * Pin the server's leaf certificate: `sha256:` followed by the hex SHA-256
   * of its DER encoding (colons optional, any case; the `sha256:` prefix is
   * optional too). Only the pin decides: a self-signed certificate, any name
   * and any CA are fine when it matches, and nothing else is accepted.
   */
  fingerprint?: string;
  /** Accept any certificate. Encrypts but does not authenticate: for tests only. */
  insecure?: boolean;
  /** Milliseconds the handshake may take before `connect()` fails. Default 10 000. */
  handshakeTimeout?: number;
}

/** A way to listen and to dial: TCP on Deno or Bun, or in memory for tests. */
export interface Transport {
  /** Short name for logs, such as `tcp`. */
  readonly name: string;
  /**
   * Binds a listener.
   *
   * @throws {Error} when the address cannot be bound (in use, not permitted).
   */
  listen(options: ListenOptions): Promise<Listener>;
  /**
   * Dials a peer.
   *
   * @throws {Error} when the peer cannot be reached (refused, unreachable).
   */
  connect(options: ConnectOptions): Promise<Conn>;
}

/** Raised by a connection used after it was closed, or reset by its peer. */
export class ConnectionClosedError extends Error {
  /**
   * Makes the error.
   *
   * @param message what happened, such as `connection reset by peer`
   */
  constructor(message = "connection closed") {
    super(message);
    this.name = "ConnectionClosedError";
  }
}

/** Formats an address as `host:port`, bracketing IPv6 hosts. */
export function formatAddr(addr: Addr): string {
  return addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`;
}
