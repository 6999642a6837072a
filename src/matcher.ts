/**
 * The matcher runs on a public host. Relays dial in to its relay port and
 * keep sessions open; each user connection on its client port becomes a new
 * stream on one relay session, picked by the balance strategy.
 *
 * @module
 */

import { json, startAdmin, text } from "./admin.ts";
import { waitUntil } from "./async.ts";
import { AUTH_CONTEXT, newNonce, TokenVerifier } from "./auth.ts";
import { createPicker, type Picker } from "./balance.ts";
import type { Balance, NamedToken } from "./config.ts";
import { errorMessage } from "./errors.ts";
import { AllowList, RateLimiter } from "./limits.ts";
import { formatBytes, formatDuration, type Logger, silentLogger } from "./log.ts";
import { Registry } from "./metrics.ts";
import { pipe } from "./pipe.ts";
import { encodeFrame } from "./protocol/codec.ts";
import { ProtocolError } from "./protocol/errors.ts";
import { FrameType } from "./protocol/frame.ts";
import { Session, type SessionTunables, tunablesOf } from "./protocol/session.ts";
import { type Addr, type Conn, formatAddr, type Listener, type Transport } from "./transport/types.ts";
import { VERSION } from "./version.ts";

/** Options of {@linkcode startMatcher}; names are the config keys in camelCase. */
export interface MatcherOptions extends SessionTunables {
  /** How to listen: the runtime's TCP transport, or another. */
  transport: Transport;
  /** @default {"0.0.0.0"} */
  listenHost?: string;
  /** Port relays dial in to; 0 picks a free one. @default {6543} */
  relayPort?: number;
  /** Port users connect to; 0 picks a free one. @default {6544} */
  clientPort?: number;
  /** How a client's relay session is picked. @default {"random"} */
  balance?: Balance;
  /** Milliseconds a client waits for a relay when none is connected. @default {10000} */
  relayWait?: number;
  /** Tokens a relay must prove it holds (bare strings are named `token-1`, …); none: any relay may connect. @default {[]} */
  tokens?: readonly (string | NamedToken)[];
  /** CIDR ranges allowed on the client port; none: all. @default {[]} */
  clientAllow?: readonly string[];
  /** Port of the admin HTTP listener; null: none. @default {null} */
  adminPort?: number | null;
  /** @default {"127.0.0.1"} */
  adminHost?: string;
  /** Relay sessions at once. @default {1024} */
  maxRelaySessions?: number;
  /** Client connections at once. @default {50000} */
  maxClients?: number;
  /** New client connections per second per address; 0: no limit. @default {200} */
  clientRate?: number;
  /** Milliseconds a stream may go without traffic; 0: forever. @default {0} */
  idleTimeout?: number;
  /** Milliseconds between one-line summaries at info level; 0: none. @default {60000} */
  summaryInterval?: number;
  /** Where events are logged. @default {silentLogger} */
  log?: Logger;
}

/** One connected relay session, as the matcher's stats show it. */
export interface RelayInfo {
  /** Session number, unique within this matcher's lifetime. */
  id: number;
  /** The relay's address as seen by the matcher. */
  address: string;
  /** Name of the token the relay proved, or null without tokens. */
  token: string | null;
  /** Streams open now. */
  openStreams: number;
  /** Streams opened since the session began. */
  totalStreams: number;
  /** Payload bytes sent to the relay. */
  bytesSent: number;
  /** Payload bytes received from the relay. */
  bytesReceived: number;
  /** Milliseconds since the session began. */
  uptimeMs: number;
  /** Last heartbeat round trip, in milliseconds. */
  rttMs: number | null;
}

/** A snapshot of the matcher's state. */
export interface MatcherStats {
  /** Connected relay sessions. */
  relays: RelayInfo[];
  /** Clients waiting for a relay now. */
  clientsWaiting: number;
  /** Clients being served now. */
  clientsActive: number;
  /** Clients accepted since start. */
  clientsTotal: number;
  /** Milliseconds since the matcher started. */
  uptimeMs: number;
  /** Whether it is shutting down. */
  draining: boolean;
}

