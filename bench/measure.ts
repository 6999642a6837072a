/**
 * Measurements: each runs the load tool in its own process against a path's
 * client port and returns what it printed, plus the memory readings taken
 * from /proc meanwhile.
 *
 * @module
 */

import type { LatencyResult, SetupResult, ThroughputResult } from "./load.ts";
import type { RunningPath } from "./paths.ts";
import { totalMemory } from "./proc_stats.ts";
import { type Child, describeTail, runJson, sleep, spawnChild } from "./procs.ts";

export type { LatencyResult, SetupResult, ThroughputResult };

/** Runs `bun bench/load.ts CMD ARGS`, retrying once: o3sr may be mid-change while we run. */
async function load<T>(bun: string, label: string, command: string, args: string[], timeoutMs: number): Promise<T> {
  const argv = ["bench/load.ts", command, ...args];
  try {
    return await runJson<T>(label, bun, argv, timeoutMs);
  } catch (first) {
    console.error(`  ${label}: ${(first as Error).message.split("\n")[0]}; retrying once`);
    await sleep(500);
    return await runJson<T>(label, bun, argv, timeoutMs);
  }
}

/** Starts the load tool's server; resolves with its port. */
export async function startServer(bun: string): Promise<{ port: number; child: Child }> {
  const child = spawnChild("load server", bun, ["bench/load.ts", "serve"]);
  const match = await child.waitForLine(/^\{"port":(\d+)\}/, 15_000);
  return { port: Number(match[1]), child };
}

/** One throughput run: `streams` parallel streams for `seconds`, upload or download. */
export function throughput(
  bun: string,
  label: string,
  port: number,
  direction: "upload" | "download",
  streams: number,
  seconds: number,
): Promise<ThroughputResult> {
  // Bounded: the window, plus draining what the forwarder buffered, plus start-up.
  const timeout = seconds * 1000 + 90_000;
  return load(bun, label, direction, [
    "--port",
    String(port),
    "--streams",
    String(streams),
    "--seconds",
    String(seconds),
  ], timeout);
}

/** Sequential 64-byte echo round trips. */
export function latency(bun: string, label: string, port: number, count: number): Promise<LatencyResult> {
  return load(bun, label, "latency", ["--port", String(port), "--count", String(count), "--size", "64"], 150_000);
}

/** Sequential connect, 1-byte echo, close. */
export function setup(bun: string, label: string, port: number, count: number): Promise<SetupResult> {
  return load(bun, label, "setup", ["--port", String(port), "--count", String(count)], 120_000);
}

/** Memory cost of idle open streams through a forwarder. */
export interface IdleResult {
  streams: number;
  /** Summed VmRSS of the forwarder's processes before and with the streams open, KiB. */
  beforeKiB: number;
  afterKiB: number;
  perStreamKiB: number;
  /** Seconds the load tool took to open them all. */
  openSeconds: number;
}

/**
 * Opens `count` streams through `path` (each echoes one byte, then idles),
 * and divides the forwarder's RSS growth by the count.
 */
export async function idleStreams(
  bun: string,
  label: string,
  path: RunningPath,
  count: number,
): Promise<IdleResult | null> {
  if (path.pids.length === 0) return null;
  // Warm up first, so JIT and first-use allocations do not count per stream.
  await setup(bun, `${label} warm-up`, path.clientPort, 200);
  await sleep(1000);
  const before = totalMemory(path.pids);
  if (before === null) return null;
  const child = spawnChild(label, bun, [
    "bench/load.ts",
    "idle",
    "--port",
    String(path.clientPort),
    "--count",
    String(count),
  ]);
  try {
    const opened = await Promise.race([
      child.waitForLine(/^\{"open":(\d+),"seconds":([\d.]+)\}/, 180_000),
      child.exited.then((code) => {
        throw new Error(`${label} exited (${code})${describeTail(child)}`);
      }),
    ]);
    await sleep(1500); // let the forwarder settle: buffers freed, the echoes logged
    const after = totalMemory(path.pids);
    if (after === null) return null;
    return {
      streams: Number(opened[1]),
      beforeKiB: before.rssKiB,
      afterKiB: after.rssKiB,
      perStreamKiB: (after.rssKiB - before.rssKiB) / Number(opened[1]),
      openSeconds: Number(opened[2]),
    };
  } finally {
    child.process.stdin?.end(); // the load tool closes its streams and exits
    const timer = setTimeout(() => child.stop(), 10_000);
    await child.exited;
    clearTimeout(timer);
  }
}
