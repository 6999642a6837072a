/**
 * The command line: arguments and config file in, a matcher, relay or demo
 * out. Exit codes: 0 after a clean stop, 1 when the role cannot start (such
 * as a port in use), 2 for bad flags or config.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  camelCase,
  checkSettings,
  closest,
  defaultSettings,
  isList,
  locateConfig,
  OPTIONS,
  type OptionSpec,
  parseConfigText,
  parseMode,
  parseValue,
  type Role,
  type Settings,
} from "./config.ts";
import { describeSettings, exampleConfig } from "./config_file.ts";
import { runDemo } from "./demo.ts";
import { errorMessage, UsageError } from "./errors.ts";
import { createLogger, formatBytes, formatDuration, type Logger } from "./log.ts";
import { startMatcher } from "./matcher.ts";
import type { Platform } from "./platform.ts";
import { startRelay } from "./relay.ts";
import { VERSION } from "./version.ts";

/** Commands, with O3SR's `client` as another name for `relay`. */
const COMMANDS = ["matcher", "relay", "client", "demo", "config", "init", "help", "version"] as const;

/** Something that runs until closed. */
interface Running {
  close(drainTimeout?: number): Promise<void>;
}

/**
 * Runs the CLI.
 *
 * @param args arguments after the program name
 * @param platform the system to run on
 * @returns the exit code; for a server, once it has stopped
 */
export async function runCli(args: string[], platform: Platform): Promise<number> {
  let invocation: Invocation;
  try {
    invocation = parseInvocation(args);
  } catch (error) {
    return usageFailure(platform, error);
  }
  if (invocation.version) {
    platform.stdout(versionLine(platform));
    return 0;
  }
  if (invocation.help) {
    platform.stdout(fullHelp(invocation.command));
    return 0;
  }
  if (invocation.tool?.kind === "init") {
    return await writeExampleConfig(platform, invocation.tool.file, invocation.tool.force);
  }

  let settings: Settings;
  let configPath: string | null;
  try {
    ({ settings, configPath } = await resolveSettings(invocation, platform));
  } catch (error) {
    return usageFailure(platform, error);
  }
  const mode = invocation.command ?? settings.mode;
  if (invocation.tool?.kind === "check") {
    try {
      if (mode === "matcher" || mode === "relay") checkRole(mode, settings);
    } catch (error) {
      return usageFailure(platform, error);
    }
    platform.stdout(describeSettings(configPath!, mode, settings));
    return 0;
  }
  if (mode === null) {
    if (args.length === 0) {
      platform.stdout(shortHelp());
      return 0;
    }
    return usageFailure(platform, new UsageError("no command given: run `o3sr matcher`, `o3sr relay` or `o3sr demo`"));
  }

  const log = createLogger({ level: settings.logLevel, format: settings.logFormat, write: platform.stderr });
  if (configPath) log.debug("config loaded", { file: configPath });
  let running: Running;
  try {
    if (mode === "matcher" || mode === "relay") checkRole(mode, settings);
  } catch (error) {
    return usageFailure(platform, error);
  }
  try {
    running = await start(mode, settings, platform, log);
  } catch (error) {
    platform.stderr(`o3sr: ${errorMessage(error)}`);
    return 1;
  }
  await waitForShutdown(platform, log, running, settings.drainTimeout);
  return 0;
}

/**
 * Checks what one role needs from the settings.
 *
 * @throws {UsageError} naming the setting
 */
function checkRole(mode: Role, settings: Settings): void {
  if (mode === "relay") {
    const verifications = [
      settings.tlsCa && "--tls-ca",
      settings.tlsFingerprint && "--tls-fingerprint",
      settings.tlsInsecure && "--tls-insecure",
    ]
      .filter(Boolean);
    if (verifications.length > 1) {
      throw new UsageError(`${verifications.join(" and ")} exclude each other; pick one way to verify the matcher`);
    }
    const wantsTls = settings.tls || verifications.length > 0;
    if (wantsTls && settings.matcherUrl?.startsWith("ws://")) {
      throw new UsageError(`TLS flags need a wss:// matcher URL; ${settings.matcherUrl} is plain WebSocket`);
    }
    for (const service of settings.services) {
      if (service.destPort === undefined) {
        throw new UsageError(
          `service "${service.name}" has no destination for a relay: write it as ${service.name}=HOST:PORT, or give dest_port`,
        );
      }
    }
  }
}

