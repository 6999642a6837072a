/**
 * Entry point for Node: picks the `node:net` transport and runs the CLI.
 *
 * This is what the npm package runs (`npx o3sr`, `bunx o3sr`): `npm run
 * build:npm` bundles it into `dist/npm/o3sr.mjs`, which `bin/o3sr.js`
 * starts. It uses only `node:` modules, so the same bundle also runs on Bun
 * (`bunx --bun o3sr`, or `bunx` where Node is not installed) and on Deno.
 *
 * @module
 */

import process from "node:process";
import { runCli } from "./cli.ts";
import { nodeSystem } from "./system_node.ts";
import { nodeTransport } from "./transport/node.ts";

/**
 * The runtime actually executing this bundle, for `--version` and logs. Bun
 * and Deno report a Node version too, which would name the wrong runtime.
 */
function runtimeName(): { name: string; version: string } {
  const versions = process.versions as Record<string, string | undefined>;
  if (versions.bun) return { name: "bun", version: versions.bun };
  if (versions.deno) return { name: "deno", version: versions.deno };
  return { name: "node", version: process.versions.node };
}

/**
 * Exits once stdout and stderr are flushed: Node writes to pipes
 * asynchronously on some systems (macOS), and `process.exit` would cut off
 * the last lines, such as `--version` piped into another program.
 */
async function flushAndExit(code: number): Promise<never> {
  const flushed = (stream: { write(chunk: string, callback: () => void): boolean }) =>
    new Promise<void>((resolve) => stream.write("", () => resolve()));
  await Promise.race([
    Promise.all([flushed(process.stdout), flushed(process.stderr)]),
    new Promise((resolve) => setTimeout(resolve, 1000)),
  ]);
  process.exit(code);
}

const { target, ...system } = nodeSystem();
const code = await runCli(process.argv.slice(2), {
  ...system,
  transport: nodeTransport(),
  runtime: { ...runtimeName(), target },
});
await flushAndExit(code);
