/**
 * The relay runs behind NAT. It dials out to the matcher, never accepts
 * inbound connections, keeps `connections` sessions open (replacing any that
 * drop, with capped exponential backoff and jitter), and forwards each stream
 * it is given to the destination, or to an in-process handler.
 *
 * @module
 */

import { sleep, waitUntil, withTimeout } from "./async.ts";
import { errorMessage } from "./errors.ts";
import { formatBytes, formatDuration, type Logger, silentLogger } from "./log.ts";
import { pipe } from "./pipe.ts";
import { answerChallenge, AUTH_CONTEXT } from "./auth.ts";
import { ProtocolError } from "./protocol/errors.ts";
import { type Hello, Session, type SessionTunables, tunablesOf } from "./protocol/session.ts";
import type { Stream } from "./protocol/stream.ts";
import { type Conn, formatAddr, type Transport } from "./transport/types.ts";
import { VERSION } from "./version.ts";

/** Options of {@linkcode startRelay}; names are the config keys in camelCase. */
export interface RelayOptions extends SessionTunables {
  /** How to dial: the runtime's TCP transport, or another. */
  transport: Transport;
  /** @default {"localhost"} */
  matcherHost?: string;
  /** The matcher's relay port. @default {6543} */
  matcherPort?: number;
  /** Where streams are forwarded. @default {"localhost"} */
  destHost?: string;
  /** @default {80} */
  destPort?: number;
  /**
   * Serves each stream in-process instead of forwarding it to the destination.
   * The stream is a {@linkcode Conn}; it is reset if the handler throws.
   */
  handler?: (stream: Stream) => void | Promise<void>;
  /** Sessions kept open to the matcher. @default {2} */
  connections?: number;
  /** Longest pause between reconnect attempts, in milliseconds. @default {30000} */
  reconnectMax?: number;
  /** Limit for dialing the matcher or the destination, in milliseconds. @default {10000} */
  connectTimeout?: number;
  /** Token proving this relay may connect, when the matcher asks for one. @default {null} */
  token?: string | null;
  /** Milliseconds a stream may go without traffic; 0: forever. @default {0} */
  idleTimeout?: number;
  /** Where events are logged. @default {silentLogger} */
  log?: Logger;
}

/** A snapshot of the relay's state. */
export interface RelayStats {
  /** Sessions open to the matcher now. */
  sessions: number;
  /** Streams open now, over all sessions. */
  openStreams: number;
  /** Streams served since start. */
  totalStreams: number;
  /** Streams whose destination could not be reached. */
  failedStreams: number;
}

/** A running relay. */
export interface Relay {
  /** A snapshot of sessions and streams. */
  stats(): RelayStats;
  /** Resolves once at least `count` sessions are open (default: all of them). */
  connected(count?: number): Promise<void>;
  /**
   * Stops reconnecting, tells the matcher to send no more streams, lets open
   * streams finish for up to `drainTimeout` milliseconds, then closes.
   */
  close(drainTimeout?: number): Promise<void>;
}

/** The matcher refused this relay (a bad token, a limit): retrying soon will not help. */
class RefusedError extends Error {}

/** First reconnect pause; doubles per failed attempt up to `reconnectMax`. */
const RECONNECT_MIN = 500;

/** A session that lasted this long counts as a success and resets the backoff. */
const STABLE_SESSION = 10_000;

/**
 * Starts a relay: opens its sessions to the matcher in the background and
 * keeps them open until closed. Never throws for an unreachable matcher; it
 * logs and retries.
 */
export function startRelay(options: RelayOptions): Relay {
  return new RelayClient(options);
}

/** Pause before reconnect attempt `attempt` (1-based): exponential, capped, half of it random. */
export function backoffDelay(attempt: number, max: number, random: () => number = Math.random): number {
  const ceiling = Math.min(max, RECONNECT_MIN * 2 ** Math.min(attempt - 1, 30));
  return Math.round(ceiling / 2 + random() * ceiling / 2);
}