async function start(mode: Role | "demo", settings: Settings, platform: Platform, log: Logger): Promise<Running> {
  const { transport } = platform;
  const pem = async (path: string | null, flag: string) => {
    if (path === null) return undefined;
    let text: string | null;
    try {
      text = await platform.readTextFile(path);
    } catch (error) {
      throw new UsageError(`cannot read ${flag} ${path}: ${errorMessage(error)}`);
    }
    if (text === null) throw new UsageError(`cannot read ${flag} ${path}: no such file`);
    return text;
  };
  const pair = async (cert: string | null, key: string | null, prefix: string) =>
    cert === null || key === null
      ? null
      : { cert: (await pem(cert, `--${prefix}cert`))!, key: (await pem(key, `--${prefix}key`))! };
  switch (mode) {
    case "matcher":
      return await startMatcher({
        ...settings,
        transport,
        log,
        tls: await pair(settings.tlsCert, settings.tlsKey, "tls-"),
        clientTls: await pair(settings.clientTlsCert, settings.clientTlsKey, "client-tls-"),
      });
    case "relay": {
      const wantsTls = settings.tls || settings.tlsCa !== null || settings.tlsFingerprint !== null ||
        settings.tlsInsecure;
      const tls = wantsTls
        ? {
          ca: await pem(settings.tlsCa, "--tls-ca"),
          fingerprint: settings.tlsFingerprint ?? undefined,
          insecure: settings.tlsInsecure || undefined,
        }
        : null;
      return startRelay({ ...settings, transport, log, tls });
    }
    case "demo":
      return await runDemo({
        ...settings,
        transport,
        log,
        print: platform.stdout,
        tls: null,
        clientTls: null,
        services: [],
      });
  }
}

/** Waits for SIGINT/SIGTERM, then drains; a second signal exits at once. */
function waitForShutdown(platform: Platform, log: Logger, running: Running, drainTimeout: number): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    platform.onShutdownSignal((signal) => {
      if (stopping) {
        log.warn("second signal: exiting without draining", { signal });
        platform.exit(130);
        return;
      }
      stopping = true;
      log.info("shutting down", { signal, drain_timeout: formatDuration(drainTimeout) });
      running.close(drainTimeout).then(resolve, resolve);
    });
  });
}

// ---- Arguments ----

interface Invocation {
  command: Role | "demo" | null;
  /** `config check FILE` or `init [FILE]`. */
  tool: { kind: "check" } | { kind: "init"; file: string | undefined; force: boolean } | null;
  help: boolean;
  version: boolean;
  configFile: string | undefined;
  /** Raw flag values by option. */
  flags: Map<OptionSpec, string | string[] | boolean>;
}

