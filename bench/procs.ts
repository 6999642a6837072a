/**
 * Child processes of the bench: spawned, their output kept (a tail of it, so
 * a chatty matcher cannot fill a pipe or our memory), and all killed on exit,
 * error or Ctrl-C.
 *
 * @module
 */

import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** The repository root (bench/..), where children run. */
export const repoRoot: string = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Lines of output kept per child, for error messages. */
const TAIL = 200;

/** A spawned child with its output tail. */
export interface Child {
  readonly name: string;
  readonly pid: number;
  readonly process: ChildProcess;
  /** The last {@linkcode TAIL} lines of stdout and stderr, interleaved. */
  readonly tail: string[];
  /** Every stdout line, for the load tool's JSON answers. */
  readonly stdout: string[];
  /** Exit code or signal name, once exited. */
  readonly exited: Promise<number | string>;
  /** Resolves with the first line (old or new) matching `pattern`. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it is gone. */
  stop(graceMs?: number): Promise<void>;
}

const alive = new Set<Child>();

/** Spawns `command args` in the repo root with a piped stdin (closing it tells the load tool to exit). */
export function spawnChild(name: string, command: string, args: string[]): Child {
  const proc = spawn(command, args, { cwd: repoRoot, stdio: ["pipe", "pipe", "pipe"] });
  const tail: string[] = [];
  const stdout: string[] = [];
  const watchers: Array<{ pattern: RegExp; resolve(match: RegExpMatchArray): void }> = [];
  const collect = (isStdout: boolean) => {
    let partial = "";
    return (data: Uint8Array | string) => {
      partial += typeof data === "string" ? data : new TextDecoder().decode(data);
      const lines = partial.split("\n");
      partial = lines.pop()!;
      for (const line of lines) {
        if (isStdout) stdout.push(line);
        tail.push(line);
        if (tail.length > TAIL) tail.shift();
        for (const watcher of [...watchers]) {
          const match = line.match(watcher.pattern);
          if (match) {
            watchers.splice(watchers.indexOf(watcher), 1);
            watcher.resolve(match);
          }
        }
      }
    };
  };
  proc.stdout!.on("data", collect(true));
  proc.stderr!.on("data", collect(false));
  proc.stdin!.on("error", () => {}); // a child that exits early must not crash us with EPIPE
  let exitCode: number | string | null = null;
  const exited = new Promise<number | string>((resolve) => {
    proc.on("exit", (code, signal) => resolve(exitCode = code ?? signal ?? -1));
    proc.on("error", (error) => resolve(exitCode = `spawn failed: ${error.message}`));
  });
  const child: Child = {
    name,
    pid: proc.pid ?? -1,
    process: proc,
    tail,
    stdout,
    exited,
    waitForLine(pattern, timeoutMs) {
      for (const line of tail) {
        const match = line.match(pattern);
        if (match) return Promise.resolve(match);
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(new Error(`${name}: no line matching ${pattern} within ${timeoutMs} ms${describeTail(child)}`));
        }, timeoutMs);
        const watcher = {
          pattern,
          resolve: (match: RegExpMatchArray) => {
            clearTimeout(timer);
            resolve(match);
          },
        };
        watchers.push(watcher);
        exited.then((code) => {
          clearTimeout(timer);
          reject(new Error(`${name} exited (${code}) before printing ${pattern}${describeTail(child)}`));
        });
      });
    },
    async stop(graceMs = 3000) {
      if (exitCode !== null) return;
      signal(child, "SIGTERM");
      const timer = setTimeout(() => signal(child, "SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  alive.add(child);
  exited.then(() => alive.delete(child));
  return child;
}

/**
 * Runs a one-shot load command and parses the JSON line it prints last.
 *
 * @throws {Error} with the output tail when it fails or outlives `timeoutMs`
 */
export async function runJson<T>(name: string, command: string, args: string[], timeoutMs: number): Promise<T> {
  const child = spawnChild(name, command, args);
  const timer = setTimeout(() => signal(child, "SIGKILL"), timeoutMs);
  const code = await child.exited;
  clearTimeout(timer);
  const last = child.stdout.filter((line) => line.startsWith("{")).at(-1);
  if (code !== 0 || last === undefined) throw new Error(`${name} failed (exit ${code})${describeTail(child)}`);
  return JSON.parse(last) as T;
}

/** A child's last few output lines, indented, for an error message. */
export function describeTail(child: Child, lines = 15): string {
  if (child.tail.length === 0) return "";
  return "\n    " + child.tail.slice(-lines).join("\n    ");
}

function signal(child: Child, name: NodeJS.Signals): void {
  try {
    process.kill(child.pid, name);
  } catch {
    // Already gone.
  }
}

/** Kills every child still running, at once; safe to call from an exit handler. */
export function killAll(): void {
  for (const child of alive) signal(child, "SIGKILL");
  alive.clear();
}

/** Stops every child still running, politely first. */
export async function stopAll(): Promise<void> {
  await Promise.all([...alive].map((child) => child.stop()));
}

/** Kills all children when we exit, fail or are interrupted. */
export function installCleanup(): void {
  process.on("exit", killAll);
  for (const name of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(name, () => {
      console.error(`\nbench: ${name}, killing ${alive.size} child process(es)`);
      killAll();
      process.exit(130);
    });
  }
  process.on("uncaughtException", (error) => {
    console.error(`bench: ${error?.stack ?? error}`);
    killAll();
    process.exit(1);
  });
  process.on("unhandledRejection", (error) => {
    console.error(`bench: ${(error as Error)?.stack ?? error}`);
    killAll();
    process.exit(1);
  });
}

/** Resolves a runtime or tool: the one in node_modules/.bin, else on PATH; null if neither. */
export function findTool(name: string): string | null {
  const local = join(repoRoot, "node_modules", ".bin", name);
  if (existsSync(local)) return local;
  const found = spawnSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" });
  const path = found.status === 0 ? found.stdout.trim() : "";
  return path === "" ? null : path;
}

/** The soft open-files limit children inherit, or null if unknown. */
export function openFileLimit(): number | null {
  const result = spawnSync("sh", ["-c", "ulimit -n"], { encoding: "utf8" });
  const text = result.stdout?.trim();
  if (text === "unlimited") return Number.MAX_SAFE_INTEGER;
  const n = Number(text);
  return Number.isFinite(n) && n > 0 ? n : null;
}

/** Pauses for `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
