/**
 * Settings: one table describes every option once (config key, flag, type,
 * default, help), and from it come the flag parser, the YAML validation, the
 * help text and the README reference. Flags override the file; the file
 * overrides defaults.
 *
 * @module
 */

import { parseCidr } from "./ip.ts";
import { UsageError } from "./errors.ts";
import { LOG_LEVELS, type LogFormat, type LogLevel } from "./log.ts";

/** Which role an option applies to. */
export type Role = "matcher" | "relay";

/** How the matcher picks a relay session for a client. */
export type Balance = "random" | "round-robin" | "least-streams";

/** How a relay carries client connections: `mux` sessions, a `pool` of idle connections, or one per `event`. */
export type Channel = "mux" | "pool" | "event";

/** The balance strategies. */
export const BALANCES: readonly Balance[] = ["random", "round-robin", "least-streams"];

type OptionType =
  | "port"
  | "listen-port"
  | "host"
  | "int"
  | "duration"
  | "size"
  | "enum"
  | "string"
  | "bool"
  | "cidrs"
  | "tokens"
  | "hosts"
  | "services"
  | "port-range";

/**
 * One named service. A relay reads the destination (and PROXY protocol); a
 * matcher reads the client port and balance, so one file can describe both.
 */
export interface ServiceEntry {
  /** Service name: letters, digits, `-`, `_`, `.`. */
  name: string;
  /** Relay: the destination host. */
  destHost?: string;
  /** Relay: the destination port. */
  destPort?: number;
  /** Matcher: the client port users connect to. */
  clientPort?: number;
  /** Matcher: how a relay of the service's pool is picked. */
  balance?: Balance;
  /** Relay: PROXY protocol header for the destination. */
  proxyProtocol?: ProxyVersion;
}

/** PROXY protocol versions a relay can prepend for its destination. */
export type ProxyVersion = "v1" | "v2";

/** A token the matcher accepts, with a name for logs (the token itself is never logged). */
export interface NamedToken {
  /** Shown in logs and stats. */
  name: string;
  /** The secret; never logged. */
  token: string;
}

/** A parsed setting value. */
export type Value =
  | string
  | number
  | boolean
  | null
  | readonly string[]
  | readonly NamedToken[]
  | readonly ServiceEntry[]
  | readonly [number, number];

/** One setting: its config key, flag, type, default and help. */
export interface OptionSpec {
  /** Key in the YAML file (snake_case). */
  key: string;
  /** Flag without the dashes (kebab-case). */
  flag: string;
  /** Value type, which decides parsing and validation. */
  type: OptionType;
  /** Default value: milliseconds for durations, bytes for sizes; null means off or unset. */
  default: Value;
  /** Roles the option applies to. */
  roles: readonly Role[];
  /** One line of help. */
  help: string;
  /** Allowed values of an `enum`. */
  values?: readonly string[];
  /** Bounds of an `int`, `size` or `duration`. */
  min?: number;
  max?: number;
  /** Environment variable read when neither flag nor file sets it. */
  env?: string;
  /** Never printed (tokens). */
  secret?: boolean;
  /** Placeholder for the value in help, such as `FILE`. */
  arg?: string;
}

const BOTH: readonly Role[] = ["matcher", "relay"];

