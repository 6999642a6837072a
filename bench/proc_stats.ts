/**
 * Memory and file descriptors of running processes, from Linux's /proc.
 * Elsewhere every reading is null and the table prints n/a.
 *
 * @module
 */

import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";

/** Resident memory of one process, in KiB. */
export interface Memory {
  /** Resident set size now (VmRSS). */
  rssKiB: number;
  /** Peak resident set size (VmHWM) since start or the last {@linkcode resetPeak}. */
  hwmKiB: number;
}

/** Reads VmRSS and VmHWM of `pid`; null off Linux or once it is gone. */
export function memory(pid: number): Memory | null {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return null;
  }
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  const rssKiB = field("VmRSS");
  const hwmKiB = field("VmHWM");
  return Number.isNaN(rssKiB) ? null : { rssKiB, hwmKiB };
}

/** Sums {@linkcode memory} over processes; null if any reading fails. */
export function totalMemory(pids: number[]): Memory | null {
  let rssKiB = 0, hwmKiB = 0;
  for (const pid of pids) {
    const m = memory(pid);
    if (m === null) return null;
    rssKiB += m.rssKiB;
    hwmKiB += m.hwmKiB;
  }
  return { rssKiB, hwmKiB };
}

/**
 * Resets VmHWM to the current RSS (writing 5 to clear_refs), so a later peak
 * belongs to the load in between. False where that is not allowed.
 */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** Open file descriptors of `pid`; null off Linux or once it is gone. */
export function fdCount(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/** Samples the summed RSS of `pids` every `intervalMs` until stopped; `stop()` returns the largest sum in KiB. */
export function sampleRss(pids: number[], intervalMs = 50): { stop(): number | null } {
  let peak: number | null = null;
  const take = () => {
    const m = totalMemory(pids);
    if (m !== null) peak = Math.max(peak ?? 0, m.rssKiB);
  };
  take();
  const timer = setInterval(take, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      return peak;
    },
  };
}

let ticksPerSecond: number | null = null;

/** CPU time (user + system) `pid` has used, in seconds; null off Linux or once it is gone. */
export function cpuSeconds(pid: number): number | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // Fields after the command name, which may itself hold spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  ticksPerSecond ??= Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout?.trim()) || 100;
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

/** CPU seconds per process of `pids`, in order; null entries for unreadable ones. */
export function cpuOf(pids: number[]): Array<number | null> {
  return pids.map(cpuSeconds);
}
