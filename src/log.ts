/**
 * Structured logging: one line per event, as readable text or as JSON.
 *
 * @module
 */

/** Severity, least to most. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Line format: `text` for people, `json` for log collectors. */
export type LogFormat = "text" | "json";

/** Extra facts attached to a log line. */
export type LogFields = Record<string, string | number | boolean | null | undefined>;

/** Writes log lines. */
export interface Logger {
  /** Logs at debug level. */
  debug(message: string, fields?: LogFields): void;
  /** Logs at info level. */
  info(message: string, fields?: LogFields): void;
  /** Logs at warn level. */
  warn(message: string, fields?: LogFields): void;
  /** Logs at error level. */
  error(message: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
}

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Least severe level written. @default {"info"} */
  level?: LogLevel;
  /** Line format. @default {"text"} */
  format?: LogFormat;
  /** Where finished lines go (without a trailing newline). */
  write: (line: string) => void;
  /** Clock, for tests. @default {() => new Date()} */
  now?: () => Date;
}

/** The log levels in order. */
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/**
 * Creates a logger.
 *
 * @example
 * ```ts
 * const lines: string[] = [];
 * const log = createLogger({ write: (line) => lines.push(line), format: "json" });
 * log.info("relay connected", { relay: "10.0.0.2:50412" });
 * ```
 */
export function createLogger(options: LoggerOptions): Logger {
  const minimum = RANK[options.level ?? "info"];
  const format = options.format ?? "text";
  const now = options.now ?? (() => new Date());

  const make = (base: LogFields): Logger => {
    const emit = (level: LogLevel, message: string, fields?: LogFields) => {
      if (RANK[level] < minimum) return;
      const all = fields ? { ...base, ...fields } : base;
      const time = now().toISOString();
      options.write(format === "json" ? jsonLine(time, level, message, all) : textLine(time, level, message, all));
    };
    return {
      debug: (message, fields) => emit("debug", message, fields),
      info: (message, fields) => emit("info", message, fields),
      warn: (message, fields) => emit("warn", message, fields),
      error: (message, fields) => emit("error", message, fields),
      child: (fields) => make({ ...base, ...fields }),
    };
  };
  return make({});
}

/** A logger that drops everything, for library use without logs. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLogger,
};

function textLine(time: string, level: LogLevel, message: string, fields: LogFields): string {
  let line = `${time} ${level.toUpperCase().padEnd(5)} ${message}`;
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    const text = String(value);
    line += ` ${key}=${/[\s"=]/.test(text) || text === "" ? JSON.stringify(text) : text}`;
  }
  return line;
}

function jsonLine(time: string, level: LogLevel, message: string, fields: LogFields): string {
  return JSON.stringify({ time, level, msg: message, ...fields });
}

/** Formats a byte count for people: `512B`, `1.5KiB`, `3.2MiB`. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes}B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const shown = Number.isInteger(value) ? String(value) : value.toFixed(value < 10 ? 1 : 0);
  return `${shown}${units[unit]}`;
}

/** Formats milliseconds for people: `850ms`, `2.5s`, `3m20s`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)}s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.round((ms % 60_000) / 1000);
  return minutes < 60 ? `${minutes}m${seconds}s` : `${Math.floor(minutes / 60)}h${minutes % 60}m`;
}
