/**
 * A service as the matcher sees it: one public client port and the pool of
 * relay sessions that serve it, with their health and the clients waiting for
 * one. The default service is O3SR's single client port.
 *
 * @module
 */

import { createPicker, type Picker } from "./balance.ts";
import type { Balance } from "./config.ts";
import type { Listener } from "./transport/types.ts";

/** The name of the service on the matcher's `--client-port`. */
export const DEFAULT_SERVICE = "default";

/** Consecutive destination failures after which a relay is skipped. */
const FAILURES_BEFORE_SKIP = 2;

/** How long a failing relay is skipped. */
const SKIP_FOR = 30_000;

/** What a service needs to know about a relay session. */
export interface PoolMember {
  /** Streams open on it now. */
  readonly openStreams: number;
  /** Whether it takes a new stream now. */
  readonly available: boolean;
  /**
   * Called when it is picked for a client. A member that carries one client
   * leaves the pool here, so no other client picks it meanwhile.
   */
  claim?(): void;
}

/** One public port and the relays behind it. */
export class Service<R extends PoolMember> {
  /** Service name. */
  readonly name: string;
  /** Whether its port was allocated from the port range (and may be released). */
  readonly allocated: boolean;
  /** The client port's listener, once open. */
  listener: Listener | null = null;
  readonly #pick: Picker<R>;
  readonly #members: R[] = [];
  readonly #health = new Map<R, { failures: number; skipUntil: number }>();
  #waiting: Array<(relay: R | null) => void> = [];

  /**
   * @param name service name
   * @param balance how a relay is picked for each client
   * @param allocated whether the port came from the port range
   */
  constructor(name: string, balance: Balance, allocated: boolean) {
    this.name = name;
    this.allocated = allocated;
    this.#pick = createPicker(balance);
  }

  /** Relays in the pool. */
  get members(): readonly R[] {
    return this.#members;
  }

  /** Clients waiting for a relay. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** Adds a relay and wakes the clients waiting for one. */
  add(relay: R): void {
    if (this.#members.includes(relay)) return;
    this.#members.push(relay);
    for (const wake of this.#waiting.splice(0)) wake(relay);
  }

  /** Removes a relay. */
  remove(relay: R): void {
    const at = this.#members.indexOf(relay);
    if (at >= 0) this.#members.splice(at, 1);
    this.#health.delete(relay);
  }

  /**
   * Picks a relay for a client, leaving out those already tried for it.
   * Relays whose destination kept failing are skipped while others remain.
   */
  pick(tried: ReadonlySet<R> = new Set(), now = Date.now()): R | null {
    const candidates = this.#members.filter((relay) => relay.available && !tried.has(relay));
    if (candidates.length === 0) return null;
    const healthy = candidates.filter((relay) => (this.#health.get(relay)?.skipUntil ?? 0) <= now);
    const picked = this.#pick(healthy.length > 0 ? healthy : candidates);
    picked.claim?.();
    return picked;
  }

  /** Waits up to `ms` for a relay to join; null on timeout or {@linkcode Service.release}. */
  waitForRelay(ms: number): Promise<R | null> {
    return new Promise((resolve) => {
      const wake = (relay: R | null) => {
        // Several clients may wake for one relay; each goes through the picker,
        // and one the others left nothing to (a pool session is claimed) waits on.
        const picked = relay === null ? null : this.pick();
        if (relay !== null && picked === null) return void this.#waiting.push(wake);
        clearTimeout(timer);
        resolve(picked);
      };
      const timer = setTimeout(() => {
        this.#waiting = this.#waiting.filter((w) => w !== wake);
        resolve(null);
      }, ms);
      this.#waiting.push(wake);
    });
  }

  /** Records that a relay could not reach its destination; after a few in a row it is skipped for a while. */
  noteFailure(relay: R, now = Date.now()): boolean {
    const health = this.#health.get(relay) ?? { failures: 0, skipUntil: 0 };
    health.failures++;
    const skipped = health.failures >= FAILURES_BEFORE_SKIP;
    if (skipped) health.skipUntil = now + SKIP_FOR;
    this.#health.set(relay, health);
    return skipped;
  }

  /** Records that a relay served a client; it is healthy again. */
  noteSuccess(relay: R): void {
    this.#health.delete(relay);
  }

  /** Wakes every waiting client with no relay and closes the port. */
  release(): void {
    for (const wake of this.#waiting.splice(0)) wake(null);
    this.listener?.close();
    this.listener = null;
  }
}
