/**
 * The system side of the {@linkcode Platform} through `node:` modules, which
 * Bun and Node both provide: environment, files, output, signals, exit. The
 * Bun and Node entry points add their transport and runtime name to it.
 *
 * @module
 */

import { mkdir, readFile, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname } from "node:path";
import process from "node:process";
import { type Platform, targetName } from "./platform.ts";

/** Everything of a {@linkcode Platform} but the transport and the runtime's name and version. */
export function nodeSystem(): Omit<Platform, "transport" | "runtime"> & { target: string } {
  return {
    target: targetName(process.platform, process.arch),
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
    writeTextFile: async (path, text, { overwrite }) => {
      await mkdir(dirname(path), { recursive: true });
      // "wx" fails with EEXIST on an existing file, as the Platform contract asks.
      await writeFile(path, text, { flag: overwrite ? "w" : "wx" });
    },
    stdout: (line) => console.log(line),
    stderr: (line) => console.error(line),
    onShutdownSignal: (handler) => {
      process.on("SIGINT", () => handler("SIGINT"));
      // Windows never delivers SIGTERM; listening for it is harmless there.
      process.on("SIGTERM", () => handler("SIGTERM"));
    },
    exit: (code) => process.exit(code),
  };
}