function parseInvocation(args: string[]): Invocation {
  const options: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = {
    config: { type: "string" },
    help: { type: "boolean", short: "h" },
    version: { type: "boolean", short: "v" },
    matcher: { type: "boolean", short: "m" },
    client: { type: "boolean", short: "c" },
    force: { type: "boolean" },
  };
  for (const option of OPTIONS) {
    options[option.flag] = option.type === "bool"
      ? { type: "boolean" }
      : { type: "string", multiple: isList(option) || options[option.flag]?.multiple === true };
  }

  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(describeParseError(error, Object.keys(options)));
  }
  const values = parsed.values as Record<string, string | string[] | boolean | undefined>;

  let command: Invocation["command"] = null;
  let tool: Invocation["tool"] = null;
  let help = values.help === true;
  let version = values.version === true;
  let configFile = values.config as string | undefined;
  let first: string | undefined = parsed.positionals[0];
  let rest = parsed.positionals.slice(1);
  if (first === "config") {
    if (rest[0] !== "check") throw new UsageError("`o3sr config` takes one subcommand: `o3sr config check FILE`");
    configFile = rest[1] ?? configFile;
    if (configFile === undefined) {
      throw new UsageError("`o3sr config check` needs the file to check: `o3sr config check FILE`");
    }
    tool = { kind: "check" };
    first = undefined;
    rest = rest.slice(2);
  } else if (first === "init") {
    tool = { kind: "init", file: rest[0], force: values.force === true };
    first = undefined;
    rest = rest.slice(1);
  } else if (values.force) {
    throw new UsageError("--force only goes with `o3sr init`");
  }
  if (first !== undefined) {
    if (!(COMMANDS as readonly string[]).includes(first)) {
      const hint = closest(first, COMMANDS);
      throw new UsageError(
        `unknown command "${first}"${hint ? ` (did you mean "${hint}"?)` : ""}; commands: matcher, relay, demo`,
      );
    }
    if (first === "help") help = true;
    else if (first === "version") version = true;
    else command = first === "demo" ? "demo" : parseMode(first, "command");
  }
  if (rest.length > 0) throw new UsageError(`unexpected argument "${rest[0]}"`);
  if (values.matcher && values.client) throw new UsageError("--matcher and --client exclude each other; pick one role");
  const legacy = values.matcher ? "matcher" : values.client ? "relay" : null;
  if (legacy && command && legacy !== command) {
    throw new UsageError(`--${values.matcher ? "matcher" : "client"} contradicts the command "${first}"`);
  }
  command ??= legacy;

  // A flag may stand for one option per role (`--token`: the matcher's list, the relay's one).
  const flags = new Map<OptionSpec, string | string[] | boolean>();
  for (const flag of new Set(OPTIONS.map((o) => o.flag))) {
    let value = values[flag];
    if (value === undefined) continue;
    const specs = OPTIONS.filter((o) => o.flag === flag);
    const matching = command === "matcher" || command === "relay"
      ? specs.filter((o) => o.roles.includes(command))
      : specs;
    if (matching.length === 0) {
      const roles = [...new Set(specs.flatMap((o) => o.roles))].join("/");
      throw new UsageError(`--${flag} is a ${roles} option; it does nothing for a ${command}`);
    }
    for (const option of matching) {
      if (Array.isArray(value) && !isList(option)) {
        if (value.length > 1) throw new UsageError(`--${flag} was given ${value.length} times; give it once`);
        value = value[0];
      }
      flags.set(option, value);
    }
  }
  return { command, tool, help, version, configFile, flags };
}

function describeParseError(error: unknown, known: string[]): string {
  const message = errorMessage(error);
  const code = (error as { code?: string }).code;
  const option = /'(-{1,2}[^' ]+)/.exec(message)?.[1];
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION" && option) {
    const hint = closest(option.replace(/^-+/, ""), known);
    return `unknown flag ${option}${hint ? ` (did you mean --${hint}?)` : ""}; see o3sr --help`;
  }
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE" && option) {
    return `${option} needs a value, such as ${option} ${exampleValue(option.replace(/^-+/, ""))}`;
  }
  return message.split("\n")[0];
}

function exampleValue(flag: string): string {
  const option = OPTIONS.find((o) => o.flag === flag);
  if (!option) return "VALUE";
  return String(displayDefault(option));
}

async function resolveSettings(
  invocation: Invocation,
  platform: Platform,
): Promise<{ settings: Settings; configPath: string | null }> {
  const settings = defaultSettings() as unknown as Record<string, unknown>;
  const file = await locateConfig(platform, invocation.configFile);
  if (file) Object.assign(settings, await parseConfigText(file.text, file.path));
  for (const option of OPTIONS) {
    const name = camelCase(option.key);
    const raw = option.env && settings[name] === option.default ? platform.env(option.env) : undefined;
    if (raw) settings[name] = parseValue(option, raw, { kind: "env", name: option.env! });
  }
  for (const [option, raw] of invocation.flags) {
    settings[camelCase(option.key)] = parseValue(option, raw, { kind: "flag" });
  }
  checkSettings(settings as unknown as Settings);
  return { settings: settings as unknown as Settings, configPath: file?.path ?? null };
}

/** `o3sr init [FILE]`: writes the commented example config, never over an existing file without --force. */
async function writeExampleConfig(platform: Platform, file: string | undefined, force: boolean): Promise<number> {
  const home = platform.homeDir();
  const xdg = platform.env("XDG_CONFIG_HOME") || (home ? `${home}/.config` : undefined);
  const path = file ?? (xdg ? `${xdg}/o3sr/config.yml` : undefined);
  if (path === undefined) {
    return usageFailure(platform, new UsageError("no home directory: name the file, `o3sr init FILE`"));
  }
  try {
    await platform.writeTextFile(path, exampleConfig(), { overwrite: force });
  } catch (error) {
    const exists = (error as { code?: string }).code === "EEXIST";
    platform.stderr(
      `o3sr: cannot write ${path}: ${exists ? "it exists; add --force to replace it" : errorMessage(error)}`,
    );
    return exists ? 2 : 1;
  }
  platform.stdout(`wrote ${path}; edit it, then check it with \`o3sr config check ${path}\``);
  return 0;
}

