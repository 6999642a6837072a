/**
 * Running o3sr as a real process: from source under the runtime executing the
 * tests, or a compiled binary.
 */

import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import { DENO_V8_FLAGS } from "../src/deno_flags.ts";
import { repoRoot, runtime } from "./_helpers.ts";

/** A spawned o3sr process with its output collected. */
export interface O3srProcess {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
  /** Resolves with the exit code (or the signal name). */
  exited: Promise<number | string>;
  /**
   * Sends a signal. Goes through `process.kill` because Deno's child_process
   * reports a child it signalled as killed even when it exited cleanly.
   */
  signal(name: "SIGTERM" | "SIGINT" | "SIGKILL"): void;
  /** Resolves once a stderr line matches. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
}

/** Runs the CLI from source with the current runtime. */
export function spawnFromSource(args: string[]): O3srProcess {
  const argv = runtime === "bun"
    ? ["src/main_bun.ts", ...args]
    : ["run", "-A", DENO_V8_FLAGS, "src/main_deno.ts", ...args];
  return spawnCommand(process.execPath, argv);
}

/** Runs any command, collecting its output line by line. */
export function spawnCommand(command: string, args: string[]): O3srProcess {
  const child = spawn(command, args, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  const stdout: string[] = [];
  const stderr: string[] = [];
  const watchers: Array<{ pattern: RegExp; resolve(line: string): void }> = [];
  const collect = (into: string[], check: boolean) => {
    let partial = "";
    return (data: Uint8Array | string) => {
      partial += typeof data === "string" ? data : new TextDecoder().decode(data);
      const lines = partial.split("\n");
      partial = lines.pop()!;
      for (const line of lines) {
        into.push(line);
        if (!check) continue;
        for (const watcher of [...watchers]) {
          if (watcher.pattern.test(line)) {
            watchers.splice(watchers.indexOf(watcher), 1);
            watcher.resolve(line);
          }
        }
      }
    };
  };
  child.stdout!.on("data", collect(stdout, false));
  child.stderr!.on("data", collect(stderr, true));
  const exited = new Promise<number | string>((resolve) => {
    child.on("exit", (code, signal) => resolve(code ?? signal ?? -1));
  });
  return {
    child,
    stdout,
    stderr,
    exited,
    signal(name) {
      try {
        process.kill(child.pid!, name);
      } catch {
        // Already gone.
      }
    },
    waitForLog(pattern, timeoutMs = 15_000) {
      const seen = stderr.find((line) => pattern.test(line));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(new Error(`no log line matching ${pattern} within ${timeoutMs} ms; stderr:\n${stderr.join("\n")}`)),
          timeoutMs,
        );
        watchers.push({
          pattern,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
      });
    },
  };
}

/** CLI arguments of a matcher on 127.0.0.1 with the given ports. */
export function matcherArgs(relayPort: number, clientPort: number): string[] {
  return [
    "matcher",
    "--listen-host",
    "127.0.0.1",
    "--relay-port",
    String(relayPort),
    "--client-port",
    String(clientPort),
  ];
}

/** CLI arguments of a relay dialing 127.0.0.1:`relayPort` and forwarding to 127.0.0.1:`destPort`. */
export function relayArgs(relayPort: number, destPort: number, ...extra: string[]): string[] {
  return [
    "relay",
    "--matcher-host",
    "127.0.0.1",
    "--matcher-port",
    String(relayPort),
    "--dest-host",
    "127.0.0.1",
    "--dest-port",
    String(destPort),
    ...extra,
  ];
}