/** Every setting, in help order. */
export const OPTIONS: readonly OptionSpec[] = [
  {
    key: "relay_port",
    flag: "relay-port",
    type: "listen-port",
    default: 6543,
    roles: ["matcher"],
    help: "port relays dial in to",
  },
  {
    key: "client_port",
    flag: "client-port",
    type: "listen-port",
    default: 6544,
    roles: ["matcher"],
    help: "port users connect to",
  },
  {
    key: "listen_host",
    flag: "listen-host",
    type: "host",
    default: "0.0.0.0",
    roles: ["matcher"],
    help: "address both matcher ports bind to",
  },
  {
    key: "balance",
    flag: "balance",
    type: "enum",
    values: BALANCES,
    default: "random",
    roles: ["matcher"],
    help: "how a client's relay is picked",
  },
  {
    key: "relay_wait",
    flag: "relay-wait",
    type: "duration",
    default: 10_000,
    roles: ["matcher"],
    help: "how long a client waits for a relay when none is connected",
  },
  {
    key: "port_range",
    flag: "port-range",
    type: "port-range",
    default: null,
    roles: ["matcher"],
    help: "client ports to allocate to named services relays register, such as 20000-20999",
  },
  {
    key: "tokens",
    flag: "token",
    type: "tokens",
    default: [],
    roles: ["matcher"],
    help: "a token relays must prove they hold (repeatable; in the file: strings or {name, token} maps)",
  },
  {
    key: "client_allow",
    flag: "client-allow",
    type: "cidrs",
    default: [],
    roles: ["matcher"],
    help: "address ranges allowed on the client port, such as 10.0.0.0/8 (repeatable; none: all)",
  },
  {
    key: "tls_cert",
    flag: "tls-cert",
    type: "string",
    arg: "FILE",
    default: null,
    roles: ["matcher"],
    help: "PEM certificate: the relay port speaks TLS",
  },
  {
    key: "tls_key",
    flag: "tls-key",
    type: "string",
    arg: "FILE",
    default: null,
    roles: ["matcher"],
    help: "PEM private key for --tls-cert",
  },
  {
    key: "client_tls_cert",
    flag: "client-tls-cert",
    type: "string",
    arg: "FILE",
    default: null,
    roles: ["matcher"],
    help: "PEM certificate: the client port speaks TLS",
  },
  {
    key: "client_tls_key",
    flag: "client-tls-key",
    type: "string",
    arg: "FILE",
    default: null,
    roles: ["matcher"],
    help: "PEM private key for --client-tls-cert",
  },
  {
    key: "admin_port",
    flag: "admin-port",
    type: "listen-port",
    default: null,
    roles: ["matcher"],
    help: "serve /health, /stats and /metrics over HTTP on this port",
  },
  {
    key: "admin_host",
    flag: "admin-host",
    type: "host",
    default: "127.0.0.1",
    roles: ["matcher"],
    help: "address the admin port binds to",
  },
  {
    key: "max_relay_sessions",
    flag: "max-relay-sessions",
    type: "int",
    min: 1,
    max: 1_000_000,
    default: 1024,
    roles: ["matcher"],
    help: "relay sessions connected at once; more are refused",
  },
  {
    key: "max_clients",
    flag: "max-clients",
    type: "int",
    min: 1,
    max: 10_000_000,
    default: 50_000,
    roles: ["matcher"],
    help: "client connections open at once; more are refused",
  },
  {
    key: "client_rate",
    flag: "client-rate",
    type: "int",
    min: 0,
    max: 1_000_000,
    default: 1000,
    roles: ["matcher"],
    help: "new client connections per second from one address (bursts of twice that); 0: no limit",
  },
  {
    key: "matcher_host",
    flag: "matcher-host",
    type: "hosts",
    default: "localhost",
    roles: ["relay"],
    help: "matcher to dial, as HOST or HOST:PORT; repeat it to hold sessions to several matchers",
  },
  {
    key: "matcher_port",
    flag: "matcher-port",
    type: "port",
    default: 6543,
    roles: ["relay"],
    help: "matcher's relay port",
  },
  {
    key: "dest_host",
    flag: "dest-host",
    type: "host",
    default: "localhost",
    roles: ["relay"],
    help: "destination each stream is forwarded to",
  },
  { key: "dest_port", flag: "dest-port", type: "port", default: 80, roles: ["relay"], help: "destination port" },
  {
    key: "connections",
    flag: "connections",
    type: "int",
    min: 1,
    max: 64,
    default: 2,
    roles: ["relay"],
    help: "sessions kept open to the matcher",
  },
  {
    key: "reconnect_max",
    flag: "reconnect-max",
    type: "duration",
    min: 100,
    default: 30_000,
    roles: ["relay"],
    help: "longest pause between reconnect attempts",
  },
  {
    key: "connect_timeout",
    flag: "connect-timeout",
    type: "duration",
    min: 1,
    default: 10_000,
    roles: ["relay"],
    help: "limit for dialing the matcher or a destination",
  },
  {
    key: "channel",
    flag: "channel",
    type: "enum",
    values: ["mux", "pool", "event"],
    default: "mux",
    roles: ["relay"],
    help:
      "mux: streams over long-lived sessions; pool: idle connections, one per client; event: a new connection per client",
  },
  {
    key: "pool_size",
    flag: "pool-size",
    type: "int",
    min: 1,
    max: 1000,
    default: 10,
    roles: ["relay"],
    help: "idle connections kept open per matcher with --channel pool",
  },
  {
    key: "proxy_protocol",
    flag: "proxy-protocol",
    type: "enum",
    values: ["v1", "v2"],
    default: null,
    roles: ["relay"],
    help: "send a PROXY protocol header to the destination with the client's address",
  },
  {
    key: "token",
    flag: "token",
    type: "string",
    env: "O3SR_TOKEN",
    secret: true,
    arg: "SECRET",
    default: null,
    roles: ["relay"],
    help: "token proving this relay may connect (also O3SR_TOKEN)",
  },
  {
    key: "matcher_url",
    flag: "matcher-url",
    type: "string",
    arg: "URL",
    default: null,
    roles: ["relay"],
    help: "dial the matcher as ws://host:port/path or wss://… instead of --matcher-host/--matcher-port",
  },
  {
    key: "tls",
    flag: "tls",
    type: "bool",
    default: false,
    roles: ["relay"],
    help: "speak TLS to the matcher, verified by the system's CAs",
  },
  {
    key: "tls_ca",
    flag: "tls-ca",
    type: "string",
    arg: "FILE",
    default: null,
    roles: ["relay"],
    help: "verify the matcher with this PEM CA instead (implies --tls)",
  },
  {
    key: "tls_fingerprint",
    flag: "tls-fingerprint",
    type: "string",
    arg: "sha256:HEX",
    default: null,
    roles: ["relay"],
    help: "accept only the matcher certificate with this SHA-256 fingerprint (implies --tls)",
  },
  {
    key: "tls_insecure",
    flag: "tls-insecure",
    type: "bool",
    default: false,
    roles: ["relay"],
    help: "skip verifying the matcher's certificate (unsafe; implies --tls)",
  },
  {
    key: "window",
    flag: "window",
    type: "size",
    min: 16 * 1024,
    max: 0x7fff_ffff,
    default: 4 * 1024 * 1024,
    roles: BOTH,
    help: "largest per-stream receive window (flow control)",
  },
  {
    key: "heartbeat_interval",
    flag: "heartbeat-interval",
    type: "duration",
    default: 10_000,
    roles: BOTH,
    help: "pause between pings on a session; 0 turns heartbeats off",
  },
  {
    key: "heartbeat_timeout",
    flag: "heartbeat-timeout",
    type: "duration",
    min: 1,
    default: 30_000,
    roles: BOTH,
    help: "silence after which the peer is declared dead",
  },
  {
    key: "handshake_timeout",
    flag: "handshake-timeout",
    type: "duration",
    min: 1,
    default: 10_000,
    roles: BOTH,
    help: "limit for a new session's handshake",
  },
  {
    key: "drain_timeout",
    flag: "drain-timeout",
    type: "duration",
    default: 10_000,
    roles: BOTH,
    help: "on SIGINT/SIGTERM, how long open streams may finish",
  },
  {
    key: "services",
    flag: "service",
    type: "services",
    arg: "NAME=HOST:PORT",
    default: [],
    roles: BOTH,
    help:
      "a named service: NAME=HOST:PORT on a relay (its destination), NAME=PORT on a matcher (its client port); repeatable",
  },
  {
    key: "max_streams",
    flag: "max-streams",
    type: "int",
    min: 1,
    max: 1_000_000,
    default: 10_000,
    roles: BOTH,
    help: "streams open at once on one session",
  },
  {
    key: "idle_timeout",
    flag: "idle-timeout",
    type: "duration",
    default: 0,
    roles: BOTH,
    help: "close a stream after this long without traffic; 0: never",
  },
  {
    key: "max_frame",
    flag: "max-frame",
    type: "size",
    min: 16 * 1024,
    max: 1_024_000,
    default: 1_024_000,
    roles: BOTH,
    help: "largest frame payload accepted from a peer",
  },
  {
    key: "log_level",
    flag: "log-level",
    type: "enum",
    values: LOG_LEVELS,
    default: "info",
    roles: BOTH,
    help: "least severe level logged",
  },
  {
    key: "log_format",
    flag: "log-format",
    type: "enum",
    values: ["text", "json"],
    default: "text",
    roles: BOTH,
    help: "log line format",
  },
];

