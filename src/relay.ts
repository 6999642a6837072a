/**
 * The relay runs behind NAT. It dials out to one or more matchers and never
 * accepts inbound connections. Per matcher it keeps its sessions open
 * (replacing any that drop, with capped exponential backoff and jitter),
 * registers its services, and forwards each stream it is given to the
 * service's destination, or to an in-process handler.
 *
 * Channels: `mux` carries many streams over `connections` long-lived
 * sessions; `pool` keeps `poolSize` idle sessions that carry one client each
 * and are replaced at once; `event` keeps a control session over which the
 * matcher asks for a fresh session per client.
 *
 * @module
 */

import { Deferred, sleep, waitUntil, withTimeout } from "./async.ts";
import { answerChallenge, AUTH_CONTEXT } from "./auth.ts";
import type { Channel, ProxyVersion, ServiceEntry } from "./config.ts";
import { errorMessage } from "./errors.ts";
import { formatBytes, formatDuration, type Logger, silentLogger } from "./log.ts";
import { type PipeResult, pipeThen } from "./pipe.ts";
import { ProtocolError } from "./protocol/errors.ts";
import { type Hello, Session, type SessionTunables, tunablesOf } from "./protocol/session.ts";
import type { Stream } from "./protocol/stream.ts";
import { parseHostPort, proxyHeader } from "./proxy_protocol.ts";
import { DEFAULT_SERVICE } from "./service.ts";
import { type Conn, formatAddr, type TlsConnectOptions, type Transport } from "./transport/types.ts";
import { parseWebSocketUrl, wsConnect } from "./transport/websocket.ts";
import { VERSION } from "./version.ts";

/** Options of {@linkcode startRelay}; names are the config keys in camelCase. */
export interface RelayOptions extends SessionTunables {
  /** How to dial: the runtime's TCP transport, or another. */
  transport: Transport;
  /** Matcher(s) to dial, as `host` or `host:port`; with several, the relay serves all of them. @default {"localhost"} */
  matcherHost?: string | readonly string[];
  /** The matchers' relay port, where `matcherHost` names none. @default {6543} */
  matcherPort?: number;
  /** Destination of the default service. @default {"localhost"} */
  destHost?: string;
  /** Destination port of the default service. @default {80} */
  destPort?: number;
  /** Named services (name, destination, PROXY protocol); none: only the default service. @default {[]} */
  services?: readonly ServiceEntry[];
  /**
   * Serves each stream in-process instead of forwarding it. The stream is a
   * {@linkcode Conn} with web `readable`/`writable` too; `stream.meta.service`
   * names its service. It is reset if the handler throws.
   */
  handler?: (stream: Stream) => void | Promise<void>;
  /** How client connections are carried. @default {"mux"} */
  channel?: Channel;
  /** Sessions kept open per matcher (`mux`; control sessions for `event`). @default {2} */
  connections?: number;
  /** Idle sessions kept open per matcher with the `pool` channel. @default {10} */
  poolSize?: number;
  /** PROXY protocol header for destinations, unless a service sets its own. @default {null} */
  proxyProtocol?: ProxyVersion | null;
  /** Longest pause between reconnect attempts, in milliseconds. @default {30000} */
  reconnectMax?: number;
  /** Limit for dialing the matcher or the destination, in milliseconds. @default {10000} */
  connectTimeout?: number;
  /** Token proving this relay may connect, when the matcher asks for one. @default {null} */
  token?: string | null;
  /** Milliseconds a stream may go without traffic; 0: forever. @default {0} */
  idleTimeout?: number;
  /**
   * Speak TLS to the matcher, verified as these options say (default: the
   * system's CAs; or `ca`, a pinned `fingerprint`, or `insecure`). @default {null}
   */
  tls?: TlsConnectOptions | null;
  /** Dial the matcher as `ws://host:port/path` or `wss://…` (through HTTP proxies and CDNs) instead of `matcherHost`. @default {null} */
  matcherUrl?: string | null;
  /** Where events are logged. @default {silentLogger} */
  log?: Logger;
}

/** A snapshot of the relay's state. */
export interface RelayStats {
  /** Sessions open to the matchers now (idle pool sessions included). */
  sessions: number;
  /** Streams open now, over all sessions. */
  openStreams: number;
  /** Streams served since start. */
  totalStreams: number;
  /** Streams whose destination could not be reached. */
  failedStreams: number;
  /** Public address of each registered service, per matcher (`host:port`). */
  services: Record<string, string[]>;
}

