/**
 * The o3sr benchmark: `npm run bench [-- --quick] [--only PATHS] [--json FILE] [--soak MINUTES]`.
 *
 * Starts the load tool's server (one per path) and every path side by side on loopback,
 * measures throughput, latency, connection setup and memory, prints a table
 * with ratios against `direct` from the same run and writes the JSON to
 * bench/results/. See bench/README.md.
 *
 * @module
 */

import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import {
  idleStreams,
  latency,
  type LatencyResult,
  setup,
  type SetupResult,
  startServer,
  throughput,
  type ThroughputResult,
} from "./measure.ts";
import { type BenchPath, pathContext, PATHS, type RunningPath } from "./paths.ts";
import { cpuOf, resetPeak, sampleRss, totalMemory } from "./proc_stats.ts";
import { findTool, installCleanup, openFileLimit, repoRoot, sleep, stopAll } from "./procs.ts";
import {
  buildRows,
  type Cell,
  CELLS,
  medianLatency,
  medianSetup,
  type PathResult,
  renderRows,
  summarizeCell,
} from "./report.ts";
import { runSoak } from "./soak.ts";

/** How much to measure. */
export interface Plan {
  /** Throughput runs per cell; the median is reported. */
  runs: number;
  /** Length of one throughput run. */
  seconds: number;
  latencyCount: number;
  setupCount: number;
  idleCount: number;
}

const FULL: Plan = { runs: 3, seconds: 2, latencyCount: 10_000, setupCount: 2_000, idleCount: 10_000 };
const QUICK: Plan = { runs: 1, seconds: 0.5, latencyCount: 2_000, setupCount: 500, idleCount: 1_000 };
/** Pause between runs, so what a forwarder still buffers from one run does not spill into the next. */
const SETTLE_MS = 300;

const HELP = `Usage: npm run bench -- [options]

  --quick            fewer runs, shorter runs, fewer connections: a fast check
  --only PATHS       comma-separated paths (${PATHS.map((p) => p.name).join(", ")}); direct always runs
  --json FILE        where to write the results (default bench/results/<timestamp>.json)
  --soak MINUTES     instead of the bench: churn through o3sr for MINUTES, sampling RSS and fds
  -h, --help         this help`;

function parseFlags() {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      json: { type: "string" },
      soak: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const names = values.only?.split(",").map((s) => s.trim()).filter(Boolean);
  for (const name of names ?? []) {
    if (!PATHS.some((p) => p.name === name)) {
      console.error(`bench: unknown path "${name}"; paths: ${PATHS.map((p) => p.name).join(", ")}`);
      process.exit(2);
    }
  }
  const soak = values.soak === undefined ? null : Number(values.soak);
  if (soak !== null && !(soak > 0)) {
    console.error("bench: --soak needs a positive number of minutes");
    process.exit(2);
  }
  return { quick: values.quick!, only: names ?? null, json: values.json ?? null, soak };
}

function timestamp(): string {
  return new Date().toISOString().replace(/[:.]/g, "-");
}

function log(message: string): void {
  console.error(message);
}

/** The Bun to run o3sr and the load tool with: ours if we run under Bun. */
function bunExecutable(): string {
  if ("Bun" in globalThis) return process.execPath;
  const bun = findTool("bun");
  if (bun === null) throw new Error("bun not found: run `npm ci` first");
  return bun;
}

/** Scales the idle-stream count to the open-files limit: each process holds `perClient` descriptors per stream. */
function idleCountFor(wanted: number, perClient: number, name: string): number {
  const limit = openFileLimit();
  if (limit === null || limit >= wanted * perClient + 256) return wanted;
  const scaled = Math.max(100, Math.floor((limit - 256) / perClient / 100) * 100);
  log(
    `note: ulimit -n is ${limit}; ${name} idle streams scaled down from ${wanted} to ${scaled} (raise it with \`ulimit -n ${
      wanted * perClient + 1024
    }\`)`,
  );
  return scaled;
}

function emptyResult(path: BenchPath): PathResult {
  return {
    name: path.name,
    about: path.about,
    status: "ok",
    targets: path.targets,
    commands: [],
    throughput: {},
    latency: null,
    setup: null,
    peakRss: null,
    idle: null,
    errors: [],
  };
}

function firstLine(error: unknown): string {
  return String((error as Error)?.message ?? error);
}

