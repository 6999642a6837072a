/**
 * o3sr: reach services behind NAT. A matcher on a public host, relays that
 * dial out to it, many client connections multiplexed over a few
 * flow-controlled sessions. Runs on Bun and Deno.
 *
 * ```ts
 * import { startMatcher, startRelay } from "./mod.ts";
 *
 * const matcher = await startMatcher({ relayPort: 0, clientPort: 0, listenHost: "127.0.0.1" });
 * const relay = startRelay({
 *   matcherHost: "127.0.0.1",
 *   matcherPort: matcher.relayAddr.port,
 *   handler: (stream) => stream.readable.pipeTo(stream.writable), // echo, in-process
 * });
 * relay.addEventListener("stream-open", (e) => console.log((e as CustomEvent).detail.client));
 * await relay.connected();
 * // clients now reach the handler at 127.0.0.1:<matcher.clientAddr.port>
 * await relay.close();
 * await matcher.close();
 * ```
 *
 * @module
 */

export {
  bunTransport,
  defaultTransport,
  denoTransport,
  nodeTransport,
  startMatcher,
  startRelay,
  type WithOptionalTransport,
} from "./src/library.ts";
export type { Matcher, MatcherOptions, MatcherStats, MemoryBudgets, RelayInfo, ServiceInfo } from "./src/matcher.ts";
export { backoffDelay, type Relay, type RelayEventMap, type RelayOptions, type RelayStats } from "./src/relay.ts";
export { Loan, Stream } from "./src/protocol/stream.ts";
export type { SessionTunables } from "./src/protocol/session.ts";
export type { Balance, Channel, NamedToken, ProxyVersion, ServiceEntry } from "./src/config.ts";
export {
  createLogger,
  type LogFields,
  type LogFormat,
  type Logger,
  type LoggerOptions,
  type LogLevel,
  silentLogger,
} from "./src/log.ts";
export { memoryTransport } from "./src/transport/memory.ts";
export { wsTransport, type WsTransportOptions } from "./src/transport/websocket.ts";
export {
  type Addr,
  type Conn,
  ConnectionClosedError,
  type ConnectOptions,
  type Lender,
  type Listener,
  type ListenOptions,
  type TlsConnectOptions,
  type TlsListenOptions,
  type Transport,
} from "./src/transport/types.ts";
export { VERSION } from "./src/version.ts";
