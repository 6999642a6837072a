/**
 * The paths the bench compares: how a client reaches the load tool's server.
 * Each entry starts its forwarder and says where clients connect. Add an o3sr
 * connection mode (say a future `--channel pool|event` relay flag) as one more
 * {@linkcode o3srPath} entry with its extra flags.
 *
 * @module
 */

import { spawnSync } from "node:child_process";
import { connect, createServer } from "node:net";
import { DENO_V8_FLAGS } from "../src/deno_flags.ts";
import { type Child, findTool, repoRoot, sleep, spawnChild } from "./procs.ts";

/** What every path needs to start. */
export interface PathContext {
  /** The load tool's server (sink, source and echo on one port). */
  destPort: number;
  /** The Bun executable running o3sr from source. */
  bun: string;
  /** The Deno executable, or null if not found. */
  deno: string | null;
  /** socat on PATH, or null. */
  socat: string | null;
}

/**
 * The command and leading arguments that run `script` from source under
 * `runtime`: Deno with the V8 flags of o3sr's Deno builds, so o3sr and the Deno
 * floor run alike and the distance between them is o3sr's code.
 */
function runScript(context: PathContext, runtime: "bun" | "deno", script: string): [string, string[]] {
  return runtime === "bun" ? [context.bun, [script]] : [context.deno!, ["run", "-A", DENO_V8_FLAGS, script]];
}

/** A started path. */
export interface RunningPath {
  /** Where the load tool's clients connect. */
  clientPort: number;
  /** The forwarder's command lines, for the JSON. */
  commands: string[];
  /** The forwarder's processes whose memory is measured (empty: none, or not meaningful). */
  pids: number[];
  /** Stops its processes. */
  stop(): Promise<void>;
}

/** One way for a client to reach the server. */
export interface BenchPath {
  name: string;
  /** One line for the table's legend and the JSON. */
  about: string;
  /** o3sr targets from bench/README.md: the single-stream throughput ratio to reach. Null: a reference path. */
  targets: { throughputRatio: number } | null;
  /** Descriptors its busiest process holds per idle client (2 with a session per client). @default {1} */
  descriptorsPerClient?: number;
  /** Why this path cannot run on this machine, or null. */
  unavailable(context: PathContext): string | null;
  start(context: PathContext): Promise<RunningPath>;
}

const HOST = "127.0.0.1";
/** A generous start-up limit: Deno compiles the sources on first run. */
const START_TIMEOUT = 30_000;

/** The client connects straight to the server: the baseline every ratio divides by. */
export const directPath: BenchPath = {
  name: "direct",
  about: "client straight to the server, no forwarder (the baseline)",
  targets: null,
  unavailable: () => null,
  start: (context) =>
    Promise.resolve({ clientPort: context.destPort, commands: [], pids: [], stop: () => Promise.resolve() }),
};

/** The processes one path starts: each command line kept for the JSON, all stopped together. */
class Processes {
  readonly commands: string[] = [];
  readonly children: Child[] = [];

  spawn(name: string, command: string, args: string[]): Child {
    this.commands.push([command, ...args].join(" "));
    const child = spawnChild(name, command, args);
    this.children.push(child);
    return child;
  }

  readonly stop = async (): Promise<void> => void await Promise.all(this.children.map((child) => child.stop()));
}

/** Options of one o3sr configuration. */
export interface O3srPathOptions {
  name: string;
  runtime: "bun" | "deno";
  /** Single-stream throughput to reach, as a fraction of direct. */
  throughputRatio: number;
  /** Extra `o3sr matcher` flags. */
  matcherArgs?: string[];
  /** Extra `o3sr relay` flags. */
  relayArgs?: string[];
  /** The relay opens a session per client (pool, event): the matcher may hold as many as there are clients. */
  sessionPerClient?: boolean;
}

/** Matcher and relay as two processes from source, one relay session. */
export function o3srPath(options: O3srPathOptions): BenchPath {
  // The default limit of 1,024 relay sessions would refuse most of the 10,000 idle clients.
  const matcherArgs = [
    ...(options.matcherArgs ?? []),
    ...(options.sessionPerClient ? ["--max-relay-sessions", "20000"] : []),
  ];
  const extra = [...matcherArgs, ...(options.relayArgs ?? [])];
  return {
    name: options.name,
    about: `matcher + relay, two processes, from source under ${options.runtime === "bun" ? "Bun" : "Deno"}` +
      (extra.length > 0 ? ` (${extra.join(" ")})` : ""),
    targets: { throughputRatio: options.throughputRatio },
    descriptorsPerClient: options.sessionPerClient ? 2 : 1,
    unavailable: (context) => options.runtime === "deno" && context.deno === null ? "deno not found" : null,
    async start(context) {
      const [command, prefix] = runScript(context, options.runtime, `src/main_${options.runtime}.ts`);
      const processes = new Processes();
      const o3sr = (role: string, args: string[]) =>
        processes.spawn(`${options.name} ${role}`, command, [...prefix, role, ...args]);
      const tuning = benchTuning(command, prefix);
      try {
        // Port 0: the matcher picks free ports and logs them, so no race for a port.
        const matcher = o3sr("matcher", [
          "--listen-host",
          HOST,
          "--relay-port",
          "0",
          "--client-port",
          "0",
          ...tuning,
          ...matcherArgs,
        ]);
        const ports = await matcher.waitForLine(
          /matcher listening.*relay_port=\S*?:(\d+).*client_port=\S*?:(\d+)/,
          START_TIMEOUT,
        );
        const relay = o3sr("relay", [
          "--matcher-host",
          HOST,
          "--matcher-port",
          ports[1],
          "--dest-host",
          HOST,
          "--dest-port",
          String(context.destPort),
          "--connections",
          "1",
          ...(options.relayArgs ?? []),
        ]);
        // The matcher's line, not the relay's: only then will it hand out streams.
        await matcher.waitForLine(/relay connected/, START_TIMEOUT);
        const { commands, stop } = processes;
        return { clientPort: Number(ports[2]), commands, pids: [matcher.pid, relay.pid], stop };
      } catch (error) {
        await processes.stop();
        throw error;
      }
    },
  };
}

