/**
 * Entry point for Bun: picks the Bun transport and runs the CLI.
 *
 * @module
 */

import process from "node:process";
import { runCli } from "./cli.ts";
import { nodeSystem } from "./system_node.ts";
import { bunTransport } from "./transport/bun.ts";

declare const Bun: { version: string; argv: string[] };

const { target, ...system } = nodeSystem();
const code = await runCli(Bun.argv.slice(2), {
  ...system,
  transport: bunTransport(),
  runtime: { name: "bun", version: Bun.version, target },
});
process.exit(code);
