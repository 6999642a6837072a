/**
 * The matcher runs on a public host. Relays dial in to its relay port,
 * authenticate, and register the services they serve; each service has a
 * client port (the default service has `--client-port`, named ones a fixed
 * port or one from `--port-range`). Each user connection on a client port
 * becomes a stream on one relay of that service's pool, picked by the balance
 * strategy; a relay whose destination refuses is skipped and the client tried
 * on the next.
 *
 * @module
 */

import { json, startAdmin, text } from "./admin.ts";
import { waitUntil, withTimeout } from "./async.ts";
import { AUTH_CONTEXT, newNonce, TokenVerifier } from "./auth.ts";
import type { Balance, NamedToken, ServiceEntry } from "./config.ts";
import { EarlyData } from "./early_data.ts";
import { errorMessage } from "./errors.ts";
import { AllowList, RateLimiter } from "./limits.ts";
import { formatBytes, formatDuration, type Logger, silentLogger } from "./log.ts";
import { Registry } from "./metrics.ts";
import { pipeThen } from "./pipe.ts";
import { encodeFrame } from "./protocol/codec.ts";
import { ProtocolError } from "./protocol/errors.ts";
import { FrameType } from "./protocol/frame.ts";
import { type Hello, Session, type SessionTunables, tunablesOf } from "./protocol/session.ts";
import { sharedPieceBudget, type Stream } from "./protocol/stream.ts";
import { sharedWindowBudget } from "./protocol/window.ts";
import { DEFAULT_SERVICE, type PoolMember, Service } from "./service.ts";
import { sharedReadBudget } from "./transport/inbound.ts";
import { fingerprintOfPem } from "./transport/tls.ts";
import {
  type Addr,
  type Conn,
  formatAddr,
  type Listener,
  type TlsListenOptions,
  type Transport,
} from "./transport/types.ts";
import { sniffWebSocket, wsAccept } from "./transport/websocket.ts";
import { VERSION } from "./version.ts";