class RelayClient implements Relay {
  readonly #options: RelayOptions;
  readonly #log: Logger;
  readonly #sessions = new Set<Session>();
  readonly #streams = new Set<Stream>();
  readonly #matcher: string;
  #connectedWaiters: Array<{ count: number; resolve(): void }> = [];
  #totalStreams = 0;
  #failedStreams = 0;
  #stopping = false;
  #warnedNoAuth = false;
  #resolveStop!: () => void;
  readonly #stopped = new Promise<void>((resolve) => this.#resolveStop = resolve);
  readonly #slots: Promise<void>[] = [];

  constructor(options: RelayOptions) {
    this.#options = options;
    this.#log = options.log ?? silentLogger;
    this.#matcher = `${options.matcherHost ?? "localhost"}:${options.matcherPort ?? 6543}`;
    const destination = options.handler
      ? "in-process handler"
      : `${options.destHost ?? "localhost"}:${options.destPort ?? 80}`;
    this.#log.info("relay starting", { matcher: this.#matcher, destination, connections: this.#slotCount });
    for (let slot = 0; slot < this.#slotCount; slot++) this.#slots.push(this.#keepSessionOpen(slot));
  }

  get #slotCount(): number {
    return this.#options.connections ?? 2;
  }

  stats(): RelayStats {
    return {
      sessions: this.#sessions.size,
      openStreams: this.#streams.size,
      totalStreams: this.#totalStreams,
      failedStreams: this.#failedStreams,
    };
  }

  connected(count = this.#slotCount): Promise<void> {
    if (this.#sessions.size >= count) return Promise.resolve();
    return new Promise((resolve) => this.#connectedWaiters.push({ count, resolve }));
  }

  async close(drainTimeout = 0): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#resolveStop();
    const sessions = [...this.#sessions];
    for (const session of sessions) session.goAway("relay shutting down");
    if (this.#streams.size > 0) {
      this.#log.info("draining", { streams: this.#streams.size, timeout: formatDuration(drainTimeout) });
    }
    await waitUntil(Promise.all(sessions.map((s) => s.closed)), drainTimeout);
    for (const session of this.#sessions) session.close("relay shut down");
    await Promise.all(this.#slots);
    this.#log.info("relay stopped");
  }

  /** One slot: dial, serve until the session ends, pause, dial again. */
  async #keepSessionOpen(slot: number): Promise<void> {
    let failures = 0;
    while (!this.#stopping) {
      const session = await this.#dial().catch((error) => {
        failures++;
        const pause = backoffDelay(failures, this.#options.reconnectMax ?? 30_000);
        if (error instanceof RefusedError) {
          this.#log.error(`matcher refused: ${error.message}`, {
            matcher: this.#matcher,
            retry_in: formatDuration(pause),
          });
        } else {
          this.#log.warn("matcher unreachable, retrying", {
            matcher: this.#matcher,
            error: errorMessage(error),
            retry_in: formatDuration(pause),
          });
        }
        return sleep(pause, this.#stopped).then(() => null);
      });
      if (session === null) continue;
      if (this.#stopping) {
        session.close("relay shutting down");
        break;
      }

      this.#sessions.add(session);
      this.#log.info("connected to matcher", { matcher: this.#matcher, slot, sessions: this.#sessions.size });
      this.#wakeConnectedWaiters();
      const reason = await session.closed;
      this.#sessions.delete(session);
      if (this.#stopping) break;

      // A session that ends at once (matcher refusing us) must not cause a
      // reconnect storm; only a session that lasted resets the backoff.
      const lasted = Date.now() - session.stats().since;
      failures = lasted >= STABLE_SESSION ? 0 : failures + 1;
      const pause = failures === 0 ? 0 : backoffDelay(failures, this.#options.reconnectMax ?? 30_000);
      const log = session.closeError ? this.#log.warn : this.#log.info;
      log("session to matcher ended", {
        matcher: this.#matcher,
        slot,
        reason,
        sessions: this.#sessions.size,
        retry_in: formatDuration(pause),
      });
      if (pause > 0) await sleep(pause, this.#stopped);
    }
  }

  async #dial(): Promise<Session> {
    const options = this.#options;
    const timeout = options.connectTimeout ?? 10_000;
    const conn = await withTimeout(
      options.transport.connect({ hostname: options.matcherHost ?? "localhost", port: options.matcherPort ?? 6543 }),
      timeout,
      `no connection within ${formatDuration(timeout)}`,
      (late) => late.close(),
    );
    const session = new Session(conn, {
      side: "dialer",
      hello: { role: "relay", software: `o3sr/${VERSION}` },
      checkHello: (hello) => {
        if (hello.role !== "matcher") {
          throw new Error(`peer introduced itself as ${JSON.stringify(hello.role)}, not a matcher`);
        }
      },
      answer: (hello) => this.#answer(hello),
      onStream: (stream) => this.#serve(stream),
      ...tunablesOf(options),
    });
    try {
      await session.ready;
    } catch {
      const refusal = /refused: (.*)$/.exec(session.closeReason)?.[1];
      if (refusal) throw new RefusedError(refusal);
      const error = session.closeError;
      if (error instanceof ProtocolError && error.code === "auth") throw new RefusedError(error.message);
      throw new Error(`handshake failed: ${session.closeReason}`);
    }
    return session;
  }

  /** Answers the matcher's token challenge; null when it sent none. */
  #answer(hello: Hello): Promise<Record<string, unknown>> | null {
    const nonce = (hello.auth as { nonce?: unknown } | undefined)?.nonce;
    const token = this.#options.token ?? null;
    if (typeof nonce !== "string") {
      if (token !== null && !this.#warnedNoAuth) {
        this.#warnedNoAuth = true;
        this.#log.warn("matcher does not ask for a token; is it the one you meant?", { matcher: this.#matcher });
      }
      return null;
    }
    if (token === null) throw new Error("the matcher requires a token; set --token or O3SR_TOKEN");
    return answerChallenge(token, nonce, AUTH_CONTEXT).then((proof) => ({ proof }));
  }

