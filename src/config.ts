/**
 * Settings: one table describes every option once (config key, flag, type,
 * default, help), and from it come the flag parser, the YAML validation, the
 * help text and the README reference. Flags override the file; the file
 * overrides defaults.
 *
 * @module
 */

import { parse as parseYaml } from "yaml";
import { UsageError } from "./errors.ts";
import { LOG_LEVELS, type LogFormat, type LogLevel } from "./log.ts";

/** Which role an option applies to. */
export type Role = "matcher" | "relay";

/** How the matcher picks a relay session for a client. */
export type Balance = "random" | "round-robin" | "least-streams";

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
  | "tokens";

/** A token the matcher accepts, with a name for logs (the token itself is never logged). */
export interface NamedToken {
  name: string;
  token: string;
}

/** A parsed setting value. */
export type Value = string | number | boolean | null | readonly string[] | readonly NamedToken[];

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
    default: 200,
    roles: ["matcher"],
    help: "new client connections per second from one address (bursts of twice that); 0: no limit",
  },
  {
    key: "matcher_host",
    flag: "matcher-host",
    type: "host",
    default: "localhost",
    roles: ["relay"],
    help: "matcher to dial",
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
    default: 1024 * 1024,
    roles: BOTH,
    help: "per-stream receive window (flow control)",
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
  matcherHost: string;
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
  return option.type === "cidrs" || option.type === "tokens";
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

/** An address range: the address as 16 bytes (IPv4 mapped into IPv6) and the prefix length over those. */
export interface Cidr {
  bytes: Uint8Array;
  prefix: number;
}

/** Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address; null if malformed. */
export function parseCidr(text: string): Cidr | null {
  const [address, prefixText, extra] = text.trim().split("/");
  if (extra !== undefined) return null;
  const bytes = parseIp(address);
  if (bytes === null) return null;
  const v4 = !address.includes(":");
  const max = v4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : /^\d+$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= max)) return null;
  return { bytes, prefix: v4 ? prefix + 96 : prefix };
}

/** Whether `address` (IPv4, IPv6 or IPv4-mapped IPv6) lies in `range`. */
export function cidrContains(range: Cidr, address: string): boolean {
  const bytes = parseIp(address);
  if (bytes === null) return false;
  for (let bit = 0; bit < range.prefix; bit += 8) {
    const bits = Math.min(8, range.prefix - bit);
    const mask = (0xff << (8 - bits)) & 0xff;
    if ((bytes[bit / 8] & mask) !== (range.bytes[bit / 8] & mask)) return false;
  }
  return true;
}

/** An IPv4 or IPv6 address as 16 bytes, IPv4 mapped to ::ffff:a.b.c.d; null if malformed. */
function parseIp(text: string): Uint8Array | null {
  const out = new Uint8Array(16);
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) {
    const parts = v4.slice(1).map(Number);
    if (parts.some((p) => p > 255)) return null;
    out[10] = out[11] = 0xff;
    out.set(parts, 12);
    return out;
  }
  if (!text.includes(":")) return null;
  let head = text;
  let tail4: Uint8Array | null = null;
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    tail4 = parseIp(text.slice(lastColon + 1));
    if (tail4 === null) return null;
    head = text.slice(0, lastColon + 1) + "0:0";
  }
  const halves = head.split("::");
  if (halves.length > 2) return null;
  const words = (part: string) => part === "" ? [] : part.split(":");
  const left = words(halves[0]);
  const right = halves.length === 2 ? words(halves[1]) : [];
  const missing = 8 - left.length - right.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...left, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...right];
  for (let i = 0; i < 8; i++) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(all[i])) return null;
    const word = parseInt(all[i], 16);
    out[i * 2] = word >> 8;
    out[i * 2 + 1] = word & 0xff;
  }
  if (tail4) out.set(tail4.subarray(12), 12);
  return out;
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
export function parseConfigText(text: string, path: string): Partial<Settings> {
  let document: unknown;
  try {
    document = parseYaml(text);
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