async function bench(plan: Plan, only: string[] | null, jsonFile: string | null): Promise<void> {
  const started = new Date();
  const bun = bunExecutable();
  const selected = PATHS.filter((p) => p.name === "direct" || only === null || only.includes(p.name));

  // A server per path: the connections each path makes to its server wait out
  // TIME_WAIT among their own ports, so one path's setup runs do not slow the
  // connects of the paths after it.
  const servers = await Promise.all(selected.map(() => startServer(bun)));
  const contexts = servers.map((server) => pathContext(server.port, bun));
  const results = selected.map(emptyResult);
  const running = new Map<string, RunningPath>();

  log(
    `bench: ${plan.runs} run(s) x ${plan.seconds} s per throughput cell; paths: ${
      selected.map((p) => p.name).join(", ")
    }`,
  );
  for (const [i, path] of selected.entries()) {
    const reason = path.unavailable(contexts[i]);
    if (reason !== null) {
      results[i].status = "skipped";
      results[i].reason = reason;
      log(`${path.name}: ${reason}`);
      continue;
    }
    try {
      const started = await path.start(contexts[i]);
      running.set(path.name, started);
      results[i].commands = started.commands;
    } catch (error) {
      results[i].status = "failed";
      results[i].reason = `could not start: ${firstLine(error)}`;
      log(`${path.name}: ${results[i].reason}`);
    }
  }
  const active = results.filter((r) => running.has(r.name));

  // Untimed, one run each way per path first: a fresh o3sr's JIT is still compiling its
  // bulk-data path through its first runs (7.5, 8.3, 8.9, 9.3 Gbit/s in a row, measured),
  // and a relay in service is warm. Latency and setup get untimed rounds of their own.
  for (const result of active) {
    for (const direction of ["upload", "download"] as const) {
      const label = `${result.name} warm-up ${direction}`;
      try {
        const run = await throughput(bun, label, running.get(result.name)!.clientPort, direction, 1, plan.seconds);
        log(`  ${label}: ${run.gbps.toFixed(2)} Gbit/s (untimed)`);
      } catch (error) {
        log(`  ${label}: FAILED ${firstLine(error)}`); // the timed runs record failures
      }
    }
  }

  // Throughput: rounds interleave the paths, so a noisy spell on the shared box
  // hits all of them; within a round each path runs its 1- and 8-stream cells of
  // one direction back to back, so "8 streams no worse than 1" compares runs
  // seconds apart, not minutes (the box's load drifts in between).
  const cells = new Map(
    active.map((r) => [r.name, new Map(CELLS.map(({ cell }): [Cell, CellRuns] => [cell, { runs: [], errors: [] }]))]),
  );
  for (let round = 1; round <= plan.runs; round++) {
    for (const direction of ["upload", "download"] as const) {
      for (const result of active) {
        for (const { cell, streams } of CELLS.filter((c) => c.direction === direction)) {
          const label = `${result.name} ${cell} #${round}`;
          const into = cells.get(result.name)!.get(cell)!;
          await throughputRun(bun, label, result, running.get(result.name)!, direction, streams, plan.seconds, into);
          await sleep(SETTLE_MS);
        }
      }
    }
  }
  for (const result of active) {
    for (const [cell, { runs, errors }] of cells.get(result.name)!) {
      result.throughput[cell] = summarizeCell(runs, errors);
    }
  }

  // Latency and setup too: several rounds, the paths taking turns, and the
  // median reported, since one reading on a shared machine can be far off.
  const latencyRuns = new Map(active.map((r) => [r.name, [] as LatencyResult[]]));
  const setupRuns = new Map(active.map((r) => [r.name, [] as SetupResult[]]));
  for (let run = 1; run <= plan.runs; run++) {
    for (const result of active) {
      const path = running.get(result.name)!;
      try {
        const reading = await latency(bun, `${result.name} latency`, path.clientPort, plan.latencyCount);
        latencyRuns.get(result.name)!.push(reading);
        log(`  ${result.name} latency #${run}: p50 ${reading.p50.toFixed(0)} µs, p99 ${reading.p99.toFixed(0)} µs`);
      } catch (error) {
        result.errors.push(`latency: ${firstLine(error)}`);
      }
      await sleep(SETTLE_MS);
    }
    for (const result of active) {
      const path = running.get(result.name)!;
      try {
        const reading = await setup(bun, `${result.name} setup`, path.clientPort, plan.setupCount);
        setupRuns.get(result.name)!.push(reading);
        log(`  ${result.name} setup #${run}: ${reading.perSecond.toFixed(0)} conn/s`);
      } catch (error) {
        result.errors.push(`setup: ${firstLine(error)}`);
      }
      await sleep(SETTLE_MS);
    }
  }
  for (const result of active) {
    result.latency = medianLatency(latencyRuns.get(result.name)!);
    result.setup = medianSetup(setupRuns.get(result.name)!);
  }
  await Promise.all([...running.values()].map((path) => path.stop()));
  running.clear();

  // Idle streams on a fresh forwarder each: the load above must not count.
  // Every path with processes of its own, the floors too: they show what the runtime costs.
  for (const result of active) {
    const index = selected.findIndex((p) => p.name === result.name);
    const path = selected[index];
    if (result.commands.length === 0) continue;
    let fresh: RunningPath | null = null;
    try {
      fresh = await path.start(contexts[index]);
      if (fresh.pids.length === 0) continue;
      const count = idleCountFor(plan.idleCount, path.descriptorsPerClient ?? 1, result.name);
      result.idle = await idleStreams(bun, `${result.name} idle`, fresh, count);
      if (result.idle) {
        log(`  ${result.name} idle: ${result.idle.streams} streams, ${result.idle.perStreamKiB.toFixed(1)} KiB each`);
      }
    } catch (error) {
      result.errors.push(`idle: ${firstLine(error)}`);
      log(`  ${result.name} idle: FAILED ${firstLine(error)}`);
    } finally {
      await fresh?.stop();
    }
  }
  await Promise.all(servers.map((server) => server.child.stop()));

  const rows = buildRows(results);
  console.log();
  console.log(renderRows(rows));
  console.log();
  for (const result of results) {
    const note = result.status === "ok"
      ? result.about
      : result.status === "skipped"
      ? result.reason
      : `FAILED, ${result.reason}`;
    console.log(`${result.name}: ${note}`);
    for (const error of [...result.errors, ...Object.values(result.throughput).flatMap((c) => c!.errors)]) {
      console.log(`  error: ${error.split("\n")[0]}`);
    }
  }
  const file = jsonFile ?? join(repoRoot, "bench", "results", `${timestamp()}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(
    file,
    JSON.stringify(
      {
        startedAt: started.toISOString(),
        finishedAt: new Date().toISOString(),
        host: hostInfo(contexts[0].deno, contexts[0].socat),
        plan,
        paths: results,
        rows,
      },
      null,
      2,
    ) + "\n",
  );
  console.log(`\nresults: ${file} (${((Date.now() - started.getTime()) / 1000).toFixed(0)} s)`);
}

/** The runs of one throughput cell of one path, and the failures among them. */
interface CellRuns {
  runs: ThroughputResult[];
  errors: string[];
}

/** One timed throughput run through `path`, with its forwarders' CPU and, for 8 streams, their peak memory. */
async function throughputRun(
  bun: string,
  label: string,
  result: PathResult,
  path: RunningPath,
  direction: "upload" | "download",
  streams: number,
  seconds: number,
  into: CellRuns,
): Promise<void> {
  const peak = streams > 1 ? startPeak(result, path) : null;
  const cpuBefore = cpuOf(path.pids);
  try {
    const run = await throughput(bun, label, path.clientPort, direction, streams, seconds);
    // Where the forwarder's time goes, for reading the JSON: CPU seconds per process over the run.
    run.forwarderCpu = cpuOf(path.pids).map((after, i) => after === null ? null : after - cpuBefore[i]!);
    into.runs.push(run);
    const cpu = run.forwarderCpu.length > 0
      ? ` (CPU ${run.forwarderCpu.map((c) => `${Math.round(100 * (c ?? NaN) / run.seconds)}%`).join(" + ")})`
      : "";
    log(`  ${label}: ${run.gbps.toFixed(2)} Gbit/s${cpu}`);
  } catch (error) {
    into.errors.push(firstLine(error));
    log(`  ${label}: FAILED ${firstLine(error)}`);
  } finally {
    peak?.stop();
  }
}

/**
 * Measures a path's peak memory over one 8-stream run: VmHWM reset at its start
 * and read at its end, and RSS sampled meanwhile; the path keeps the largest
 * of its runs.
 */
function startPeak(result: PathResult, path: RunningPath): { stop(): void } | null {
  if (path.pids.length === 0) return null;
  const hwmReset = path.pids.every(resetPeak);
  const sampler = sampleRss(path.pids);
  const peak = result.peakRss ??= { hwmKiB: null, sampledKiB: null, hwmReset };
  peak.hwmReset &&= hwmReset;
  return {
    stop() {
      const sampled = sampler.stop();
      if (sampled !== null) peak.sampledKiB = Math.max(peak.sampledKiB ?? 0, sampled);
      const hwm = peak.hwmReset ? totalMemory(path.pids)?.hwmKiB : null;
      if (hwm != null) peak.hwmKiB = Math.max(peak.hwmKiB ?? 0, hwm);
    },
  };
}

function hostInfo(deno: string | null, socat: string | null) {
  return {
    platform: process.platform,
    arch: process.arch,
    kernel: release(),
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? null,
    loadavg: loadavg(),
    runtime: "Bun" in globalThis ? `bun ${process.versions.bun}` : `node-compatible ${process.version}`,
    deno,
    socat,
  };
}

async function main(): Promise<void> {
  installCleanup();
  const flags = parseFlags();
  if (flags.soak !== null) {
    await runSoak(flags.soak, flags.only, flags.json, bunExecutable());
  } else {
    await bench(flags.quick ? QUICK : FULL, flags.only, flags.json);
  }
  await stopAll();
  process.exit(0);
}

await main();
