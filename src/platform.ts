/**
 * What the CLI needs from the system it runs on. The entry files
 * (`main_deno.ts`, `main_bun.ts`) fill it in; tests pass stand-ins.
 *
 * @module
 */

import type { ConfigSystem } from "./config.ts";
import type { Transport } from "./transport/types.ts";

/** The runtime and target a build runs on, for `--version` and logs. */
export interface RuntimeInfo {
  /** `bun` or `deno`. */
  name: string;
  /** The runtime's version. */
  version: string;
  /** `<os>-<arch>`, such as `linux-x64`. */
  target: string;
}

/** Everything the CLI touches outside itself. */
export interface Platform extends ConfigSystem {
  /** The network. */
  transport: Transport;
  /** Which runtime this is. */
  runtime: RuntimeInfo;
  /** Prints a line to standard output. */
  stdout(line: string): void;
  /** Prints a line to standard error (logs and errors go here). */
  stderr(line: string): void;
  /** Calls `handler` on SIGINT and SIGTERM. */
  onShutdownSignal(handler: (signal: string) => void): void;
  /** Ends the process at once. */
  exit(code: number): void;
  /**
   * Writes a text file, creating its directory. Without `overwrite`, an
   * existing file is an error whose `code` is `EEXIST`.
   */
  writeTextFile(path: string, text: string, options: { overwrite: boolean }): Promise<void>;
}

/** Maps runtime OS/arch names to release target names (`linux-x64`). */
export function targetName(os: string, arch: string): string {
  const osName = os === "win32" ? "windows" : os;
  const archName = ({ x86_64: "x64", aarch64: "arm64" } as Record<string, string>)[arch] ?? arch;
  return `${osName}-${archName}`;
}