/** The effective settings, keyed by the camelCase form of each config key. */
export interface Settings {
  mode: Role | null;
  relayPort: number;
  clientPort: number;
  listenHost: string;
  balance: Balance;
  relayWait: number;
  matcherHost: string | readonly string[];
  matcherPort: number;
  destHost: string;
  destPort: number;
  connections: number;
  reconnectMax: number;
  connectTimeout: number;
  window: number;
  heartbeatInterval: number;
  heartbeatTimeout: number;
  handshakeTimeout: number;
  drainTimeout: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
  tokens: readonly NamedToken[];
  clientAllow: readonly string[];
  tlsCert: string | null;
  tlsKey: string | null;
  clientTlsCert: string | null;
  clientTlsKey: string | null;
  adminPort: number | null;
  adminHost: string;
  maxRelaySessions: number;
  maxClients: number;
  clientRate: number;
  token: string | null;
  matcherUrl: string | null;
  tls: boolean;
  tlsCa: string | null;
  tlsFingerprint: string | null;
  tlsInsecure: boolean;
  maxStreams: number;
  idleTimeout: number;
  maxFrame: number;
  services: readonly ServiceEntry[];
  portRange: readonly [number, number] | null;
  channel: Channel;
  poolSize: number;
  proxyProtocol: ProxyVersion | null;
}

