/**
 * Entry point for Deno: picks the Deno transport and runs the CLI.
 *
 * @module
 */

import { runCli } from "./cli.ts";
import { targetName } from "./platform.ts";
import { denoTransport } from "./transport/deno.ts";

const encoder = new TextEncoder();

/**
 * Writes one log line. Not console.error: its formatting took about 5% of a
 * Deno matcher's CPU when it logs a line per client.
 */
function writeStderr(line: string): void {
  const bytes = encoder.encode(`${line}\n`);
  try {
    for (let written = 0; written < bytes.length;) written += Deno.stderr.writeSync(bytes.subarray(written));
  } catch {
    // stderr is gone: there is nowhere left to report to.
  }
}

const code = await runCli(Deno.args, {
  transport: denoTransport(),
  runtime: { name: "deno", version: Deno.version.deno, target: targetName(Deno.build.os, Deno.build.arch) },
  env: (name) => Deno.env.get(name),
  homeDir: () => Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE"),
  readTextFile: async (path) => {
    try {
      return await Deno.readTextFile(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      throw error;
    }
  },
  stdout: (line) => console.log(line),
  stderr: writeStderr,
  onShutdownSignal: (handler) => {
    Deno.addSignalListener("SIGINT", () => handler("SIGINT"));
    // Windows has no SIGTERM listener; Ctrl-C (SIGINT) is what it sends.
    if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", () => handler("SIGTERM"));
  },
  // Deno's own calls, not node:fs: that alone would add ~7 MiB to every process.
  writeTextFile: async (path, text, { overwrite }) => {
    const dir = path.replace(/[\\/][^\\/]*$/, "");
    if (dir && dir !== path) await Deno.mkdir(dir, { recursive: true });
    // An existing file fails with code EEXIST, as the CLI expects.
    await Deno.writeTextFile(path, text, { createNew: !overwrite });
  },
  exit: (code) => Deno.exit(code),
});
Deno.exit(code);