/**
 * What a relay reports as events (`relay.addEventListener(type, (e) =>
 * (e as CustomEvent).detail)`): `connected`, `disconnected`, `registered`,
 * `stream-open` and `stream-close`, each with the fields below.
 */
export interface RelayEventMap {
  /** A session to a matcher opened and registered its services. */
  connected: { matcher: string; sessions: number };
  /** A session ended; the relay reconnects unless it is closing. */
  disconnected: { matcher: string; reason: string; sessions: number };
  /** A matcher published a service at `address`. */
  registered: { matcher: string; service: string; address: string };
  /** A client stream was accepted. */
  "stream-open": { service: string; client?: string; stream: Stream };
  /** A client stream ended; `up`/`down` are bytes to and from the service. */
  "stream-close": { service: string; client?: string; up: number; down: number; error?: string };
}

/** A running relay. */
export interface Relay extends EventTarget {
  /** A snapshot of sessions, streams and services. */
  stats(): RelayStats;
  /** Resolves once at least `count` sessions are open and registered (default: the full set). */
  connected(count?: number): Promise<void>;
  /**
   * Stops reconnecting, tells the matchers to send no more streams, lets
   * open streams finish for up to `drainTimeout` milliseconds, then closes.
   */
  close(drainTimeout?: number): Promise<void>;
}

/**
 * Starts a relay: opens its sessions in the background and keeps them open
 * until closed. Never throws for an unreachable matcher; it logs and retries.
 *
 * @throws {RangeError} for a service without a destination
 */
export function startRelay(options: RelayOptions): Relay {
  return new RelayClient(options);
}

/** First reconnect pause; doubles per failed attempt up to `reconnectMax`. */
const RECONNECT_MIN = 500;

/** A session that lasted this long counts as a success and resets the backoff. */
const STABLE_SESSION = 10_000;

/** Pause before reconnect attempt `attempt` (1-based): exponential, capped, half of it random. */
export function backoffDelay(attempt: number, max: number, random: () => number = Math.random): number {
  const ceiling = Math.min(max, RECONNECT_MIN * 2 ** Math.min(attempt - 1, 30));
  return Math.round(ceiling / 2 + random() * ceiling / 2);
}

function checkMatcherHello(hello: Hello): void {
  if (hello.role !== "matcher") {
    throw new Error(`peer introduced itself as ${JSON.stringify(hello.role)}, not a matcher`);
  }
}

/** Whether a session carried a client: a stream besides the registration stream the relay opens on each. */
function carriedClient(session: Session): boolean {
  return session.stats().totalStreams > 1;
}

/** What {@linkcode RelayClient} dials a session with besides its target and channel. */
interface DialExtra {
  /** An event channel's data session: the ticket the matcher gave for it. */
  ticket?: string;
  /** Called when the matcher opens the session's first stream. */
  onFirstStream?: () => void;
  /** A routine replacement (a pool session for one a client took): its log line is at debug. */
  quiet?: boolean;
}

/** The matcher refused this relay (a bad token, a limit): retrying soon will not help. */
class RefusedError extends Error {}

interface Target {
  host: string;
  port: number;
  label: string;
  tls?: TlsConnectOptions;
  /** For a WebSocket matcher: the Host header and the path. */
  ws?: { host: string; path: string };
}

interface Destination {
  host: string;
  port: number;
  proxyProtocol: ProxyVersion | null;
}

class RelayClient extends EventTarget implements Relay {
  readonly #options: RelayOptions;
  readonly #log: Logger;
  readonly #targets: Target[];
  readonly #destinations = new Map<string, Destination>();
  readonly #sessions = new Set<Session>();
  readonly #streams = new Set<Stream>();
  readonly #dataSessions = new Set<Session>();
  readonly #published = new Map<string, Set<string>>();
  readonly #unpublished = new Set<string>();
  /** Event types someone listens to. */
  readonly #listened = new Set<string>();
  #connectedWaiters: Array<{ count: number; resolve(): void }> = [];
  #totalStreams = 0;
  #failedStreams = 0;
  #stopping = false;
  #warnedNoAuth = false;
  readonly #stopped = new Deferred<void>();
  readonly #slots: Promise<void>[] = [];