/** `relay_port` → `relayPort`. */
export function camelCase(key: string): string {
  return key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** The defaults of every option. */
export function defaultSettings(): Settings {
  const settings: Record<string, unknown> = { mode: null };
  for (const option of OPTIONS) settings[camelCase(option.key)] = option.default;
  return settings as unknown as Settings;
}

/** Where a value came from, for error messages. */
type Source = { kind: "flag" } | { kind: "file"; path: string } | { kind: "env"; name: string };

function describeSetting(option: OptionSpec, source: Source): string {
  switch (source.kind) {
    case "flag":
      return `--${option.flag}`;
    case "env":
      return source.name;
    case "file":
      return `config ${source.path}: ${option.key}`;
  }
}

/** Whether an option holds a list (its flag may be repeated). */
export function isList(option: OptionSpec): boolean {
  return option.type === "cidrs" || option.type === "tokens" || option.type === "hosts" || option.type === "services";
}

/**
 * Checks settings that depend on each other.
 *
 * @throws {UsageError} naming the flags involved
 */
export function checkSettings(settings: Settings): void {
  const pairs: Array<[keyof Settings, keyof Settings, string, string]> = [
    ["tlsCert", "tlsKey", "--tls-cert", "--tls-key"],
    ["clientTlsCert", "clientTlsKey", "--client-tls-cert", "--client-tls-key"],
  ];
  for (const [cert, key, certFlag, keyFlag] of pairs) {
    if ((settings[cert] === null) !== (settings[key] === null)) {
      throw new UsageError(`${certFlag} and ${keyFlag} go together; give both or neither`);
    }
  }
  if (settings.tlsFingerprint !== null && !/^sha256:([0-9a-f]{2}:?){31}[0-9a-f]{2}$/i.test(settings.tlsFingerprint)) {
    throw new UsageError(
      `--tls-fingerprint must be sha256: and 64 hex digits (colons allowed), such as the output of \`openssl x509 -fingerprint -sha256\`; got ${
        JSON.stringify(settings.tlsFingerprint)
      }`,
    );
  }
  if (settings.matcherUrl !== null) {
    let url: URL | null = null;
    try {
      url = new URL(settings.matcherUrl);
    } catch {
      // Reported below.
    }
    if (url === null || (url.protocol !== "ws:" && url.protocol !== "wss:") || url.hostname === "") {
      throw new UsageError(
        `--matcher-url must look like ws://host:port/path or wss://host/path, got ${
          JSON.stringify(settings.matcherUrl)
        }`,
      );
    }
  }
}

/**
 * Parses and checks one value.
 *
 * @throws {UsageError} naming the flag or key and what was expected
 */
export function parseValue(option: OptionSpec, raw: unknown, source: Source): Value {
  const what = describeSetting(option, source);
  const shown = typeof raw === "string" ? JSON.stringify(raw) : String(raw);
  // In a file, null unsets an option that is off by default.
  if (raw === null && option.default === null) return null;
  switch (option.type) {
    case "port":
    case "listen-port": {
      const low = option.type === "port" ? 1 : 0;
      const port = toInteger(raw, source);
      if (port === null || port < low || port > 65535) {
        throw new UsageError(`${what} must be a port number ${low}-65535, got ${shown}`);
      }
      return port;
    }
    case "int": {
      const value = toInteger(raw, source);
      if (value === null || value < (option.min ?? 0) || value > (option.max ?? Number.MAX_SAFE_INTEGER)) {
        throw new UsageError(`${what} must be a whole number ${option.min ?? 0}-${option.max}, got ${shown}`);
      }
      return value;
    }
    case "host": {
      if (typeof raw !== "string" || raw.trim() === "" || /\s/.test(raw)) {
        throw new UsageError(`${what} must be a host name or IP address, got ${shown}`);
      }
      return raw;
    }
    case "enum": {
      if (typeof raw !== "string" || !option.values!.includes(raw)) {
        throw new UsageError(`${what} must be one of ${option.values!.join(", ")}; got ${shown}`);
      }
      return raw;
    }
    case "duration": {
      const ms = parseDuration(raw);
      if (ms === null || ms < (option.min ?? 0)) {
        throw new UsageError(
          `${what} must be a duration such as 500ms, 10s or 2m (a bare number means seconds), got ${shown}`,
        );
      }
      return ms;
    }
    case "string": {
      if (typeof raw !== "string" || raw.trim() === "") {
        throw new UsageError(`${what} must be a non-empty string${option.secret ? "" : `, got ${shown}`}`);
      }
      return raw;
    }
    case "bool": {
      if (typeof raw !== "boolean") throw new UsageError(`${what} must be true or false, got ${shown}`);
      return raw;
    }
    case "cidrs": {
      const items = listOf(raw, what);
      for (const item of items) {
        if (parseCidr(item) === null) {
          throw new UsageError(
            `${what}: ${JSON.stringify(item)} is not an address range such as 10.0.0.0/8 or 2001:db8::/32`,
          );
        }
      }
      return items;
    }
    case "tokens":
      return parseTokens(raw, what);
    case "hosts": {
      const hosts = listOf(raw, what);
      for (const host of hosts) {
        if (/\s/.test(host) || !/^(\[[0-9a-fA-F:.]+\]|[^:\[\]]+|[0-9a-fA-F:]+)(:\d{1,5})?$/.test(host)) {
          throw new UsageError(`${what}: ${JSON.stringify(host)} is not HOST or HOST:PORT`);
        }
      }
      return typeof raw === "string" && source.kind !== "flag" ? raw : hosts;
    }
    case "services":
      return parseServices(raw, what);
    case "port-range": {
      const match = typeof raw === "string" ? /^(\d{1,5})-(\d{1,5})$/.exec(raw.trim()) : null;
      const [low, high] = match ? [Number(match[1]), Number(match[2])] : [0, 0];
      if (!match || low < 1 || high > 65535 || low > high) {
        throw new UsageError(`${what} must be LOW-HIGH within 1-65535, such as 20000-20999; got ${shown}`);
      }
      return [low, high] as const;
    }
    case "size": {
      const bytes = parseSize(raw);
      if (bytes === null || bytes < (option.min ?? 0) || bytes > (option.max ?? Number.MAX_SAFE_INTEGER)) {
        throw new UsageError(
          `${what} must be a size from ${
            option.min ?? 0
          } bytes to ${option.max} bytes, such as 256KiB or 1MiB; got ${shown}`,
        );
      }
      return bytes;
    }
  }
}

const SERVICE_NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/i;

/**
 * Reads services: a list of `NAME=HOST:PORT` (relay destination) or
 * `NAME=PORT` (matcher client port) strings and `{name, …}` maps, or a map
 * of name to `{dest_host, dest_port, client_port, balance, proxy_protocol}`.
 */
function parseServices(raw: unknown, what: string): ServiceEntry[] {
  const entries: Array<[string | undefined, unknown]> = Array.isArray(raw)
    ? raw.map((item) => [undefined, item])
    : typeof raw === "object" && raw !== null
    ? Object.entries(raw)
    : [[undefined, raw]];
  const services = entries.map(([key, item], i): ServiceEntry => {
    const where = key === undefined ? `${what}[${i}]` : `${what}.${key}`;
    if (typeof item === "string") {
      const match = /^([^=\s]+)=(?:(.+):(\d{1,5})|(\d{1,5}))$/.exec(item.trim());
      if (!match || key !== undefined) {
        throw new UsageError(
          `${where} must be NAME=HOST:PORT (a relay's destination) or NAME=PORT (a matcher's client port), got ${
            JSON.stringify(item)
          }`,
        );
      }
      const [, name, host, destPort, clientPort] = match;
      return checkService(
        host === undefined
          ? { name, clientPort: Number(clientPort) }
          : { name, destHost: host, destPort: Number(destPort) },
        where,
      );
    }
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      throw new UsageError(`${where} must be a string or a map`);
    }
    const fields = { ...item } as Record<string, unknown>;
    const name = key ?? fields.name;
    delete fields.name;
    const entry: Record<string, unknown> = { name };
    for (const [field, value] of Object.entries(fields)) {
      const known: Record<string, string> = {
        dest_host: "destHost",
        dest_port: "destPort",
        client_port: "clientPort",
        balance: "balance",
        proxy_protocol: "proxyProtocol",
      };
      if (!(field in known)) {
        throw new UsageError(`${where}: unknown key "${field}"; a service has ${Object.keys(known).join(", ")}`);
      }
      entry[known[field]] = value;
    }
    return checkService(entry as unknown as ServiceEntry, where);
  });
  const names = services.map((s) => s.name);
  const twice = names.find((name, i) => names.indexOf(name) !== i);
  if (twice) throw new UsageError(`${what}: service "${twice}" is listed twice`);
  return services;
}