/** Options of {@linkcode startMatcher}; names are the config keys in camelCase. */
export interface MatcherOptions extends SessionTunables {
  /** How to listen: the runtime's TCP transport, or another. */
  transport: Transport;
  /** Address the relay and client ports bind to. @default {"0.0.0.0"} */
  listenHost?: string;
  /** Port relays dial in to; 0 picks a free one. @default {6543} */
  relayPort?: number;
  /** Client port of the default service; 0 picks a free one. @default {6544} */
  clientPort?: number;
  /** How a client's relay is picked, unless a service sets its own. @default {"random"} */
  balance?: Balance;
  /** Named services with a fixed client port (and optionally their own balance). @default {[]} */
  services?: readonly ServiceEntry[];
  /** Ports to allocate to services that relays register without a fixed port. @default {null} */
  portRange?: readonly [number, number] | null;
  /** Milliseconds a client waits for a relay when none is connected. @default {10000} */
  relayWait?: number;
  /** Milliseconds an event-channel relay has to open a session for a client. @default {10000} */
  connectTimeout?: number;
  /** Tokens a relay must prove it holds (bare strings are named `token-1`, …); none: any relay may connect. @default {[]} */
  tokens?: readonly (string | NamedToken)[];
  /** CIDR ranges allowed on the client ports; none: all. @default {[]} */
  clientAllow?: readonly string[];
  /** Port of the admin HTTP listener; null: none. @default {null} */
  adminPort?: number | null;
  /** Address the admin port binds to. @default {"127.0.0.1"} */
  adminHost?: string;
  /** Relay sessions at once. @default {1024} */
  maxRelaySessions?: number;
  /** Client connections at once. @default {50000} */
  maxClients?: number;
  /** New client connections per second per address; 0: no limit. @default {1000} */
  clientRate?: number;
  /** Milliseconds a stream may go without traffic; 0: forever. @default {0} */
  idleTimeout?: number;
  /** Milliseconds between one-line summaries at info level; 0: none. @default {60000} */
  summaryInterval?: number;
  /** Serve TLS on the relay port (certificate and key, PEM); relays may also speak WebSocket over it. @default {null} */
  tls?: TlsListenOptions | null;
  /** Serve TLS on the client ports. @default {null} */
  clientTls?: TlsListenOptions | null;
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
  /** How the relay carries clients: `mux`, `pool` or `event`. */
  channel: string;
  /** Services it registered. */
  services: string[];
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

/** One service, as the matcher's stats show it. */
export interface ServiceInfo {
  /** Service name; `default` is the `--client-port` one. */
  name: string;
  /** Its client port, or null while it has none open. */
  port: number | null;
  /** Relay sessions in its pool. */
  relays: number;
  /** Clients waiting for one of them. */
  waiting: number;
}

/** A snapshot of the matcher's state. */
export interface MatcherStats {
  /** Connected relay sessions. */
  relays: RelayInfo[];
  /** Services and their ports. */
  services: ServiceInfo[];
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
  /** The process's memory budgets: full ones mean slow or stalled clients are holding memory. */
  memory: MemoryBudgets;
}

/** How full the process's memory budgets are, in bytes. */
export interface MemoryBudgets {
  /** Bytes read from sockets that their readers have not taken yet. */
  readQueued: number;
  /** Past this, sockets read only when their reader asks. */
  readBudget: number;
  /** Receive window granted beyond streams' initial windows. */
  windowGrowth: number;
  /** The most the windows may grow by together. */
  windowBudget: number;
  /** Read buffers kept whole by queued payloads that are small pieces of them. */
  piecesHeld: number;
  /** Past this, such pieces are queued as copies. */
  pieceBudget: number;
}

/** A running matcher. */
export interface Matcher {
  /** Where relays connect (the real port, also after asking for 0). */
  readonly relayAddr: Addr;
  /** The default service's client port. */
  readonly clientAddr: Addr;
  /** Where the admin listener is, if enabled. */
  readonly adminAddr: Addr | null;
  /** The client port of a service, or null if it has none now. */
  servicePort(name: string): number | null;
  /** A snapshot of relays, services and clients. */
  stats(): MatcherStats;
  /** The metrics in the Prometheus text format. */
  metrics(): string;
  /**
   * Stops accepting, asks relays to go away, lets open streams finish for up
   * to `drainTimeout` milliseconds, then closes everything.
   */
  close(drainTimeout?: number): Promise<void>;
}

/** A client's stream and the session carrying it. */
interface Opened {
  stream: Stream;
  session: Session;
}

/** A relay session in the matcher's pools. A class: with pool and event there is one per client. */
class RelaySession implements PoolMember {
  readonly id: number;
  readonly session: Session;
  readonly address: string;
  readonly token: string | null;
  readonly channel: string;
  /** Names of the services it registered for. A list, not a Set: one name is the rule, and a Set costs about 0.3 KB. */
  readonly services: string[] = [];
  /** A pool session carries one client; once taken it leaves the pool. */
  taken = false;
  readonly #maxStreams: number;

  constructor(id: number, session: Session, address: string, token: string | null, maxStreams: number) {
    this.id = id;
    this.session = session;
    this.address = address;
    this.token = token;
    this.channel = String(session.peerHello!.channel ?? "mux");
    this.#maxStreams = maxStreams;
  }

  get openStreams(): number {
    return this.session.openStreams;
  }

  get available(): boolean {
    return this.session.acceptingStreams && !this.taken && this.session.openStreams < this.#maxStreams;
  }

