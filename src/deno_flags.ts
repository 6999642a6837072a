/**
 * The V8 flags every Deno build of o3sr runs with: `deno compile` embeds them
 * (compile.ts), and `npm run o3sr:deno`, the tests and the bench pass them to
 * `deno run`.
 *
 * V8 lets its young generation grow to 64 MiB (two semi-spaces of 32) under a
 * burst of allocation (thousands of clients connecting, a bulk transfer), and
 * those pages count in RSS. With each semi-space capped at 4 MiB, a Deno
 * matcher + relay held 27.8 KiB per idle stream at 10,000 streams instead of
 * 35.4, and 72 MiB per process through a 3-minute churn instead of 120, with
 * throughput, latency and setup rate unchanged within run-to-run noise
 * (2026-12-03). `--optimize-for-size` saved as much memory but cost 10-13% of
 * single-stream throughput.
 *
 * @module
 */

/** The `--v8-flags` argument for `deno run` and `deno compile`. */
export const DENO_V8_FLAGS = "--v8-flags=--max-semi-space-size=4";