function checkService(entry: ServiceEntry, where: string): ServiceEntry {
  if (typeof entry.name !== "string" || !SERVICE_NAME.test(entry.name)) {
    throw new UsageError(
      `${where}: a service name is letters, digits, "-", "_" or ".", got ${JSON.stringify(entry.name)}`,
    );
  }
  const port = (value: unknown, low: number) =>
    Number.isInteger(value) && (value as number) >= low && (value as number) <= 65535;
  if (entry.destPort !== undefined && !port(entry.destPort, 1)) {
    throw new UsageError(`${where}: dest_port must be 1-65535`);
  }
  if (entry.clientPort !== undefined && !port(entry.clientPort, 0)) {
    throw new UsageError(`${where}: client_port must be 0-65535`);
  }
  if (entry.destHost !== undefined && (typeof entry.destHost !== "string" || entry.destHost === "")) {
    throw new UsageError(`${where}: dest_host must be a host name or address`);
  }
  if (entry.balance !== undefined && !BALANCES.includes(entry.balance)) {
    throw new UsageError(`${where}: balance must be one of ${BALANCES.join(", ")}`);
  }
  if (entry.proxyProtocol !== undefined && entry.proxyProtocol !== "v1" && entry.proxyProtocol !== "v2") {
    throw new UsageError(`${where}: proxy_protocol must be v1 or v2`);
  }
  return entry;
}