/** A running matcher. */
export interface Matcher {
  /** Where relays connect (the real port, also after asking for 0). */
  readonly relayAddr: Addr;
  /** Where users connect. */
  readonly clientAddr: Addr;
  /** Where the admin listener is, if enabled. */
  readonly adminAddr: Addr | null;
  /** A snapshot of relays and clients. */
  stats(): MatcherStats;
  /** The metrics in the Prometheus text format. */
  metrics(): string;
  /**
   * Stops accepting, asks relays to go away, lets open streams finish for up
   * to `drainTimeout` milliseconds, then closes everything.
   */
  close(drainTimeout?: number): Promise<void>;
}

interface RelaySession {
  id: number;
  session: Session;
  address: string;
  token: string | null;
  readonly openStreams: number;
}

/**
 * Starts a matcher: binds the relay and client ports (and the admin port, if
 * asked) and serves until closed.
 *
 * @throws {Error} naming the port when it cannot be bound
 */
export async function startMatcher(options: MatcherOptions): Promise<Matcher> {
  const matcher = new MatcherServer(options);
  await matcher.listen();
  return matcher;
}

class MatcherServer implements Matcher {
  readonly #options: MatcherOptions;
  readonly #log: Logger;
  readonly #pick: Picker<RelaySession>;
  readonly #verifier: TokenVerifier | null;
  readonly #allow: AllowList;
  readonly #rate: RateLimiter;
  readonly #relays: RelaySession[] = [];
  readonly #clients = new Set<Conn>();
  readonly #started = Date.now();
  #waiting: Array<(relay: RelaySession | null) => void> = [];
  #handshaking = 0;
  #listeners: Listener[] = [];
  #relayListener!: Listener;
  #clientListener!: Listener;
  #adminListener: Listener | null = null;
  #summaryTimer: ReturnType<typeof setInterval> | null = null;
  #nextSessionId = 1;
  #clientsTotal = 0;
  #closing = false;
  #refusals = new Map<string, number>();
  #refusalTimer: ReturnType<typeof setTimeout> | null = null;