/**
 * Matcher flags the bench needs, each passed only if this o3sr's `--help`
 * lists it (the source changes; older trees lack newer flags). Every bench
 * client comes from 127.0.0.1, so a per-address connection rate limit would
 * measure the limiter, not the relay.
 */
const BENCH_MATCHER_FLAGS: ReadonlyArray<[flag: string, value: string]> = [["client-rate", "0"]];

const helpCache = new Map<string, string>();

function benchTuning(command: string, prefix: string[]): string[] {
  const key = [command, ...prefix].join(" ");
  if (!helpCache.has(key)) {
    const help = spawnSync(command, [...prefix, "matcher", "--help"], {
      cwd: repoRoot,
      encoding: "utf8",
      timeout: 30_000,
    });
    helpCache.set(key, `${help.stdout ?? ""}${help.stderr ?? ""}`);
  }
  const help = helpCache.get(key)!;
  return BENCH_MATCHER_FLAGS.filter(([flag]) => help.includes(`--${flag} `)).flatMap((
    [flag, value],
  ) => [`--${flag}`, value]);
}

/** Two plain socat hops, like matcher + relay without multiplexing: a reference. */
export const socatPath: BenchPath = {
  name: "socat",
  about: "two socat hops (TCP-LISTEN,fork → TCP), the plain-forwarder reference",
  targets: null,
  unavailable: (context) => context.socat === null ? "not installed, skipped" : null,
  async start(context) {
    const [first, second] = [await freePort(), await freePort()];
    const processes = new Processes();
    // -t 5: after the client's FIN, wait for the sink's answer longer than socat's default 0.5 s.
    const hop = (name: string, listen: number, to: number) =>
      processes.spawn(name, context.socat!, [
        "-t",
        "5",
        `TCP-LISTEN:${listen},bind=${HOST},reuseaddr,fork`,
        `TCP:${HOST}:${to}`,
      ]);
    hop("socat hop 2", second, context.destPort);
    hop("socat hop 1", first, second);
    for (const port of [second, first]) {
      if (!await canConnect(port, START_TIMEOUT)) {
        await processes.stop();
        throw new Error(`socat did not listen on ${port}`);
      }
    }
    // socat forks a process per connection: the parents' memory says nothing.
    return { clientPort: first, commands: processes.commands, pids: [], stop: processes.stop };
  },
};

/**
 * Two minimal forwarders in a row (`forwarder.ts` under Bun, `forwarder_deno.ts`
 * under Deno: socket to socket, no framing, no multiplexing): the floor any
 * matcher + relay written for that runtime can reach here, so o3sr's distance
 * to it is its own overhead.
 */
export function hopsPath(runtime: "bun" | "deno"): BenchPath {
  const [label, script] = runtime === "bun" ? ["Bun", "bench/forwarder.ts"] : ["Deno", "bench/forwarder_deno.ts"];
  const name = `${runtime}-2hop`;
  return {
    name,
    about: `two minimal ${label} forwarders in a row (${script}), the floor for a two-hop relay on ${label}`,
    targets: null,
    // Each hop holds the client's socket and its own to the next hop.
    descriptorsPerClient: 2,
    unavailable: (context) => runtime === "deno" && context.deno === null ? "deno not found" : null,
    async start(context) {
      const processes = new Processes();
      const [command, prefix] = runScript(context, runtime, script);
      const hop = async (role: string, to: number) => {
        const child = processes.spawn(`${name} ${role}`, command, [...prefix, "--to", String(to)]);
        return Number((await child.waitForLine(/listening on (\d+)/, START_TIMEOUT))[1]);
      };
      try {
        const second = await hop("hop 2", context.destPort);
        const first = await hop("hop 1", second);
        const { commands, children, stop } = processes;
        return { clientPort: first, commands, pids: children.map((child) => child.pid), stop };
      } catch (error) {
        await processes.stop();
        throw error;
      }
    },
  };
}

/** Every path, in table order. Direct must stay first: it is the baseline. */
export const PATHS: BenchPath[] = [
  directPath,
  o3srPath({ name: "o3sr-bun", runtime: "bun", throughputRatio: 0.36 }),
  o3srPath({ name: "o3sr-deno", runtime: "deno", throughputRatio: 0.30 }),
  // The other connection modes, under Bun: when does each win?
  o3srPath({
    name: "o3sr-bun-pool",
    runtime: "bun",
    throughputRatio: 0.36,
    relayArgs: ["--channel", "pool"],
    sessionPerClient: true,
  }),
  o3srPath({
    name: "o3sr-bun-event",
    runtime: "bun",
    throughputRatio: 0.36,
    relayArgs: ["--channel", "event"],
    sessionPerClient: true,
  }),
  hopsPath("bun"),
  hopsPath("deno"),
  socatPath,
];

/** Fills in the tools every path may need. */
export function pathContext(destPort: number, bun: string): PathContext {
  return { destPort, bun, deno: findTool("deno"), socat: findTool("socat") };
}

/** A port free right now (for tools that cannot listen on port 0 and report it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, HOST, () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Polls until something accepts on `port` (then closes at once), up to `timeoutMs`. */
async function canConnect(port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, HOST, () => {
        socket.destroy();
        resolve(true);
      });
      socket.on("error", () => resolve(false));
    });
    if (ok) return true;
    await sleep(50);
  }
  return false;
}
