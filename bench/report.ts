/**
 * Results: what was measured per path, the metrics derived from it, the
 * targets from bench/README.md, and the printed table.
 *
 * @module
 */

import type { IdleResult, LatencyResult, SetupResult, ThroughputResult } from "./measure.ts";
import { formatNumber, formatPercent, formatRatio, median, renderTable, shareRange } from "./stats.ts";

/** A throughput cell: direction and stream count. */
export type Cell = "up1" | "down1" | "up8" | "down8";

/** The cells in the order they are measured and shown. */
export const CELLS: readonly { cell: Cell; direction: "upload" | "download"; streams: number }[] = [
  { cell: "up1", direction: "upload", streams: 1 },
  { cell: "down1", direction: "download", streams: 1 },
  { cell: "up8", direction: "upload", streams: 8 },
  { cell: "down8", direction: "download", streams: 8 },
];

/** The runs of one cell and their summary. */
export interface CellResult {
  runs: ThroughputResult[];
  errors: string[];
  /** Median aggregate Gbit/s over the runs. */
  gbps: number | null;
  /**
   * The smallest and largest per-stream share in any run: a stream starved in
   * one run of three is a fairness bug, which a median would hide.
   */
  shareMin: number | null;
  shareMax: number | null;
}

/** Everything measured on one path. */
export interface PathResult {
  name: string;
  about: string;
  status: "ok" | "skipped" | "failed";
  /** Why it was skipped or failed. */
  reason?: string;
  targets: { throughputRatio: number } | null;
  /** The forwarder's command lines as run. */
  commands: string[];
  throughput: Partial<Record<Cell, CellResult>>;
  latency: LatencyResult | null;
  setup: SetupResult | null;
  /** Matcher + relay memory during the 8-stream load, KiB. */
  peakRss: { hwmKiB: number | null; sampledKiB: number | null; hwmReset: boolean } | null;
  idle: IdleResult | null;
  errors: string[];
}

/** Several latency readings as one: each percentile the median of its readings; the readings kept for the JSON. */
export function medianLatency(runs: LatencyResult[]): (LatencyResult & { runs: LatencyResult[] }) | null {
  if (runs.length === 0) return null;
  const of = (key: keyof LatencyResult) => median(runs.map((run) => run[key]));
  return {
    count: runs[0].count,
    p50: of("p50"),
    p90: of("p90"),
    p99: of("p99"),
    max: of("max"),
    mean: of("mean"),
    runs,
  };
}

/** Several setup readings as one: the median rate; the readings kept for the JSON. */
export function medianSetup(runs: SetupResult[]): (SetupResult & { runs: SetupResult[] }) | null {
  if (runs.length === 0) return null;
  return {
    count: runs[0].count,
    seconds: median(runs.map((run) => run.seconds)),
    perSecond: median(runs.map((run) => run.perSecond)),
    runs,
  };
}

/** Summarizes the runs of one cell. */
export function summarizeCell(runs: ThroughputResult[], errors: string[]): CellResult {
  if (runs.length === 0) return { runs, errors, gbps: null, shareMin: null, shareMax: null };
  const shares = runs.map((run) => shareRange(run.bytes));
  return {
    runs,
    errors,
    gbps: median(runs.map((run) => run.gbps)),
    shareMin: runs[0].streams > 1 ? Math.min(...shares.map((s) => s[0])) : null,
    shareMax: runs[0].streams > 1 ? Math.max(...shares.map((s) => s[1])) : null,
  };
}

/** A target's verdict for one path. */
interface Verdict {
  text: string;
  pass: boolean;
}

interface Metric {
  key: string;
  label: string;
  value(path: PathResult): number | null;
  show(value: number, path: PathResult): string;
  /** Show value / direct's value. */
  ratio: boolean;
  /** The target for o3sr paths (those with `targets`), given direct's result. */
  target?(path: PathResult, direct: PathResult, value: number): Verdict | null;
}

/** Tolerance for "8 streams no worse than 1": run-to-run noise on a shared box. */
const NOISE = 0.95;
const FAIR = 0.2;
const MiB = 1024;

const gbit = (value: number) => `${formatNumber(value)} Gbit/s`;

function throughputMetric(cell: Cell, label: string): Metric {
  const streams = cell.endsWith("8") ? 8 : 1;
  const single = cell.replace("8", "1") as Cell;
  return {
    key: `${cell}_gbps`,
    label,
    value: (p) => p.throughput[cell]?.gbps ?? null,
    show: gbit,
    ratio: true,
    target(path, direct, value) {
      if (streams === 1) {
        const want = path.targets!.throughputRatio;
        const base = direct.throughput[cell]?.gbps;
        if (!base) return null;
        return { text: `>= ${want.toFixed(2)}x direct`, pass: value / base >= want };
      }
      const one = path.throughput[single]?.gbps;
      if (!one) return null;
      return { text: `>= 1 stream (${formatNumber(one)}), 5% noise`, pass: value >= one * NOISE };
    },
  };
}