  readonly #metrics = new Registry();
  readonly #streamsOpened = this.#metrics.counter("streams_opened_total", "Client streams opened.");
  readonly #streamsClosed = this.#metrics.counter("streams_closed_total", "Client streams closed, by outcome.");
  readonly #bytes = this.#metrics.counter("bytes_total", "Client payload bytes, by direction (up: client to service).");
  readonly #authFailures = this.#metrics.counter(
    "auth_failures_total",
    "Relay handshakes refused for a bad or missing token.",
  );
  readonly #framesRejected = this.#metrics.counter(
    "frames_rejected_total",
    "Sessions ended for a protocol violation, by reason.",
  );
  readonly #refused = this.#metrics.counter("connections_refused_total", "Connections refused by a limit, by reason.");
  readonly #relaySessionsTotal = this.#metrics.counter("relay_sessions_total", "Relay sessions established.");

  constructor(options: MatcherOptions) {
    this.#options = options;
    this.#log = options.log ?? silentLogger;
    this.#pick = createPicker(options.balance ?? "random");
    const tokens = (options.tokens ?? []).map((t, i) =>
      typeof t === "string" ? { name: `token-${i + 1}`, token: t } : t
    );
    if (tokens.some((t) => !t.token)) {
      throw new RangeError("Cannot start matcher: every token must be a non-empty string");
    }
    this.#verifier = tokens.length > 0 ? new TokenVerifier(tokens) : null;
    this.#allow = new AllowList(options.clientAllow ?? []);
    this.#rate = new RateLimiter(options.clientRate ?? 200);
    this.#metrics.gauge("relay_sessions", "Relay sessions connected now.", () => this.#relays.length);
    this.#metrics.gauge("open_streams", "Client streams open now.", () => this.#openStreams());
    this.#metrics.gauge("clients_waiting", "Clients waiting for a relay.", () => this.#waiting.length);
    this.#metrics.gauge(
      "uptime_seconds",
      "Seconds since the matcher started.",
      () => (Date.now() - this.#started) / 1000,
    );
  }

  get relayAddr(): Addr {
    return this.#relayListener.addr;
  }

  get clientAddr(): Addr {
    return this.#clientListener.addr;
  }

  get adminAddr(): Addr | null {
    return this.#adminListener?.addr ?? null;
  }

  async listen(): Promise<void> {
    const { transport, adminPort } = this.#options;
    const host = this.#options.listenHost ?? "0.0.0.0";
    try {
      this.#relayListener = await listenOn(transport, host, this.#options.relayPort ?? 6543, "relay");
      this.#listeners.push(this.#relayListener);
      this.#clientListener = await listenOn(transport, host, this.#options.clientPort ?? 6544, "client");
      this.#listeners.push(this.#clientListener);
      if (adminPort !== null && adminPort !== undefined) {
        const adminHost = this.#options.adminHost ?? "127.0.0.1";
        this.#adminListener = await listenOn(
          transport,
          adminHost,
          adminPort,
          "admin",
          () =>
            startAdmin({
              transport,
              hostname: adminHost,
              port: adminPort,
              route: (path) => this.#route(path),
              log: this.#log,
            }),
        );
        this.#listeners.push(this.#adminListener);
      }
    } catch (error) {
      for (const listener of this.#listeners) listener.close();
      throw error;
    }
    this.#log.info("matcher listening", {
      relay_port: formatAddr(this.relayAddr),
      client_port: formatAddr(this.clientAddr),
      admin_port: this.adminAddr ? formatAddr(this.adminAddr) : undefined,
      balance: this.#options.balance ?? "random",
      auth: this.#verifier ? `${this.#options.tokens!.length} token(s)` : "off",
    });
    this.#acceptLoop(this.#relayListener, (conn) => this.#serveRelay(conn));
    this.#acceptLoop(this.#clientListener, (conn) => this.#serveClient(conn));
    const every = this.#options.summaryInterval ?? 60_000;
    if (every > 0) this.#summaryTimer = setInterval(() => this.#logSummary(), every);
  }

  stats(): MatcherStats {
    const now = Date.now();
    return {
      relays: this.#relays.map(({ id, address, token, session }) => {
        const s = session.stats();
        return {
          id,
          address,
          token,
          openStreams: s.openStreams,
          totalStreams: s.totalStreams,
          bytesSent: s.bytesSent,
          bytesReceived: s.bytesReceived,
          uptimeMs: now - s.since,
          rttMs: s.rttMs,
        };
      }),
      clientsWaiting: this.#waiting.length,
      clientsActive: this.#clients.size - this.#waiting.length,
      clientsTotal: this.#clientsTotal,
      uptimeMs: now - this.#started,
      draining: this.#closing,
    };
  }

  metrics(): string {
    return this.#metrics.render();
  }

  async close(drainTimeout = 0): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    if (this.#summaryTimer !== null) clearInterval(this.#summaryTimer);
    this.#relayListener.close();
    this.#clientListener.close();
    for (const wake of this.#waiting.splice(0)) wake(null);
    const sessions = this.#relays.map((relay) => relay.session);
    for (const session of sessions) session.goAway("matcher shutting down");
    if (sessions.some((s) => !s.isClosed)) {
      this.#log.info("draining", { streams: this.#openStreams(), timeout: formatDuration(drainTimeout) });
      await waitUntil(Promise.all(sessions.map((s) => s.closed)), drainTimeout);
    }
    for (const session of sessions) session.close("matcher shut down");
    for (const conn of this.#clients) conn.reset();
    this.#adminListener?.close();
    if (this.#refusalTimer !== null) clearTimeout(this.#refusalTimer);
    this.#log.info("matcher stopped");
  }

  // ---- Relays ----

  async #serveRelay(conn: Conn): Promise<void> {
    const address = formatAddr(conn.remoteAddr);
    const limit = this.#options.maxRelaySessions ?? 1024;
    if (this.#relays.length + this.#handshaking >= limit) {
      // Say why, so the relay logs a refusal rather than a broken connection.
      this.#refuse("relay", "too many relay sessions", address);
      await conn.write(encodeFrame(FrameType.GOAWAY, 0, new TextEncoder().encode(`refused: too many relay sessions`)))
        .catch(() => {});
      return conn.close();
    }
    const nonce = this.#verifier ? newNonce() : null;
    let token: string | null = null;
    const session = new Session(conn, {
      side: "acceptor",
      hello: { role: "matcher", software: `o3sr/${VERSION}`, ...(nonce ? { auth: { nonce } } : {}) },
      checkHello: (hello) => {
        if (hello.role !== "relay") {
          throw new Error(`peer introduced itself as ${JSON.stringify(hello.role)}, not a relay`);
        }
      },
      authenticate: this.#verifier
        ? async (answer) => {
          token = await this.#verifier!.verify(nonce!, answer.proof, AUTH_CONTEXT);
          if (token === null) throw new Error(answer.proof === undefined ? "token required" : "bad token");
        }
        : undefined,
      ...tunablesOf(this.#options),
    });
    this.#handshaking++;
    try {
      await session.ready;
    } catch {
      const error = session.closeError;
      if (error instanceof ProtocolError && error.code === "auth") {
        this.#authFailures.inc();
        this.#log.warn("relay refused", { relay: address, reason: error.message });
      } else {
        if (error instanceof ProtocolError) this.#framesRejected.inc({ reason: error.code });
        this.#log.warn("relay handshake failed", { relay: address, reason: session.closeReason });
      }
      return;
    } finally {
      this.#handshaking--;
    }
    if (this.#closing) return session.close("matcher shutting down");
    const relay: RelaySession = {
      id: this.#nextSessionId++,
      session,
      address,
      token,
      get openStreams() {
        return session.openStreams;
      },
    };
    this.#relays.push(relay);
    this.#relaySessionsTotal.inc();
    this.#log.info("relay connected", {
      relay: address,
      session: relay.id,
      token: token ?? undefined,
      relays: this.#relays.length,
    });
    for (const wake of this.#waiting.splice(0)) wake(relay);

    const reason = await session.closed;
    this.#relays.splice(this.#relays.indexOf(relay), 1);
    const error = session.closeError;
    if (error instanceof ProtocolError) this.#framesRejected.inc({ reason: error.code });
    const stats = session.stats();
    const fields = {
      relay: address,
      session: relay.id,
      reason,
      streams: stats.totalStreams,
      up: formatDuration(Date.now() - stats.since),
      relays: this.#relays.length,
    };
    if (error) this.#log.warn("relay disconnected", fields);
    else this.#log.info("relay disconnected", fields);
  }

  // ---- Clients ----

  async #serveClient(conn: Conn): Promise<void> {
    const client = formatAddr(conn.remoteAddr);
    const refusal = this.#checkClient(conn.remoteAddr.hostname);
    if (refusal) {
      this.#refuse("client", refusal, client);
      return conn.reset();
    }
    this.#clients.add(conn);
    this.#clientsTotal++;
    try {
      const started = Date.now();
      const relay = this.#available() ?? await this.#waitForRelay();
      if (relay === null) {
        this.#log.warn("no relay available; closing client", {
          client,
          waited: formatDuration(Date.now() - started),
        });
        this.#refused.inc({ reason: "no relay" });
        conn.close();
        return;
      }
      const stream = relay.session.openStream({ client });
      this.#streamsOpened.inc();
      this.#log.debug("client connected", { client, relay: relay.address, stream: stream.id });
      const result = await pipe(conn, stream, { idleTimeout: this.#options.idleTimeout });
      this.#bytes.inc({ direction: "up" }, result.aToB);
      this.#bytes.inc({ direction: "down" }, result.bToA);
      this.#streamsClosed.inc({ outcome: result.error ? "error" : "clean" });
      const fields = {
        client,
        relay: relay.address,
        stream: stream.id,
        up: formatBytes(result.aToB),
        down: formatBytes(result.bToA),
        time: formatDuration(Date.now() - started),
        error: result.error ? errorMessage(result.error) : undefined,
      };
      if (result.error) this.#log.warn("client stream failed", fields);
      else this.#log.info("client done", fields);
    } catch (error) {
      this.#log.warn("client failed", { client, error: errorMessage(error) });
      conn.reset();
    } finally {
      this.#clients.delete(conn);
    }
  }

  /** Why a client from `address` is refused, or null to serve it. */
  #checkClient(address: string): string | null {
    if (!this.#allow.allows(address)) return "address not allowed";
    if (this.#clients.size >= (this.#options.maxClients ?? 50_000)) return "too many clients";
    if (!this.#rate.take(address)) return "connection rate exceeded";
    return null;
  }

  /** A relay session that takes new streams now, picked by the strategy. */
  #available(): RelaySession | null {
    const max = this.#options.maxStreams ?? Infinity;
    const open = this.#relays.filter((relay) => relay.session.acceptingStreams && relay.openStreams < max);
    return open.length === 0 ? null : this.#pick(open);
  }

  /** Waits up to `relayWait` for a relay; null on timeout or shutdown. */
  #waitForRelay(): Promise<RelaySession | null> {
    if (this.#closing) return Promise.resolve(null);
    const wait = this.#options.relayWait ?? 10_000;
    return new Promise((resolve) => {
      const wake = (relay: RelaySession | null) => {
        clearTimeout(timer);
        // Several clients may wake for one relay; each goes through the picker.
        resolve(relay === null ? null : this.#available());
      };
      const timer = setTimeout(() => {
        this.#waiting = this.#waiting.filter((w) => w !== wake);
        resolve(null);
      }, wait);
      this.#waiting.push(wake);
    });
  }

  // ---- Operations ----

  #route(path: string) {
    switch (path) {
      case "/health":
        return this.#closing ? text(503, "draining\n") : text(200, "ok\n");
      case "/stats":
        return json(200, this.stats());
      case "/metrics":
        return { status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: this.metrics() };
      default:
        return null;
    }
  }

  /** Counts a refusal and logs it, at most once a second per reason, so a flood cannot flood the log. */
  #refuse(port: "relay" | "client", reason: string, address: string): void {
    this.#refused.inc({ reason });
    const key = `${port}\u0000${reason}`;
    const seen = this.#refusals.get(key);
    if (seen === undefined) this.#log.warn(`${port} refused`, { [port]: address, reason });
    this.#refusals.set(key, (seen ?? -1) + 1);
    this.#refusalTimer ??= setTimeout(() => {
      this.#refusalTimer = null;
      for (const [key, more] of this.#refusals) {
        const [port, reason] = key.split("\u0000");
        if (more > 0) this.#log.warn(`${port} refused`, { reason, more });
      }
      this.#refusals.clear();
    }, 1000);
  }

  #logSummary(): void {
    this.#log.info("summary", {
      relays: this.#relays.length,
      streams: this.#openStreams(),
      waiting: this.#waiting.length,
      clients_total: this.#clientsTotal,
      up: formatBytes(this.#bytes.get({ direction: "up" })),
      down: formatBytes(this.#bytes.get({ direction: "down" })),
    });
  }

  #openStreams(): number {
    return this.#relays.reduce((sum, relay) => sum + relay.openStreams, 0);
  }

  async #acceptLoop(listener: Listener, serve: (conn: Conn) => Promise<void>): Promise<void> {
    for (;;) {
      let conn: Conn | null;
      try {
        conn = await listener.accept();
      } catch (error) {
        // Such as too many open files: keep serving the connections we have.
        this.#log.warn("accept failed; retrying", { port: listener.addr.port, error: errorMessage(error) });
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      if (conn === null) return;
      serve(conn).catch((error) => this.#log.error("connection handler failed", { error: errorMessage(error) }));
    }
  }
}

async function listenOn(
  transport: Transport,
  hostname: string,
  port: number,
  what: "relay" | "client" | "admin",
  open: () => Promise<Listener> = () => transport.listen({ hostname, port }),
): Promise<Listener> {
  try {
    return await open();
  } catch (error) {
    throw new Error(
      `cannot listen on ${hostname}:${port} for the ${what} port: ${
        errorMessage(error)
      }. Is another matcher running? Pick another port with --${what}-port.`,
    );
  }
}
