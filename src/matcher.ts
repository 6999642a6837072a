/**
 * The matcher runs on a public host. Relays dial in to its relay port and
 * keep sessions open; each user connection on its client port becomes a new
 * stream on one relay session, picked by the balance strategy.
 *
 * @module
 */

import { createPicker, type Picker } from "./balance.ts";
import type { Balance } from "./config.ts";
import { errorMessage } from "./errors.ts";
import { formatBytes, formatDuration, type Logger, silentLogger } from "./log.ts";
import { pipe } from "./pipe.ts";
import { Session, type SessionTunables, tunablesOf } from "./protocol/session.ts";
import { waitUntil } from "./async.ts";
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
  /** Where events are logged. @default {silentLogger} */
  log?: Logger;
}

/** One connected relay session, as the matcher's stats show it. */
export interface RelayInfo {
  /** Session number, unique within this matcher's lifetime. */
  id: number;
  /** The relay's address as seen by the matcher. */
  address: string;
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
}

/** A running matcher. */
export interface Matcher {
  /** Where relays connect (the real port, also after asking for 0). */
  readonly relayAddr: Addr;
  /** Where users connect. */
  readonly clientAddr: Addr;
  /** A snapshot of relays and clients. */
  stats(): MatcherStats;
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
  readonly openStreams: number;
}

/**
 * Starts a matcher: binds the relay and client ports and serves until closed.
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
  readonly #relays: RelaySession[] = [];
  readonly #clients = new Set<Conn>();
  #waiting: Array<(relay: RelaySession | null) => void> = [];
  #relayListener!: Listener;
  #clientListener!: Listener;
  #nextSessionId = 1;
  #clientsTotal = 0;
  #closing = false;

  constructor(options: MatcherOptions) {
    this.#options = options;
    this.#log = options.log ?? silentLogger;
    this.#pick = createPicker(options.balance ?? "random");
  }

  get relayAddr(): Addr {
    return this.#relayListener.addr;
  }

  get clientAddr(): Addr {
    return this.#clientListener.addr;
  }

  async listen(): Promise<void> {
    const host = this.#options.listenHost ?? "0.0.0.0";
    this.#relayListener = await listenOn(this.#options.transport, host, this.#options.relayPort ?? 6543, "relay");
    try {
      this.#clientListener = await listenOn(this.#options.transport, host, this.#options.clientPort ?? 6544, "client");
    } catch (error) {
      this.#relayListener.close();
      throw error;
    }
    this.#log.info("matcher listening", {
      relay_port: formatAddr(this.relayAddr),
      client_port: formatAddr(this.clientAddr),
      balance: this.#options.balance ?? "random",
    });
    this.#acceptLoop(this.#relayListener, (conn) => this.#serveRelay(conn));
    this.#acceptLoop(this.#clientListener, (conn) => this.#serveClient(conn));
  }

  stats(): MatcherStats {
    const now = Date.now();
    return {
      relays: this.#relays.map(({ id, address, session }) => {
        const s = session.stats();
        return {
          id,
          address,
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
    };
  }

  async close(drainTimeout = 0): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.#relayListener.close();
    this.#clientListener.close();
    for (const wake of this.#waiting.splice(0)) wake(null);
    const sessions = this.#relays.map((relay) => relay.session);
    for (const session of sessions) session.goAway("matcher shutting down");
    if (sessions.some((s) => !s.isClosed)) {
      const streams = sessions.reduce((sum, s) => sum + s.openStreams, 0);
      this.#log.info("draining", { streams, timeout: formatDuration(drainTimeout) });
      await waitUntil(Promise.all(sessions.map((s) => s.closed)), drainTimeout);
    }
    for (const session of sessions) session.close("matcher shut down");
    for (const conn of this.#clients) conn.reset();
    this.#log.info("matcher stopped");
  }

  // ---- Relays ----

  async #serveRelay(conn: Conn): Promise<void> {
    const address = formatAddr(conn.remoteAddr);
    const options = this.#options;
    const session = new Session(conn, {
      side: "acceptor",
      hello: { role: "matcher", software: `o3sr/${VERSION}` },
      checkHello: (hello) => {
        if (hello.role !== "relay") {
          throw new Error(`peer introduced itself as ${JSON.stringify(hello.role)}, not a relay`);
        }
      },
      ...tunablesOf(options),
    });
    try {
      await session.ready;
    } catch {
      this.#log.warn("relay handshake failed", { relay: address, reason: session.closeReason });
      return;
    }
    if (this.#closing) return session.close("matcher shutting down");
    const relay: RelaySession = {
      id: this.#nextSessionId++,
      session,
      address,
      get openStreams() {
        return session.openStreams;
      },
    };
    this.#relays.push(relay);
    this.#log.info("relay connected", { relay: address, session: relay.id, relays: this.#relays.length });
    for (const wake of this.#waiting.splice(0)) wake(relay);

    const reason = await session.closed;
    this.#relays.splice(this.#relays.indexOf(relay), 1);
    const stats = session.stats();
    const fields = {
      relay: address,
      session: relay.id,
      reason,
      streams: stats.totalStreams,
      up: formatDuration(Date.now() - stats.since),
      relays: this.#relays.length,
    };
    if (session.closeError) this.#log.warn("relay disconnected", fields);
    else this.#log.info("relay disconnected", fields);
  }

  // ---- Clients ----

  async #serveClient(conn: Conn): Promise<void> {
    const client = formatAddr(conn.remoteAddr);
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
        conn.close();
        return;
      }
      const stream = relay.session.openStream({ client });
      this.#log.debug("client connected", { client, relay: relay.address, stream: stream.id });
      const result = await pipe(conn, stream);
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

  /** A relay session that takes new streams now, picked by the strategy. */
  #available(): RelaySession | null {
    const open = this.#relays.filter((relay) => relay.session.acceptingStreams);
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

async function listenOn(transport: Transport, hostname: string, port: number, what: string): Promise<Listener> {
  try {
    return await transport.listen({ hostname, port });
  } catch (error) {
    const flag = what === "relay" ? "--relay-port" : "--client-port";
    throw new Error(
      `cannot listen on ${hostname}:${port} for the ${what} port: ${
        errorMessage(error)
      }. Is another matcher running? Pick another port with ${flag}.`,
    );
  }
}
