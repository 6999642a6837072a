/**
 * The V8 flags every Deno build of o3sr runs with: `deno compile` embeds them
 * (compile.ts), and `npm run o3sr:deno`, the tests and the bench pass them to
 * `deno run`.
 *
 * V8 grows its young generation to 16 MiB per semi-space after a burst of
 * allocation (thousands of clients connecting, a bulk transfer) and keeps it.
 * Capped at 4 MiB, a Deno matcher + relay held 27.8 KiB per idle stream at
 * 10,000 streams instead of 35.4, and 205 MiB at the 8-stream load's peak
 * instead of 221 (mean of four runs), with throughput, latency and setup rate
 * unchanged within run-to-run noise (2026-12-03). `--optimize-for-size` saved
 * as much memory but cost 10-13% of single-stream throughput.
 *
 * @module
 */

/** The `--v8-flags` argument for `deno run` and `deno compile`. */
export const DENO_V8_FLAGS = "--v8-flags=--max-semi-space-size=4";
