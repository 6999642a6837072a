/**
 * Smoke test of a compiled binary: matcher and relay as two processes of the
 * standalone executable, bytes through them.
 *
 * Uses `O3SR_BINARY` when set (CI points it at `dist/o3sr-linux-x64`);
 * otherwise compiles the host target into a temporary directory: with Bun
 * under `bun test`, with Deno under `deno test` when `DENORT_BIN` is set.
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { describe, test } from "node:test";
import { DENO_V8_FLAGS } from "../src/deno_flags.ts";
import { assertEchoed, echo, freePort, repoRoot, runtime, serve, tcp } from "./_helpers.ts";
import { matcherArgs, relayArgs, spawnCommand } from "./_process.ts";

const windows = process.platform === "win32";
const given = process.env.O3SR_BINARY;
const canBuild = runtime === "bun" || Boolean(process.env.DENORT_BIN);

function build(): { binary: string; cleanup(): void } {
  if (given) return { binary: given, cleanup() {} };
  const dir = mkdtempSync(join(tmpdir(), "o3sr-smoke-"));
  const binary = join(dir, windows ? "o3sr.exe" : "o3sr");
  if (runtime === "bun") {
    execFileSync(process.execPath, ["build", "--compile", "src/main_bun.ts", "--outfile", binary], { cwd: repoRoot });
  } else {
    execFileSync(process.execPath, ["compile", "-A", DENO_V8_FLAGS, "--output", binary, "src/main_deno.ts"], {
      cwd: repoRoot,
    });
  }
  return { binary, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

describe(
  "compiled binary",
  { skip: !given && !canBuild && "set DENORT_BIN or O3SR_BINARY to smoke-test a Deno build" },
  () => {
    test("--version, then matcher and relay processes carry bytes end to end", { timeout: 120_000 }, async () => {
      const { binary, cleanup } = build();
      const transport = tcp();
      const dest = await serve(transport, echo);
      const [relayPort, clientPort] = [await freePort(), await freePort()];
      const matcher = spawnCommand(binary, matcherArgs(relayPort, clientPort));
      const relay = spawnCommand(binary, relayArgs(relayPort, dest.port));
      try {
        const version = execFileSync(binary, ["--version"]).toString().trim();
        assert.match(version, /^o3sr \d+\.\d+\.\d+ \((bun|deno) [\d.]+, [a-z]+-[a-z0-9]+\)$/);
        await relay.waitForLog(/connected to /);
        await assertEchoed(transport, clientPort, 4 * 1024 * 1024, 11);
        relay.signal("SIGTERM");
        matcher.signal("SIGTERM");
        // Windows has no SIGTERM to catch: there the processes are simply ended.
        if (!windows) {
          assert.equal(await relay.exited, 0);
          assert.equal(await matcher.exited, 0);
        }
      } finally {
        relay.signal("SIGKILL");
        matcher.signal("SIGKILL");
        dest.close();
        cleanup();
      }
    });
  },
);