function shareMetric(cell: Cell, label: string): Metric {
  const fair = 1 / 8;
  return {
    key: `${cell}_share`,
    label,
    value: (p) => p.throughput[cell]?.shareMin ?? null,
    show: (min, p) => `${formatPercent(min)} .. ${formatPercent(p.throughput[cell]!.shareMax!)}`,
    ratio: false,
    target: (p, _direct, min) => ({
      text: `each ${formatPercent(fair * (1 - FAIR))} .. ${formatPercent(fair * (1 + FAIR))}`,
      pass: min >= fair * (1 - FAIR) && p.throughput[cell]!.shareMax! <= fair * (1 + FAIR),
    }),
  };
}

/** Every metric, in table order. */
const METRICS: Metric[] = [
  throughputMetric("up1", "upload, 1 stream"),
  throughputMetric("down1", "download, 1 stream"),
  throughputMetric("up8", "upload, 8 streams"),
  shareMetric("up8", "  per-stream share"),
  throughputMetric("down8", "download, 8 streams"),
  shareMetric("down8", "  per-stream share"),
  {
    key: "latency_p50_us",
    label: "latency p50 (64 B echo)",
    value: (p) => p.latency?.p50 ?? null,
    show: (v) => `${formatNumber(v)} µs`,
    ratio: true,
    target: (_p, direct, v) =>
      direct.latency ? { text: `<= direct + 60 µs`, pass: v <= direct.latency.p50 + 60 } : null,
  },
  {
    key: "latency_p99_us",
    label: "latency p99",
    value: (p) => p.latency?.p99 ?? null,
    show: (v) => `${formatNumber(v)} µs`,
    ratio: true,
    target: (_p, direct, v) => direct.latency ? { text: `<= 2x direct`, pass: v <= 2 * direct.latency.p99 } : null,
  },
  {
    key: "setup_per_s",
    label: "connection setup",
    value: (p) => p.setup?.perSecond ?? null,
    show: (v) => `${formatNumber(v)} /s`,
    ratio: true,
    target: (_p, _d, v) => ({ text: ">= 2,000 /s", pass: v >= 2000 }),
  },
  {
    key: "peak_rss_mib",
    label: "peak RSS, 8-stream load",
    value: (p) => p.peakRss ? (p.peakRss.hwmKiB ?? p.peakRss.sampledKiB) : null,
    show: (v) => `${formatNumber(v / MiB)} MiB`,
    ratio: false,
    target: (_p, _d, v) => ({ text: "<= 128 MiB", pass: v <= 128 * MiB }),
  },
  {
    key: "rest_rss_mib",
    label: "RSS at rest (fresh)",
    value: (p) => p.idle?.beforeKiB ?? null,
    show: (v) => `${formatNumber(v / MiB)} MiB`,
    ratio: false,
  },
  {
    key: "idle_kib_per_stream",
    label: "RSS per idle stream",
    value: (p) => p.idle?.perStreamKiB ?? null,
    show: (v, p) => `${formatNumber(v)} KiB (${formatNumber(p.idle!.streams)})`,
    ratio: false,
    target: (_p, _d, v) => ({ text: "<= 16 KiB", pass: v <= 16 }),
  },
];

/** One printed row, also kept in the JSON. */
export interface Row {
  metric: string;
  path: string;
  value: number | null;
  text: string;
  ratio: number | null;
  target: string | null;
  pass: boolean | null;
}

/** Derives the table rows: every metric for every path that ran. */
export function buildRows(paths: PathResult[]): Row[] {
  const direct = paths.find((p) => p.name === "direct")!;
  const rows: Row[] = [];
  for (const metric of METRICS) {
    for (const path of paths) {
      if (path.status !== "ok") continue; // listed under the table with the reason
      const value = metric.value(path);
      const base = metric.ratio ? metric.value(direct) : null;
      // Memory is measured for forwarders only: direct and socat show nothing.
      if (value === null && !metric.ratio && path.targets === null) continue;
      const verdict = value !== null && path.targets && metric.target ? metric.target(path, direct, value) : null;
      rows.push({
        metric: metric.key,
        path: path.name,
        value,
        text: value === null ? "n/a" : metric.show(value, path),
        ratio: value !== null && base ? value / base : null,
        target: verdict?.text ?? null,
        pass: verdict?.pass ?? null,
      });
    }
  }
  return rows;
}

/** The printed table. */
export function renderRows(rows: Row[]): string {
  const labels = new Map(METRICS.map((m) => [m.key, m.label]));
  let previous = "";
  const lines = rows.map((row) => {
    const label = row.metric === previous ? "" : labels.get(row.metric)!;
    previous = row.metric;
    return [
      label,
      row.path,
      row.text,
      row.ratio === null ? "" : formatRatio(row.ratio),
      row.target ?? "",
      row.pass === null ? "" : row.pass ? "PASS" : "MISS",
    ];
  });
  return renderTable([["metric", "path", "value", "x direct", "target", "result"], ...lines]);
}
