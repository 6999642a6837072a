/**
 * `npm run bench -- --soak MINUTES`: a bounded churn through o3sr (many short
 * connections plus a few long streams), sampling RSS and open file
 * descriptors of the matcher and relay every few seconds, then saying whether
 * they stayed flat.
 *
 * @module
 */

import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { ChurnResult } from "./load.ts";
import { setup, startServer } from "./measure.ts";
import { pathContext, PATHS, type RunningPath } from "./paths.ts";
import { fdCount, memory } from "./proc_stats.ts";
import { repoRoot, runJson, sleep } from "./procs.ts";
import { formatNumber, median, renderTable } from "./stats.ts";

/** One reading of one process. */
interface Sample {
  seconds: number;
  rssKiB: number | null;
  fds: number | null;
}

/** RSS may wander this much (of the early level, or 8 MiB, whichever is more) and still count as flat. */
const RSS_SLACK = 0.1;
const RSS_SLACK_KIB = 8 * 1024;
/** Fds may exceed the pre-churn count by this much once the churn is over (a late socket still closing). */
const FD_SLACK = 2;

/** Long echo streams and parallel short-connection loops in the churn. */
const LONG_STREAMS = 4;
const SHORT_LOOPS = 4;

function read(pid: number, since: number): Sample {
  return { seconds: (Date.now() - since) / 1000, rssKiB: memory(pid)?.rssKiB ?? null, fds: fdCount(pid) };
}

/**
 * Runs the soak on the o3sr paths named in `only` (default `o3sr-bun`), all at
 * once, for `minutes`; prints the verdicts and writes the samples as JSON.
 */
export async function runSoak(
  minutes: number,
  only: string[] | null,
  jsonFile: string | null,
  bun: string,
): Promise<void> {
  const paths = PATHS.filter((p) =>
    p.targets !== null && (only === null ? p.name === "o3sr-bun" : only.includes(p.name))
  );
  if (paths.length === 0) throw new Error("--soak needs an o3sr path, such as --only o3sr-bun");
  const seconds = Math.round(minutes * 60);
  const interval = Math.max(1, Math.min(5, seconds / 12));
  const server = await startServer(bun);
  const context = pathContext(server.port, bun);
  const running: Array<{ name: string; path: RunningPath }> = [];
  for (const path of paths) {
    const reason = path.unavailable(context);
    if (reason !== null) {
      console.error(`${path.name}: ${reason}`);
      continue;
    }
    running.push({ name: path.name, path: await path.start(context) });
  }

  const since = Date.now();
  const processes = running.flatMap(({ name, path }) =>
    path.pids.map((pid, i) => ({ path: name, role: i === 0 ? "matcher" : "relay", pid, samples: [] as Sample[] }))
  );
  for (const { name, path } of running) await setup(bun, `${name} warm-up`, path.clientPort, 200);
  await sleep(1000);
  const baseline = processes.map((p) => read(p.pid, since));

  console.error(
    `soak: ${seconds} s of churn on ${running.map((r) => r.name).join(", ")}; sampling every ${interval} s`,
  );
  const churns = running.map(({ name, path }) =>
    runJson<ChurnResult>(`${name} churn`, bun, [
      "bench/load.ts",
      "churn",
      "--port",
      String(path.clientPort),
      "--seconds",
      String(seconds),
      "--long",
      String(LONG_STREAMS),
      "--concurrency",
      String(SHORT_LOOPS),
    ], seconds * 1000 + 60_000).catch((error) => ({ error: String(error?.message ?? error) }))
  );
  let done = false;
  const all = Promise.all(churns).finally(() => done = true);
  // Bounded by the churn's own deadline (and runJson's timeout behind it).
  while (!done) {
    await Promise.race([sleep(interval * 1000), all]);
    if (done) break;
    const line: string[] = [];
    for (const p of processes) {
      const sample = read(p.pid, since);
      p.samples.push(sample);
      line.push(`${p.path} ${p.role} ${formatNumber((sample.rssKiB ?? NaN) / 1024)} MiB ${sample.fds ?? "?"} fds`);
    }
    console.error(`  ${Math.round((Date.now() - since) / 1000)} s: ${line.join(" | ")}`);
  }
  const churnResults = await all;
  await sleep(3000); // closing streams finish; fds should be back to the baseline
  const after = processes.map((p) => read(p.pid, since));

  const rows = [[
    "path",
    "process",
    "RSS start",
    "RSS early",
    "RSS late",
    "RSS after",
    "fds start",
    "fds max",
    "fds after",
    "verdict",
  ]];
  const verdicts = processes.map((p, i) => {
    const v = verdict(baseline[i], p.samples, after[i]);
    const mib = (kib: number | null) => kib === null ? "n/a" : `${formatNumber(kib / 1024)} MiB`;
    rows.push([
      p.path,
      p.role,
      mib(baseline[i].rssKiB),
      mib(v.early),
      mib(v.late),
      mib(after[i].rssKiB),
      String(baseline[i].fds ?? "n/a"),
      String(v.maxFds ?? "n/a"),
      String(after[i].fds ?? "n/a"),
      `RSS ${v.rssFlat === null ? "n/a" : v.rssFlat ? "flat" : "GROWING"}, fds ${
        v.fdsFlat === null ? "n/a" : v.fdsFlat ? "flat" : "LEAKING"
      }`,
    ]);
    return { ...p, baseline: baseline[i], after: after[i], ...v };
  });
  console.log();
  console.log(renderTable(rows));
  console.log();
  for (const [i, { name }] of running.entries()) console.log(`${name} churn: ${JSON.stringify(churnResults[i])}`);

  for (const { path } of running) await path.stop();
  await server.child.stop();
  const file = jsonFile ??
    join(repoRoot, "bench", "results", `soak-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify({ minutes, interval, churn: churnResults, processes: verdicts }, null, 2) + "\n");
  console.log(`\nresults: ${file}`);
}

/** Flat RSS: the last third of the samples within slack of the first third (after a warm-up). */
function verdict(baseline: Sample, samples: Sample[], after: Sample) {
  const rss = samples.map((s) => s.rssKiB).filter((v): v is number => v !== null);
  const third = Math.max(1, Math.floor(rss.length / 3));
  const early = rss.length >= 3 ? median(rss.slice(0, third)) : null;
  const late = rss.length >= 3 ? median(rss.slice(-third)) : null;
  const rssFlat = early === null || late === null ? null : late - early <= Math.max(early * RSS_SLACK, RSS_SLACK_KIB);
  const fds = samples.map((s) => s.fds).filter((v): v is number => v !== null);
  const maxFds = fds.length > 0 ? Math.max(...fds) : null;
  const fdsFlat = baseline.fds === null || after.fds === null ? null : after.fds <= baseline.fds + FD_SLACK;
  return { early, late, rssFlat, maxFds, fdsFlat };
}
