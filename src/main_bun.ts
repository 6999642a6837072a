/**
 * Entry point for Bun: picks the Bun transport and runs the CLI.
 *
 * @module
 */

import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { homedir } from "node:os";
import process from "node:process";
import { runCli } from "./cli.ts";
import { targetName } from "./platform.ts";
import { bunTransport } from "./transport/bun.ts";

declare const Bun: { version: string; argv: string[] };

const code = await runCli(Bun.argv.slice(2), {
  transport: bunTransport(),
  runtime: { name: "bun", version: Bun.version, target: targetName(process.platform, process.arch) },
  env: (name) => process.env[name],
  homeDir: () => homedir(),
  readTextFile: async (path) => {
    try {
      return await readFile(path, "utf8");
    } catch (error) {
      if ((error as { code?: string }).code === "ENOENT") return null;
      throw error;
    }
  },
  stdout: (line) => console.log(line),
  stderr: (line) => console.error(line),
  onShutdownSignal: (handler) => {
    process.on("SIGINT", () => handler("SIGINT"));
    process.on("SIGTERM", () => handler("SIGTERM"));
  },
  writeTextFile: async (path, text, { overwrite }) => {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, text, { flag: overwrite ? "w" : "wx" });
  },
  exit: (code) => process.exit(code),
});
process.exit(code);