function listOf(raw: unknown, what: string): string[] {
  const items = Array.isArray(raw) ? raw : [raw];
  if (!items.every((item) => typeof item === "string" && item.trim() !== "")) {
    throw new UsageError(`${what} must be a list of strings`);
  }
  return items as string[];
}

/** Reads tokens: strings (named `token-1`, …) or `{name, token}` maps; names and tokens unique. */
function parseTokens(raw: unknown, what: string): NamedToken[] {
  const items = Array.isArray(raw) ? raw : [raw];
  const tokens = items.map((item, i): NamedToken => {
    if (typeof item === "string" && item !== "") return { name: `token-${i + 1}`, token: item };
    if (typeof item === "object" && item !== null && !Array.isArray(item)) {
      const { name, token, ...rest } = item as Record<string, unknown>;
      const extra = Object.keys(rest)[0];
      if (extra) throw new UsageError(`${what}[${i}]: unknown key "${extra}"; a token entry has name and token`);
      if (typeof name === "string" && name !== "" && typeof token === "string" && token !== "") return { name, token };
    }
    throw new UsageError(`${what}[${i}] must be a token string or a {name, token} map with two non-empty strings`);
  });
  const names = new Set(tokens.map((t) => t.name));
  if (names.size < tokens.length) throw new UsageError(`${what}: token names must be unique`);
  if (new Set(tokens.map((t) => t.token)).size < tokens.length) {
    throw new UsageError(`${what}: a token is listed twice`);
  }
  return tokens;
}

