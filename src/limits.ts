/**
 * Guards for the matcher's public ports: address allow-lists and a
 * per-address connection rate.
 *
 * @module
 */

import { type Cidr, cidrContains, parseCidr } from "./ip.ts";

/** Checks client addresses against a list of ranges; an empty list allows all. */
export class AllowList {
  readonly #ranges: Cidr[];

  /** @param ranges CIDR strings, already validated by the config */
  constructor(ranges: readonly string[]) {
    this.#ranges = ranges.map((range) => parseCidr(range)!);
  }

  /** Whether `address` may connect. */
  allows(address: string): boolean {
    return this.#ranges.length === 0 || this.#ranges.some((range) => cidrContains(range, address));
  }
}

/**
 * A token bucket per address: `rate` connections per second, bursts of twice
 * that. Idle addresses are forgotten, so memory stays bounded under a scan.
 */
export class RateLimiter {
  readonly #rate: number;
  readonly #burst: number;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  #lastSweep = 0;

  /** @param rate connections per second per address; 0 turns the limit off */
  constructor(rate: number) {
    this.#rate = rate;
    this.#burst = rate * 2;
  }

  /** Takes one token for `address`; false when it is over its rate. */
  take(address: string, now = Date.now()): boolean {
    if (this.#rate === 0) return true;
    if (now - this.#lastSweep > 60_000) this.#sweep(now);
    const bucket = this.#buckets.get(address);
    if (!bucket) {
      this.#buckets.set(address, { tokens: this.#burst - 1, at: now });
      return true;
    }
    bucket.tokens = Math.min(this.#burst, bucket.tokens + (now - bucket.at) * this.#rate / 1000);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  #sweep(now: number): void {
    this.#lastSweep = now;
    const full = this.#burst * 1000 / this.#rate;
    for (const [address, bucket] of this.#buckets) if (now - bucket.at > full) this.#buckets.delete(address);
  }
}
