/**
 * The library entry points: the matcher and the relay with the transport
 * filled in for the runtime they are imported into.
 *
 * @module
 */

import { type Matcher, type MatcherOptions, startMatcher as startMatcherWith } from "./matcher.ts";
import { type Relay, type RelayOptions, startRelay as startRelayWith } from "./relay.ts";
import { bunTransport as makeBunTransport } from "./transport/bun.ts";
import { denoTransport as makeDenoTransport } from "./transport/deno.ts";
import { nodeTransport as makeNodeTransport } from "./transport/node.ts";
import type { Transport } from "./transport/types.ts";

/** Options with the transport optional: it defaults to {@linkcode defaultTransport}. */
export type WithOptionalTransport<T> = Omit<T, "transport"> & { transport?: Transport };

/**
 * The TCP transport of the runtime this runs on: Bun's, Deno's, or else
 * `node:net`. Library users get it implicitly; the CLI entry points pick
 * theirs explicitly.
 */
export function defaultTransport(): Transport {
  if ("Bun" in globalThis) return bunTransport();
  if ("Deno" in globalThis) return denoTransport();
  return nodeTransport();
}

/** TCP and TLS over `Bun.listen`/`Bun.connect`; call it only on Bun. */
export function bunTransport(): Transport {
  return makeBunTransport();
}

/** TCP over `Deno.listen`/`Deno.connect` (TLS through `node:tls`); call it only on Deno. */
export function denoTransport(): Transport {
  return makeDenoTransport();
}

/** TCP and TLS over `node:net`/`node:tls`: Node, and any runtime that provides them. */
export function nodeTransport(): Transport {
  return makeNodeTransport();
}

/**
 * Starts a matcher. Option names are the config keys in camelCase; ports may
 * be 0 to pick free ones (read them back from `relayAddr` and `clientAddr`).
 *
 * @example
 * ```ts
 * import { startMatcher } from "./mod.ts";
 * const matcher = await startMatcher({ relayPort: 0, clientPort: 0, listenHost: "127.0.0.1" });
 * console.log(matcher.clientAddr.port);
 * await matcher.close();
 * ```
 */
export function startMatcher(options: WithOptionalTransport<MatcherOptions> = {}): Promise<Matcher> {
  return startMatcherWith({ ...options, transport: options.transport ?? defaultTransport() });
}

/**
 * Starts a relay that forwards each stream to `destHost:destPort`, to named
 * `services`, or to an in-process `handler`.
 *
 * @example
 * ```ts
 * import { startMatcher, startRelay } from "./mod.ts";
 * const matcher = await startMatcher({ relayPort: 0, clientPort: 0, listenHost: "127.0.0.1" });
 * const relay = startRelay({
 *   matcherHost: "127.0.0.1",
 *   matcherPort: matcher.relayAddr.port,
 *   handler: (stream) => stream.readable.pipeTo(stream.writable), // an echo service
 * });
 * await relay.connected();
 * await relay.close();
 * await matcher.close();
 * ```
 */
export function startRelay(options: WithOptionalTransport<RelayOptions> = {}): Relay {
  return startRelayWith({ ...options, transport: options.transport ?? defaultTransport() });
}