function toInteger(raw: unknown, source: Source): number | null {
  // YAML gives numbers; flags give strings of digits.
  if (typeof raw === "number") return Number.isInteger(raw) ? raw : null;
  if (source.kind === "flag" && typeof raw === "string" && /^\d+$/.test(raw)) return Number(raw);
  return null;
}

/** Parses `500ms`, `10s`, `2m`, `1h` or a bare number of seconds into milliseconds. */
export function parseDuration(raw: unknown): number | null {
  if (typeof raw === "number") return Number.isFinite(raw) && raw >= 0 ? Math.round(raw * 1000) : null;
  if (typeof raw !== "string") return null;
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(raw.trim());
  if (!match) return null;
  const scale = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? "s"]!;
  return Math.round(Number(match[1]) * scale);
}

/** Parses `65536`, `64KiB`, `64k`, `1MiB` or `1m` into bytes. */
export function parseSize(raw: unknown): number | null {
  if (typeof raw === "number") return Number.isInteger(raw) && raw >= 0 ? raw : null;
  if (typeof raw !== "string") return null;
  const match = /^(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i.exec(raw.trim());
  if (!match) return null;
  const unit = (match[2] ?? "b").toLowerCase()[0];
  const scale = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[unit]!;
  return Number(match[1]) * scale;
}

/** The keys a config file may hold: `mode` plus every option. */
export const CONFIG_KEYS: readonly string[] = ["mode", ...OPTIONS.map((o) => o.key)];

/**
 * Checks a parsed YAML document and returns its settings in camelCase.
 *
 * @param document what the YAML parser returned
 * @param path the file, for messages
 * @throws {UsageError} on anything but a mapping of known keys with valid values
 */
export function settingsFromDocument(document: unknown, path: string): Partial<Settings> {
  if (document === null || document === undefined) return {};
  if (typeof document !== "object" || Array.isArray(document)) {
    throw new UsageError(`config ${path}: must be a mapping of keys to values, such as "relay_port: 6543"`);
  }
  const out: Record<string, unknown> = {};
  for (const [key, raw] of Object.entries(document)) {
    if (key === "mode") {
      out.mode = parseMode(raw, `config ${path}: mode`);
      continue;
    }
    const option = OPTIONS.find((o) => o.key === key);
    if (!option) {
      const hint = closest(key, CONFIG_KEYS);
      throw new UsageError(`config ${path}: unknown key "${key}"${hint ? ` (did you mean "${hint}"?)` : ""}`);
    }
    out[camelCase(key)] = parseValue(option, raw, { kind: "file", path });
  }
  return out as Partial<Settings>;
}

/** Reads `mode`: `matcher`, `relay`, or O3SR's `client` (a relay). */
export function parseMode(raw: unknown, what: string): Role {
  if (raw === "matcher") return "matcher";
  if (raw === "relay" || raw === "client") return "relay";
  throw new UsageError(`${what} must be "matcher" or "relay" ("client" also means relay), got ${JSON.stringify(raw)}`);
}

/** What the config loader needs from the system. */
export interface ConfigSystem {
  env(name: string): string | undefined;
  homeDir(): string | undefined;
  /** The file's text, or null if it does not exist. Other failures throw. */
  readTextFile(path: string): Promise<string | null>;
}

/**
 * Finds the config file: `--config`, else `O3SR_CONFIG`, else
 * `$XDG_CONFIG_HOME/o3sr/config.yml` (default `~/.config/o3sr/config.yml`),
 * else `~/.o3sr.yml`.
 *
 * @returns the path and whether it was named explicitly, or null when none is given or found
 */
export async function locateConfig(
  system: ConfigSystem,
  explicit: string | undefined,
): Promise<{ path: string; text: string } | null> {
  const named = explicit ?? system.env("O3SR_CONFIG");
  if (named !== undefined && named !== "") {
    const text = await readConfigFile(system, named);
    if (text === null) {
      const via = explicit !== undefined ? "--config" : "O3SR_CONFIG";
      throw new UsageError(`cannot read config ${named} (named by ${via}): no such file`);
    }
    return { path: named, text };
  }
  const home = system.homeDir();
  const xdg = system.env("XDG_CONFIG_HOME") || (home ? `${home}/.config` : undefined);
  const candidates = [xdg && `${xdg}/o3sr/config.yml`, home && `${home}/.o3sr.yml`];
  for (const path of candidates) {
    if (!path) continue;
    const text = await readConfigFile(system, path);
    if (text !== null) return { path, text };
  }
  return null;
}

async function readConfigFile(system: ConfigSystem, path: string): Promise<string | null> {
  try {
    return await system.readTextFile(path);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new UsageError(`cannot read config ${path}: ${reason}`);
  }
}

/**
 * Parses config file text.
 *
 * @throws {UsageError} on YAML syntax errors and invalid settings
 */
export async function parseConfigText(text: string, path: string): Promise<Partial<Settings>> {
  // Loaded only when there is a file: the parser adds several MiB to every process that loads it.
  const { parse } = await import("yaml");
  let document: unknown;
  try {
    document = parse(text);
  } catch (error) {
    const reason = (error instanceof Error ? error.message : String(error)).split("\n")[0].replace(/:$/, "");
    throw new UsageError(`config ${path}: not valid YAML: ${reason}`);
  }
  return settingsFromDocument(document, path);
}

/** The closest candidate to `word` within two edits, for "did you mean". */
export function closest(word: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = 3;
  for (const candidate of candidates) {
    const distance = editDistance(word, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length];
}