function usageFailure(platform: Platform, error: unknown): number {
  if (!(error instanceof UsageError)) throw error;
  platform.stderr(`o3sr: ${error.message}`);
  return 2;
}

// ---- Help ----

function versionLine(platform: Platform): string {
  const { name, version, target } = platform.runtime;
  return `o3sr ${VERSION} (${name} ${version}, ${target})`;
}

/** The value shown as an option's default: `10s`, `1MiB`, `6543`. */
export function displayDefault(option: OptionSpec): string | number {
  const value = option.default;
  if (value === null || value === false) return "off";
  if (Array.isArray(value)) return value.length === 0 ? "none" : value.join(", ");
  if (option.type === "duration") return value === 0 ? "off" : formatDuration(value as number);
  if (option.type === "size") return formatBytes(value as number);
  return value as string | number;
}

function argName(option: OptionSpec): string {
  if (option.arg) return option.arg;
  switch (option.type) {
    case "bool":
      return "";
    case "string":
      return "TEXT";
    case "cidrs":
      return "CIDR";
    case "tokens":
      return "SECRET";
    case "port":
    case "listen-port":
      return "PORT";
    case "host":
    case "hosts":
      return "HOST";
    case "services":
      return "NAME=DEST";
    case "port-range":
      return "LOW-HIGH";
    case "duration":
      return "TIME";
    case "size":
      return "BYTES";
    case "int":
      return "N";
    case "enum":
      return option.values!.join("|");
  }
}

/** The short usage printed by a bare `o3sr`. */
export function shortHelp(): string {
  return `o3sr ${VERSION}: reach services behind NAT

  o3sr matcher                            on a public host: relays dial in on 6543, users connect to 6544
  o3sr relay --matcher-host HUB --dest-port 3000
                                          behind NAT: forward each user to localhost:3000
  o3sr demo                               try it all on this machine in one process

Then \`nc HUB 6544\` reaches the service. More: o3sr --help`;
}

/** The full help, or one command's. */
export function fullHelp(command: Role | "demo" | null = null): string {
  const section = (title: string, options: readonly OptionSpec[]) =>
    `${title}:\n` + options.map((option) => {
      const left = `  --${option.flag} ${argName(option)}`.trimEnd();
      const shown = displayDefault(option);
      // "off" says something for a port or a time, nothing for a flag or a file.
      const quiet = (shown === "off" || shown === "none") && !["listen-port", "duration"].includes(option.type);
      const right = quiet ? option.help : `${option.help} (default ${shown})`;
      return left.length < 34 ? `${left.padEnd(34)} ${right}` : `${left}\n${"".padEnd(34)} ${right}`;
    }).join("\n");
  const only = (role: Role) => OPTIONS.filter((o) => o.roles.length === 1 && o.roles[0] === role);
  const both = OPTIONS.filter((o) => o.roles.length > 1);
  const parts = [
    `o3sr ${VERSION}: reach services behind NAT

Usage:
  o3sr matcher [options]     the public hub: relays dial in, users connect
  o3sr relay [options]       behind NAT: dial the matcher, forward streams to the destination
  o3sr demo [options]        matcher, relay and an echo service on loopback, in one process
  o3sr --matcher | --client  O3SR's spelling of matcher | relay (also -m | -c)
  o3sr init [FILE] [--force] write a commented example config (default ~/.config/o3sr/config.yml)
  o3sr config check FILE     validate a config and print the effective settings`,
  ];
  if (command !== "relay") parts.push(section("Matcher options", only("matcher")));
  if (command !== "matcher") parts.push(section("Relay options", only("relay")));
  parts.push(section("Options for both", both));
  parts.push(`General:
  --config FILE                      YAML config; else O3SR_CONFIG, ~/.config/o3sr/config.yml, ~/.o3sr.yml
  -h, --help                         this help
  -v, --version                      version, runtime and target

Config keys are the flag names with underscores (relay_port: 6543), plus
mode: matcher|relay. Flags override the file. Times take ms, s, m or h
(a bare number means seconds); sizes take KiB or MiB.`);
  return parts.join("\n\n");
}
