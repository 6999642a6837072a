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

type OptionType = "port" | "listen-port" | "host" | "int" | "duration" | "size" | "enum";

/** One setting: its config key, flag, type, default and help. */
export interface OptionSpec {
  /** Key in the YAML file (snake_case). */
  key: string;
  /** Flag without the dashes (kebab-case). */
  flag: string;
  /** Value type, which decides parsing and validation. */
  type: OptionType;
  /** Default value: milliseconds for durations, bytes for sizes. */
  default: string | number;
  /** Roles the option applies to. */
  roles: readonly Role[];
  /** One line of help. */
  help: string;
  /** Allowed values of an `enum`. */
  values?: readonly string[];
  /** Bounds of an `int`, `size` or `duration`. */
  min?: number;
  max?: number;
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
type Source = { kind: "flag" } | { kind: "file"; path: string };

function describeSetting(option: OptionSpec, source: Source): string {
  return source.kind === "flag" ? `--${option.flag}` : `config ${source.path}: ${option.key}`;
}

/**
 * Parses and checks one value.
 *
 * @throws {UsageError} naming the flag or key and what was expected
 */
export function parseValue(option: OptionSpec, raw: unknown, source: Source): string | number {
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