  claim(): void {
    // Taken when picked, not when its stream opens: clients woken together pick in turn.
    if (this.channel === "pool") this.taken = true;
  }
}

/** `address` (`host:port`, `[v6]:port`) without its port. */
function hostOf(address: string): string {
  return address.slice(0, address.lastIndexOf(":"));
}

/** What a relay proved with its AUTH answer: the token it holds. */
interface Proof {
  token: string | null;
}

/** Shared by the sessions of a matcher without tokens, which never fill it in. */
const NO_PROOF: Proof = Object.freeze({ token: null });

function checkRelayHello(hello: Hello): void {
  if (hello.role !== "relay") throw new Error(`peer introduced itself as ${JSON.stringify(hello.role)}, not a relay`);
}

/**
 * Starts a matcher: binds the relay port, the client ports (and the admin
 * port, if asked) and serves until closed.
 *
 * @throws {Error} naming the port when one cannot be bound
 */
export async function startMatcher(options: MatcherOptions): Promise<Matcher> {
  const matcher = new MatcherServer(options);
  await matcher.listen();
  return matcher;
}

class MatcherServer implements Matcher {
  readonly #options: MatcherOptions;
  readonly #log: Logger;
  readonly #verifier: TokenVerifier | null;
  readonly #allow: AllowList;
  readonly #rate: RateLimiter;
  readonly #relays: RelaySession[] = [];
  /** Pool sessions connected now, by the relay's address without its port. */
  readonly #poolSessions = new Map<string, number>();
  readonly #services = new Map<string, Service<RelaySession>>();
  readonly #allocating = new Map<string, Promise<Service<RelaySession> | string>>();
  readonly #stickyPorts = new Map<string, number>();
  readonly #releaseTimers = new Map<string, ReturnType<typeof setTimeout>>();
  readonly #tickets = new Map<string, (session: Session) => void>();
  readonly #clients = new Set<Conn>();
  readonly #started = Date.now();
  #handshaking = 0;
  #relayListener!: Listener;
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
  readonly #failovers = this.#metrics.counter(
    "failovers_total",
    "Clients retried on another relay after a destination failed.",
  );