  async #serve(stream: Stream): Promise<void> {
    this.#streams.add(stream);
    this.#totalStreams++;
    const client = typeof stream.meta.client === "string" ? stream.meta.client : undefined;
    const started = Date.now();
    try {
      if (this.#options.handler) {
        await this.#options.handler(stream);
        return;
      }
      const destination = await this.#dialDestination().catch((error) => {
        this.#failedStreams++;
        const reason = `destination ${this.#destination} unreachable: ${errorMessage(error)}`;
        this.#log.warn("stream refused", { stream: stream.id, client, reason });
        stream.reset(reason);
        return null;
      });
      if (destination === null) return;
      const result = await pipe(stream, destination, { idleTimeout: this.#options.idleTimeout });
      const fields = {
        stream: stream.id,
        client,
        destination: formatAddr(destination.remoteAddr),
        up: formatBytes(result.aToB),
        down: formatBytes(result.bToA),
        time: formatDuration(Date.now() - started),
        error: result.error ? errorMessage(result.error) : undefined,
      };
      if (result.error) this.#log.warn("stream failed", fields);
      else this.#log.debug("stream done", fields);
    } catch (error) {
      this.#log.warn("stream handler failed", { stream: stream.id, client, error: errorMessage(error) });
      stream.reset(`handler failed: ${errorMessage(error)}`);
    } finally {
      this.#streams.delete(stream);
    }
  }

  get #destination(): string {
    return `${this.#options.destHost ?? "localhost"}:${this.#options.destPort ?? 80}`;
  }

  #dialDestination(): Promise<Conn> {
    const options = this.#options;
    const timeout = options.connectTimeout ?? 10_000;
    return withTimeout(
      options.transport.connect({ hostname: options.destHost ?? "localhost", port: options.destPort ?? 80 }),
      timeout,
      `no connection within ${formatDuration(timeout)}`,
      (late) => late.close(),
    );
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