  constructor(options: RelayOptions) {
    super();
    this.#options = options;
    this.#log = options.log ?? silentLogger;
    this.#targets = this.#resolveTargets();
    const services = options.services ?? [];
    for (const service of services) {
      if (service.destPort === undefined && !options.handler) {
        throw new RangeError(
          `Cannot start relay: service "${service.name}" needs a destination, such as ${service.name}=127.0.0.1:3000`,
        );
      }
      this.#destinations.set(service.name, {
        host: service.destHost ?? options.destHost ?? "localhost",
        port: service.destPort ?? 0,
        proxyProtocol: service.proxyProtocol ?? options.proxyProtocol ?? null,
      });
    }
    if (services.length === 0) {
      this.#destinations.set(DEFAULT_SERVICE, {
        host: options.destHost ?? "localhost",
        port: options.destPort ?? 80,
        proxyProtocol: options.proxyProtocol ?? null,
      });
    }
    const channel = this.#channel;
    this.#log.info("relay starting", {
      matcher: this.#targets.map((t) => t.label).join(","),
      services: options.handler ? "in-process handler" : this.#describeServices(),
      channel,
      sessions: this.#perTarget,
    });
    for (const target of this.#targets) {
      for (let slot = 0; slot < this.#perTarget; slot++) this.#slots.push(this.#keepSessionOpen(target));
    }
  }

  /** Where to dial: `matcherUrl`, else each `matcherHost` (with `matcherPort` where it names no port). */
  #resolveTargets(): Target[] {
    const options = this.#options;
    const tls = options.tls ?? undefined;
    if (tls?.insecure) {
      this.#log.warn(
        "TLS certificate checks are OFF (--tls-insecure): anyone on the path can read and change this traffic",
      );
    }
    if (options.matcherUrl) {
      const url = parseWebSocketUrl(options.matcherUrl);
      if (tls && !url.tls) {
        throw new RangeError(`Cannot start relay: TLS options need a wss:// URL, not ${options.matcherUrl}`);
      }
      const defaultPort = url.tls ? 443 : 80;
      const host = url.port === defaultPort ? url.hostname : formatAddr({ hostname: url.hostname, port: url.port });
      return [{
        host: url.hostname,
        port: url.port,
        label: options.matcherUrl,
        tls: url.tls ? tls ?? {} : undefined,
        ws: { host, path: url.path },
      }];
    }
    const hosts = typeof options.matcherHost === "string"
      ? [options.matcherHost]
      : options.matcherHost ?? ["localhost"];
    return hosts.map((entry) => {
      const parsed = parseHostPort(entry);
      const host = parsed?.hostname ?? entry;
      const port = parsed?.port ?? options.matcherPort ?? 6543;
      return { host, port, label: formatAddr({ hostname: host, port }), tls };
    });
  }

  get #channel(): Channel {
    return this.#options.channel ?? "mux";
  }

  /** Sessions kept per matcher. */
  get #perTarget(): number {
    return this.#channel === "pool" ? this.#options.poolSize ?? 10 : this.#options.connections ?? 2;
  }

  stats(): RelayStats {
    const services: Record<string, string[]> = {};
    for (const [name, addresses] of this.#published) services[name] = [...addresses];
    return {
      sessions: this.#sessions.size,
      openStreams: this.#streams.size,
      totalStreams: this.#totalStreams,
      failedStreams: this.#failedStreams,
      services,
    };
  }

  connected(count = this.#perTarget * this.#targets.length): Promise<void> {
    if (this.#sessions.size >= count) return Promise.resolve();
    return new Promise((resolve) => this.#connectedWaiters.push({ count, resolve }));
  }

  async close(drainTimeout = 0): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#stopped.resolve();
    const sessions = [...this.#sessions, ...this.#dataSessions];
    for (const session of sessions) session.goAway("relay shutting down");
    if (this.#streams.size > 0) {
      this.#log.info("draining", { streams: this.#streams.size, timeout: formatDuration(drainTimeout) });
    }
    await waitUntil(Promise.all(sessions.map((s) => s.closed)), drainTimeout);
    for (const session of [...this.#sessions, ...this.#dataSessions]) session.close("relay shut down");
    await Promise.all(this.#slots);
    this.#log.info("relay stopped");
  }

  // ---- Sessions ----

  /** One slot: dial, register, serve until the session ends (or, in a pool, is taken), pause, dial again. */
  async #keepSessionOpen(target: Target): Promise<void> {
    let failures = 0;
    // A pool session replacing one a client took is routine: logged at debug.
    let replacing = false;
    while (!this.#stopping) {
      let taken!: () => void;
      const used = new Promise<void>((resolve) => taken = resolve);
      const extra = { onFirstStream: taken, quiet: replacing };
      const session = await this.#dial(target, this.#channel, extra).catch((error) => {
        failures++;
        replacing = false;
        const pause = backoffDelay(failures, this.#options.reconnectMax ?? 30_000);
        if (error instanceof RefusedError) {
          this.#log.error(`matcher refused: ${error.message}`, {
            matcher: target.label,
            retry_in: formatDuration(pause),
          });
        } else {
          this.#log.warn(`matcher unreachable, retrying in ${formatDuration(pause)}`, {
            matcher: target.label,
            error: errorMessage(error),
          });
        }
        return sleep(pause, this.#stopped.promise).then(() => null);
      });
      if (session === null) continue;
      if (this.#stopping) {
        session.close("relay shutting down");
        break;
      }
      if (this.#channel === "pool") {
        // A pool session is replaced as soon as it is taken, not when it ends.
        // A listener, not a race with `closed`: that would keep a promise and
        // its reaction for each pool session's life.
        failures = 0;
        session.whenClosed(taken);
        await used;
        replacing = carriedClient(session);
        continue;
      }
      await session.closed;
      if (this.#stopping) break;
      // A session that ends at once (a matcher refusing us) must not cause a
      // reconnect storm; only a session that lasted resets the backoff.
      const lasted = Date.now() - session.stats().since;
      failures = lasted >= STABLE_SESSION ? 0 : failures + 1;
      const pause = failures === 0 ? 0 : backoffDelay(failures, this.#options.reconnectMax ?? 30_000);
      if (pause > 0) await sleep(pause, this.#stopped.promise);
    }
  }

  /**
   * The session over a connection to a matcher. Made here, not in the async
   * `#dial`: callbacks made there would keep its whole frame for as long as
   * the session lives (one per client with pool and event).
   */
  #dialerSession(
    conn: Conn,
    target: Target,
    channel: Channel | "data",
    extra: DialExtra,
  ): Session {
    let onFirstStream = extra.onFirstStream;
    return new Session(conn, {
      side: "dialer",
      hello: { role: "relay", software: `o3sr/${VERSION}`, channel, ...(extra.ticket ? { ticket: extra.ticket } : {}) },
      checkHello: checkMatcherHello,
      answer: (hello) => this.#answer(hello, target),
      onStream: (stream) => {
        if (onFirstStream && !stream.meta.dial) {
          onFirstStream();
          onFirstStream = undefined;
        }
        this.#serve(stream, target);
      },
      ...tunablesOf(this.#options),
    });
  }

  /** Dials a matcher and completes the handshake (and, except for data sessions, registration). */
  async #dial(
    target: Target,
    channel: Channel | "data",
    extra: DialExtra = {},
  ): Promise<Session> {
    const options = this.#options;
    const timeout = options.connectTimeout ?? 10_000;
    let conn = await withTimeout(
      options.transport.connect({ hostname: target.host, port: target.port, tls: target.tls }),
      timeout,
      `no connection within ${formatDuration(timeout)}`,
      (late) => late.close(),
    );
    if (target.ws) {
      const tcp = conn;
      conn = await withTimeout(
        wsConnect(tcp, target.ws),
        timeout,
        `no WebSocket upgrade within ${formatDuration(timeout)}`,
      )
        .catch((error) => {
          tcp.close();
          throw error;
        });
    }
    const session = this.#dialerSession(conn, target, channel, extra);
    try {
      await session.ready;
    } catch {
      const refusal = /refused: (.*)$/.exec(session.closeReason)?.[1];
      if (refusal) throw new RefusedError(refusal);
      const error = session.closeError;
      if (error instanceof ProtocolError && error.code === "auth") throw new RefusedError(error.message);
      throw new Error(`handshake failed: ${session.closeReason}`);
    }
    if (channel === "data") return session;
    try {
      await this.#register(session, target);
    } catch (error) {
      session.close("registration failed");
      throw error;
    }
    this.#sessions.add(session);
    (extra.quiet ? this.#log.debug : this.#log.info)(
      `connected to ${target.label} (${this.#sessions.size} session${this.#sessions.size === 1 ? "" : "s"})`,
      {
        channel,
      },
    );
    this.#emit("connected", { matcher: target.label, sessions: this.#sessions.size });
    this.#wakeConnectedWaiters();
    // A listener, not `closed`: with pool, every client's session would keep a promise and its reaction.
    session.whenClosed((reason) => {
      this.#sessions.delete(session);
      if (this.#stopping) return;
      // A pool session ends after its one client: routine, like its replacement.
      const routine = channel === "pool" && carriedClient(session);
      const log = session.closeError ? this.#log.warn : routine ? this.#log.debug : this.#log.info;
      log(`session to ${target.label} ended (${this.#sessions.size} left)`, { reason });
      this.#emit("disconnected", { matcher: target.label, reason, sessions: this.#sessions.size });
    });
    return session;
  }

  /** Tells the matcher which services this session serves; learns their public ports. */
  async #register(session: Session, target: Target): Promise<void> {
    const names = [...this.#destinations.keys()];
    const stream = session.openStream({ register: names.map((name) => ({ name })) });
    // The request is all in CONNECT: half-closed at once, it goes in the same
    // frame batch, and the stream ends with the reply, with no reset after it.
    void stream.closeWrite();
    const decoder = new TextDecoder();
    let text = "";
    for (let chunk = await stream.read(); chunk !== null; chunk = await stream.read()) {
      text += decoder.decode(chunk, { stream: true });
    }
    stream.close();
    let reply: { services?: Record<string, { port?: number; error?: string }> };
    try {
      reply = JSON.parse(text + decoder.decode());
    } catch {
      throw new Error("the matcher answered the service registration with something that is not JSON");
    }
    for (const name of names) {
      const result = reply.services?.[name];
      if (result?.port === undefined) {
        // Logged once per matcher, not at every reconnect.
        const key = `${target.label} ${name}`;
        if (!this.#unpublished.has(key)) {
          this.#unpublished.add(key);
          this.#log.error(`service ${name} not published`, {
            matcher: target.label,
            reason: result?.error ?? "no answer",
          });
        }
        continue;
      }
      const address = formatAddr({ hostname: target.host, port: result.port });
      const known = this.#published.get(name) ?? new Set();
      if (!known.has(address)) {
        known.add(address);
        this.#published.set(name, known);
        this.#log.info(`${name} is reachable at ${address}`);
        this.#emit("registered", { matcher: target.label, service: name, address });
      }
    }
  }

  /** Answers the matcher's token challenge; null when it sent none. */
  #answer(hello: Hello, target: Target): Promise<Record<string, unknown>> | null {
    const nonce = (hello.auth as { nonce?: unknown } | undefined)?.nonce;
    const token = this.#options.token ?? null;
    if (typeof nonce !== "string") {
      if (token !== null && !this.#warnedNoAuth) {
        this.#warnedNoAuth = true;
        this.#log.warn("matcher does not ask for a token; is it the one you meant?", { matcher: target.label });
      }
      return null;
    }
    if (token === null) throw new Error("the matcher requires a token; set --token or O3SR_TOKEN");
    return answerChallenge(token, nonce, AUTH_CONTEXT).then((proof) => ({ proof }));
  }

  // ---- Streams ----

  async #serve(stream: Stream, target: Target): Promise<void> {
    if (stream.meta.dial !== undefined) return this.#dialForEvent(stream, target);
    const service = typeof stream.meta.service === "string" ? stream.meta.service : DEFAULT_SERVICE;
    const client = typeof stream.meta.client === "string" ? stream.meta.client : undefined;
    const destination = this.#destinations.get(service);
    if (!destination) return stream.reset(`unreachable: this relay has no service "${service}"`);
    this.#streams.add(stream);
    this.#totalStreams++;
    const started = Date.now();
    let failure: string | undefined;
    let piping = false;
    try {
      if (this.#options.handler) {
        stream.accept();
        this.#emit("stream-open", { service, client, stream });
        await this.#options.handler(stream);
        return;
      }
      const conn = await this.#connectDestination(destination).catch((error) => {
        this.#failedStreams++;
        const reason = `unreachable: ${destination.host}:${destination.port}: ${errorMessage(error)}`;
        this.#log.warn("stream refused", { stream: stream.id, service, client, reason });
        stream.reset(reason);
        return null;
      });
      if (conn === null) return;
      stream.accept();
      this.#emit("stream-open", { service, client, stream });
      if (destination.proxyProtocol) {
        const source = (client && parseHostPort(client)) || { hostname: "unknown", port: 0 };
        await conn.write(proxyHeader(destination.proxyProtocol, source, conn.remoteAddr));
      }
      this.#pipe(stream, conn, service, client, started);
      piping = true;
    } catch (error) {
      failure = errorMessage(error);
      this.#log.warn("stream handler failed", { stream: stream.id, service, client, error: failure });
      stream.reset(`handler failed: ${failure}`);
    } finally {
      if (!piping) this.#closed(stream, service, client, 0, 0, failure);
    }
  }

  /**
   * Pipes a stream and its destination, not awaited. Not inline in the async
   * `#serve`: a callback made there would keep its whole frame for as long as
   * the stream lives.
   */
  #pipe(stream: Stream, conn: Conn, service: string, client: string | undefined, started: number): void {
    pipeThen(stream, conn, (result) => this.#served(stream, service, client, started, result), {
      idleTimeout: this.#options.idleTimeout,
    });
  }

  /** A stream piped to its destination ended: logs and reports it. */
  #served(stream: Stream, service: string, client: string | undefined, started: number, result: PipeResult): void {
    const failure = result.error ? errorMessage(result.error) : undefined;
    try {
      const fields = {
        stream: stream.id,
        service,
        client,
        up: formatBytes(result.aToB),
        down: formatBytes(result.bToA),
        time: formatDuration(Date.now() - started),
        error: failure,
      };
      if (failure) this.#log.warn("stream failed", fields);
      else this.#log.debug("stream done", fields);
    } finally {
      this.#closed(stream, service, client, result.aToB, result.bToA, failure);
    }
  }

  /** A served stream is over, however it ended: it leaves the open set and listeners hear of it. */
  #closed(stream: Stream, service: string, client: string | undefined, up: number, down: number, error?: string): void {
    this.#streams.delete(stream);
    this.#emit("stream-close", { service, client, up, down, error });
  }

  /** Event channel: the matcher asks for a fresh session for one client. */
  async #dialForEvent(request: Stream, target: Target): Promise<void> {
    const ticket = String(request.meta.dial);
    request.reset("dialing");
    try {
      this.#keepDataSession(await this.#dial(target, "data", { ticket }));
    } catch (error) {
      this.#log.warn("could not open a session for a client", { matcher: target.label, error: errorMessage(error) });
    }
  }

  /**
   * Tracks a data session until it ends. Not inline in the async caller: a
   * callback made there would keep the caller's whole frame, request stream
   * and all, for as long as the session carries its client.
   */
  #keepDataSession(session: Session): void {
    this.#dataSessions.add(session);
    session.whenClosed(() => this.#dataSessions.delete(session));
  }

  #connectDestination(destination: Destination): Promise<Conn> {
    const timeout = this.#options.connectTimeout ?? 10_000;
    return withTimeout(
      this.#options.transport.connect({ hostname: destination.host, port: destination.port }),
      timeout,
      `no connection within ${formatDuration(timeout)}`,
      (late) => late.close(),
    );
  }

  // ---- Helpers ----

  #describeServices(): string {
    return [...this.#destinations].map(([name, d]) => `${name}=${d.host}:${d.port}`).join(",");
  }

  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    this.#listened.add(type);
    super.addEventListener(type, listener, options);
  }

  #emit<K extends keyof RelayEventMap>(type: K, detail: RelayEventMap[K]): void {
    // Per-stream events cost an object each; only made for someone listening.
    if (this.#listened.has(type)) this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #wakeConnectedWaiters(): void {
    const size = this.#sessions.size;
    this.#connectedWaiters = this.#connectedWaiters.filter((waiter) => {
      if (size < waiter.count) return true;
      waiter.resolve();
      return false;
    });
  }
}