  constructor(options: MatcherOptions) {
    this.#options = options;
    this.#log = options.log ?? silentLogger;
    const tokens = (options.tokens ?? []).map((t, i) =>
      typeof t === "string" ? { name: `token-${i + 1}`, token: t } : t
    );
    if (tokens.some((t) => !t.token)) {
      throw new RangeError("Cannot start matcher: every token must be a non-empty string");
    }
    this.#verifier = tokens.length > 0 ? new TokenVerifier(tokens) : null;
    this.#allow = new AllowList(options.clientAllow ?? []);
    this.#rate = new RateLimiter(options.clientRate ?? 1000);
    this.#metrics.gauge("relay_sessions", "Relay sessions connected now.", () => this.#relays.length);
    this.#metrics.gauge("open_streams", "Client streams open now.", () => this.#openStreams());
    this.#metrics.gauge("clients_waiting", "Clients waiting for a relay.", () => this.#waiting());
    // The process's memory budgets: full ones mean slow or stalled clients are holding memory.
    this.#metrics.gauge(
      "read_queued_bytes",
      `Bytes read from sockets that their readers have not taken yet; past ${
        formatBytes(sharedReadBudget.size)
      } sockets read only on demand.`,
      () => sharedReadBudget.queued,
    );
    this.#metrics.gauge(
      "window_growth_bytes",
      `Receive window granted beyond streams' initial windows, out of a budget of ${
        formatBytes(sharedWindowBudget.size)
      }.`,
      () => sharedWindowBudget.size - sharedWindowBudget.available,
    );
    this.#metrics.gauge(
      "read_pieces_bytes",
      `Read buffers kept whole by queued payloads that are small pieces of them; past ${
        formatBytes(sharedPieceBudget.size)
      } such pieces are copied.`,
      () => sharedPieceBudget.held,
    );
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
    return this.#services.get(DEFAULT_SERVICE)!.listener!.addr;
  }

  get adminAddr(): Addr | null {
    return this.#adminListener?.addr ?? null;
  }

  servicePort(name: string): number | null {
    return this.#services.get(name)?.listener?.addr.port ?? null;
  }

  async listen(): Promise<void> {
    const { transport, adminPort } = this.#options;
    const host = this.#options.listenHost ?? "0.0.0.0";
    const opened: Listener[] = [];
    try {
      this.#relayListener = await listenOn(
        () => transport.listen(this.#listenOptions(host, this.#options.relayPort ?? 6543, this.#options.tls, "relay")),
        host,
        this.#options.relayPort ?? 6543,
        "relay port",
        "--relay-port",
      );
      opened.push(this.#relayListener);
      const fixed: ServiceEntry[] = [{ name: DEFAULT_SERVICE, clientPort: this.#options.clientPort ?? 6544 }];
      for (const entry of this.#options.services ?? []) {
        if (entry.name === DEFAULT_SERVICE) {
          fixed[0] = { ...entry, clientPort: entry.clientPort ?? fixed[0].clientPort };
        } else if (entry.clientPort !== undefined) fixed.push(entry);
      }
      for (const entry of fixed) {
        const service = new Service<RelaySession>(entry.name, entry.balance ?? this.#balance, false);
        const flag = entry.name === DEFAULT_SERVICE ? "--client-port" : `services.${entry.name}.client_port`;
        service.listener = await listenOn(
          () => transport.listen(this.#listenOptions(host, entry.clientPort!, this.#options.clientTls, "client")),
          host,
          entry.clientPort!,
          `client port of ${entry.name}`,
          flag,
        );
        opened.push(service.listener);
        this.#services.set(entry.name, service);
        this.#acceptLoop(service.listener, (conn) => this.#serveClient(conn, service));
      }
      if (adminPort !== null && adminPort !== undefined) {
        const adminHost = this.#options.adminHost ?? "127.0.0.1";
        this.#adminListener = await listenOn(
          () =>
            startAdmin({
              transport,
              hostname: adminHost,
              port: adminPort,
              route: (path) => this.#route(path),
              log: this.#log,
            }),
          adminHost,
          adminPort,
          "admin port",
          "--admin-port",
        );
      }
    } catch (error) {
      for (const listener of opened) listener.close();
      throw error;
    }
    const named = [...this.#services.values()].filter((s) => s.name !== DEFAULT_SERVICE);
    this.#log.info("matcher listening", {
      relay_port: formatAddr(this.relayAddr),
      client_port: formatAddr(this.clientAddr),
      services: named.length ? named.map((s) => `${s.name}:${s.listener!.addr.port}`).join(",") : undefined,
      port_range: this.#options.portRange ? this.#options.portRange.join("-") : undefined,
      admin_port: this.adminAddr ? formatAddr(this.adminAddr) : undefined,
      balance: this.#balance,
      auth: this.#verifier ? `${this.#options.tokens!.length} token(s)` : "off",
      tls: [this.#options.tls && "relay port", this.#options.clientTls && "client ports"].filter(Boolean).join(", ") ||
        "off",
    });
    if (this.#options.tls) {
      // What relays pin with --tls-fingerprint.
      const fingerprint = await fingerprintOfPem(this.#options.tls.cert).catch(() => null);
      if (fingerprint) this.#log.info("relay port certificate", { fingerprint });
    }
    this.#acceptLoop(this.#relayListener, (conn) => this.#serveRelay(conn));
    const every = this.#options.summaryInterval ?? 60_000;
    if (every > 0) this.#summaryTimer = setInterval(() => this.#logSummary(), every);
  }

  stats(): MatcherStats {
    const now = Date.now();
    return {
      relays: this.#relays.map((relay) => {
        const s = relay.session.stats();
        return {
          id: relay.id,
          address: relay.address,
          token: relay.token,
          channel: relay.channel,
          services: [...relay.services],
          openStreams: s.openStreams,
          totalStreams: s.totalStreams,
          bytesSent: s.bytesSent,
          bytesReceived: s.bytesReceived,
          uptimeMs: now - s.since,
          rttMs: s.rttMs,
        };
      }),
      services: [...this.#services.values()].map((s) => ({
        name: s.name,
        port: s.listener?.addr.port ?? null,
        relays: s.members.length,
        waiting: s.waiting,
      })),
      clientsWaiting: this.#waiting(),
      clientsActive: this.#clients.size - this.#waiting(),
      clientsTotal: this.#clientsTotal,
      uptimeMs: now - this.#started,
      draining: this.#closing,
      memory: {
        readQueued: sharedReadBudget.queued,
        readBudget: sharedReadBudget.size,
        windowGrowth: sharedWindowBudget.size - sharedWindowBudget.available,
        windowBudget: sharedWindowBudget.size,
        piecesHeld: sharedPieceBudget.held,
        pieceBudget: sharedPieceBudget.size,
      },
    };
  }

  metrics(): string {
    return this.#metrics.render();
  }

  async close(drainTimeout = 0): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    if (this.#summaryTimer !== null) clearInterval(this.#summaryTimer);
    for (const timer of this.#releaseTimers.values()) clearTimeout(timer);
    this.#relayListener.close();
    for (const service of this.#services.values()) service.release();
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

  get #balance(): Balance {
    return this.#options.balance ?? "random";
  }

  #listenOptions(hostname: string, port: number, tls: TlsListenOptions | null | undefined, what: string) {
    return {
      hostname,
      port,
      tls: tls ?? undefined,
      onHandshakeError: (error: Error, remote: Addr) =>
        this.#log.debug(`${what} port: TLS handshake failed`, { peer: formatAddr(remote), error: error.message }),
    };
  }

  // ---- Relays ----

  async #serveRelay(accepted: Conn): Promise<void> {
    const address = formatAddr(accepted.remoteAddr);
    const limit = this.#options.maxRelaySessions ?? 1024;
    if (this.#relays.length + this.#handshaking >= limit) {
      // Say why, so the relay logs a refusal rather than a broken connection.
      this.#refuse("relay", "too many relay sessions", address);
      await accepted.write(
        encodeFrame(FrameType.GOAWAY, 0, new TextEncoder().encode("refused: too many relay sessions")),
      )
        .catch(() => {});
      return accepted.close();
    }
    // One port serves raw sessions and WebSocket ones (for relays behind HTTP proxies).
    let conn: Conn;
    const timeout = this.#options.handshakeTimeout ?? 10_000;
    try {
      const sniffed = await withTimeout(
        sniffWebSocket(accepted),
        timeout,
        `nothing received within ${formatDuration(timeout)}`,
      );
      conn = sniffed.kind === "raw"
        ? sniffed.conn
        : await withTimeout(wsAccept(sniffed.conn), timeout, `no WebSocket upgrade within ${formatDuration(timeout)}`);
    } catch (error) {
      accepted.reset();
      this.#log.warn("relay handshake failed", { relay: address, reason: errorMessage(error) });
      return;
    }
    const nonce = this.#verifier ? newNonce() : null;
    // Filled in by the AUTH step; without a verifier there is none, and nothing to fill.
    const proof: Proof = nonce ? { token: null } : NO_PROOF;
    let registered!: (relay: RelaySession) => void;
    const ready = new Promise<RelaySession>((resolve) => registered = resolve);
    const session = this.#acceptSession(conn, nonce, proof, ready);
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
    if (session.peerHello!.channel === "data") return this.#claimTicket(session, String(session.peerHello!.ticket));
    registered(this.#addRelay(session, address, proof.token));
  }

  /**
   * The session of a relay's connection. Made here, not in the async
   * `#serveRelay`: callbacks made there would keep its whole frame for as long
   * as the session lives (one per client with pool and event).
   */
  #acceptSession(conn: Conn, nonce: string | null, proof: Proof, ready: Promise<RelaySession>): Session {
    const verifier = this.#verifier;
    return new Session(conn, {
      side: "acceptor",
      hello: { role: "matcher", software: `o3sr/${VERSION}`, ...(nonce ? { auth: { nonce } } : {}) },
      checkHello: checkRelayHello,
      authenticate: verifier
        ? async (answer) => {
          proof.token = await verifier.verify(nonce!, answer.proof, AUTH_CONTEXT);
          if (proof.token === null) throw new Error(answer.proof === undefined ? "token required" : "bad token");
        }
        : undefined,
      onStream: (stream) => this.#relayStream(stream, ready),
      ...tunablesOf(this.#options),
    });
  }

  /** A relay session completed its handshake: it joins the pools it registers for, until it ends. */
  #addRelay(session: Session, address: string, token: string | null): RelaySession {
    const relay = new RelaySession(
      this.#nextSessionId++,
      session,
      address,
      token,
      this.#options.maxStreams ?? Infinity,
    );
    this.#relays.push(relay);
    this.#relaySessionsTotal.inc();
    // A pool relay keeps --pool-size sessions and replaces each one a client
    // takes: only the first from its address is news.
    let routine = false;
    if (relay.channel === "pool") {
      const host = hostOf(address);
      const sessions = (this.#poolSessions.get(host) ?? 0) + 1;
      this.#poolSessions.set(host, sessions);
      routine = sessions > 1;
    }
    (routine ? this.#log.debug : this.#log.info)("relay connected", {
      relay: address,
      session: relay.id,
      channel: relay.channel === "mux" ? undefined : relay.channel,
      token: token ?? undefined,
      relays: this.#relays.length,
    });
    session.whenClosed((reason) => {
      try {
        this.#relayGone(relay, reason);
      } catch (error) {
        this.#log.error("connection handler failed", { error: errorMessage(error) });
      }
    });
    return relay;
  }

  #relayGone(relay: RelaySession, reason: string): void {
    const session = relay.session;
    this.#relays.splice(this.#relays.indexOf(relay), 1);
    for (const name of relay.services) this.#leave(name, relay);
    if (relay.channel === "pool") {
      const host = hostOf(relay.address);
      const sessions = this.#poolSessions.get(host)! - 1;
      if (sessions === 0) this.#poolSessions.delete(host);
      else this.#poolSessions.set(host, sessions);
    }
    const error = session.closeError;
    if (error instanceof ProtocolError) this.#framesRejected.inc({ reason: error.code });
    // Pool and data sessions end after each client; only mux and event sessions are news.
    const quiet = relay.taken && !error;
    const fields = {
      relay: relay.address,
      session: relay.id,
      reason,
      streams: session.stats().totalStreams,
      up: formatDuration(Date.now() - session.stats().since),
      relays: this.#relays.length,
    };
    if (error) this.#log.warn("relay disconnected", fields);
    else if (quiet) this.#log.debug("relay disconnected", fields);
    else this.#log.info("relay disconnected", fields);
  }

  /** A stream the relay opened: only service registration is allowed. */
  async #relayStream(stream: Stream, ready: Promise<RelaySession>): Promise<void> {
    const entries = stream.meta.register;
    if (!Array.isArray(entries)) return stream.reset("relays may only open registration streams");
    const relay = await ready;
    const services: Record<string, { port: number } | { error: string }> = {};
    for (const entry of entries.slice(0, 256)) {
      const name = (entry as { name?: unknown })?.name;
      if (typeof name !== "string" || !/^[a-z0-9][a-z0-9_.-]{0,62}$/i.test(name)) continue;
      const service = await this.#serviceFor(name);
      if (typeof service === "string") {
        services[name] = { error: service };
        continue;
      }
      service.add(relay);
      if (!relay.services.includes(name)) relay.services.push(name);
      const timer = this.#releaseTimers.get(name);
      if (timer !== undefined) clearTimeout(timer);
      this.#releaseTimers.delete(name);
      services[name] = { port: service.listener!.addr.port };
    }
    this.#log.debug("relay registered", {
      relay: relay.address,
      session: relay.id,
      services: Object.keys(services).join(","),
    });
    try {
      stream.accept();
      // Written and half-closed without waiting in between: one frame batch.
      const written = stream.write(new TextEncoder().encode(JSON.stringify({ services })));
      await stream.closeWrite();
      await written;
    } catch {
      // The session ended meanwhile.
    }
  }

  /** The service with this name, opening a port from the range if needed; a string says why not. */
  #serviceFor(name: string): Promise<Service<RelaySession> | string> {
    const existing = this.#services.get(name);
    if (existing) return Promise.resolve(existing);
    const pending = this.#allocating.get(name);
    if (pending) return pending;
    const allocation = this.#allocate(name).finally(() => this.#allocating.delete(name));
    this.#allocating.set(name, allocation);
    return allocation;
  }

  async #allocate(name: string): Promise<Service<RelaySession> | string> {
    const range = this.#options.portRange;
    if (!range) {
      return `the matcher has no client port for service "${name}": give it services: {${name}: {client_port: PORT}} or --port-range`;
    }
    const host = this.#options.listenHost ?? "0.0.0.0";
    const taken = new Set([...this.#services.values()].map((s) => s.listener?.addr.port));
    const sticky = this.#stickyPorts.get(name);
    const candidates = sticky === undefined ? [] : [sticky];
    for (let port = range[0]; port <= range[1]; port++) if (port !== sticky) candidates.push(port);
    for (const port of candidates) {
      if (taken.has(port) || [...this.#stickyPorts].some(([other, p]) => p === port && other !== name)) continue;
      let listener: Listener;
      try {
        listener = await this.#options.transport.listen(
          this.#listenOptions(host, port, this.#options.clientTls, "client"),
        );
      } catch {
        continue; // in use by something else
      }
      if (this.#closing) {
        listener.close();
        return "the matcher is shutting down";
      }
      const service = new Service<RelaySession>(name, this.#balance, true);
      service.listener = listener;
      this.#services.set(name, service);
      this.#stickyPorts.set(name, port);
      this.#acceptLoop(listener, (conn) => this.#serveClient(conn, service));
      this.#log.info("service published", { service: name, client_port: formatAddr(listener.addr) });
      return service;
    }
    return `no free port left in ${range.join("-")} for service "${name}"`;
  }

  /** A relay left a service; an allocated service without relays closes its port after a grace period. */
  #leave(name: string, relay: RelaySession): void {
    const service = this.#services.get(name);
    if (!service) return;
    service.remove(relay);
    if (!service.allocated || service.members.length > 0 || this.#closing) return;
    const grace = this.#options.relayWait ?? 10_000;
    this.#releaseTimers.set(
      name,
      setTimeout(() => {
        this.#releaseTimers.delete(name);
        if (service.members.length > 0) return;
        service.release();
        this.#services.delete(name);
        this.#log.info("service withdrawn", { service: name, reason: "no relay left" });
      }, grace),
    );
  }

  /** An event-channel data session arrived for a waiting client. */
  #claimTicket(session: Session, ticket: string): void {
    const claim = this.#tickets.get(ticket);
    if (!claim) return session.close("unknown or expired ticket");
    this.#tickets.delete(ticket);
    claim(session);
  }

  // ---- Clients ----

  async #serveClient(conn: Conn, service: Service<RelaySession>): Promise<void> {
    const client = formatAddr(conn.remoteAddr);
    const refusal = this.#checkClient(conn.remoteAddr.hostname);
    if (refusal) {
      this.#refuse("client", refusal, client);
      return conn.reset();
    }
    this.#clients.add(conn);
    this.#clientsTotal++;
    const started = Date.now();
    const tried = new Set<RelaySession>();
    const early = new EarlyData(conn);
    let carrying = false;
    try {
      for (;;) {
        let relay = service.pick(tried);
        if (relay === null && tried.size === 0 && !this.#closing) {
          relay = await service.waitForRelay(this.#options.relayWait ?? 10_000);
        }
        if (relay === null) {
          const reason = tried.size === 0 ? "no relay available" : "every relay failed to reach the destination";
          this.#log.warn(`${reason}; closing client`, {
            client,
            service: service.name,
            waited: formatDuration(Date.now() - started),
          });
          this.#refused.inc({ reason: tried.size === 0 ? "no relay" : "destination unreachable" });
          if (tried.size === 0) conn.close();
          else conn.reset();
          return;
        }
        tried.add(relay);
        const opened = await this.#openStream(relay, service.name, client).catch((error: Error) => error);
        const refused = opened instanceof Error ? opened : await this.#sendEarly(opened, relay, early);
        if (refused === null && !(opened instanceof Error)) {
          service.noteSuccess(relay);
          // Not awaited: this frame (and `tried`) need not live as long as the client.
          this.#carry(conn, opened, relay, service.name, client, started, early);
          carrying = true;
          return;
        }
        // What the client sent is kept, so another relay may take it.
        const reason = errorMessage(refused);
        const skipped = /unreachable:/.test(reason) && service.noteFailure(relay);
        this.#failovers.inc();
        this.#log.warn("relay could not take the client; trying another", {
          client,
          service: service.name,
          relay: relay.address,
          reason,
          skipped: skipped ? "30s" : undefined,
        });
      }
    } catch (error) {
      this.#log.warn("client failed", { client, error: errorMessage(error) });
      conn.reset();
    } finally {
      if (!carrying) this.#clients.delete(conn);
    }
  }

  /** Opens a stream for a client on `relay`, the way its channel works. */
  async #openStream(relay: RelaySession, service: string, client: string): Promise<Opened> {
    const meta = { client, service };
    let session = relay.session;
    if (relay.channel === "event") {
      const ticket = crypto.randomUUID();
      const timeout = this.#options.connectTimeout ?? 10_000;
      const arrival = new Promise<Session>((resolve) => this.#tickets.set(ticket, resolve));
      relay.session.openStream({ ...meta, dial: ticket }).accepted.catch(() => {});
      session = await withTimeout(arrival, timeout, `relay opened no session within ${formatDuration(timeout)}`)
        .finally(() => this.#tickets.delete(ticket));
    }
    return { stream: session.openStream(meta), session };
  }

  /**
   * Sends the client's bytes on the stream until the relay accepts it.
   *
   * @returns null once accepted, or why the relay refused it
   */
  async #sendEarly({ stream, session }: Opened, relay: RelaySession, early: EarlyData): Promise<Error | null> {
    let refused: Error | null;
    try {
      refused = await early.send(stream);
    } catch (error) {
      stream.reset("client failed");
      throw error;
    }
    if (refused !== null && (session !== relay.session || relay.channel === "pool")) session.goAway("done");
    return refused;
  }

  /** Pipes the client and its stream, then counts and logs the outcome; never throws. */
  #carry(
    conn: Conn,
    { stream, session }: Opened,
    relay: RelaySession,
    service: string,
    client: string,
    started: number,
    early: EarlyData,
  ): void {
    this.#streamsOpened.inc();
    this.#log.debug("client connected", { client, service, relay: relay.address, stream: stream.id });
    const earlyBytes = early.bytes;
    const pendingRead = early.takePendingRead();
    pipeThen(conn, stream, (result) => {
      this.#clients.delete(conn);
      try {
        result.aToB += earlyBytes;
        // Pool and event sessions carry one client.
        if (session !== relay.session || relay.channel === "pool") session.goAway("done");
        this.#bytes.inc({ direction: "up" }, result.aToB);
        this.#bytes.inc({ direction: "down" }, result.bToA);
        this.#streamsClosed.inc({ outcome: result.error ? "error" : "clean" });
        const fields = {
          client,
          service: service === DEFAULT_SERVICE ? undefined : service,
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
        // Nothing awaits this: a failure here must not become an unhandled rejection.
        this.#log.warn("client failed", { client, error: errorMessage(error) });
      }
    }, { idleTimeout: this.#options.idleTimeout, pendingRead });
  }

  /** Why a client from `address` is refused, or null to serve it. */
  #checkClient(address: string): string | null {
    if (!this.#allow.allows(address)) return "address not allowed";
    if (this.#clients.size >= (this.#options.maxClients ?? 50_000)) return "too many clients";
    if (!this.#rate.take(address)) return "connection rate exceeded";
    return null;
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
      services: this.#services.size,
      streams: this.#openStreams(),
      waiting: this.#waiting(),
      clients_total: this.#clientsTotal,
      up: formatBytes(this.#bytes.get({ direction: "up" })),
      down: formatBytes(this.#bytes.get({ direction: "down" })),
    });
  }

  #openStreams(): number {
    return this.#relays.reduce((sum, relay) => sum + relay.openStreams, 0);
  }

  #waiting(): number {
    let waiting = 0;
    for (const service of this.#services.values()) waiting += service.waiting;
    return waiting;
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

async function listenOn<T extends Listener>(
  open: () => Promise<T>,
  hostname: string,
  port: number,
  what: string,
  flag: string,
): Promise<T> {
  try {
    return await open();
  } catch (error) {
    throw new Error(
      `cannot listen on ${hostname}:${port} for the ${what}: ${
        errorMessage(error)
      }. Is another matcher running? Pick another port with ${flag}.`,
    );
  }
}
