/**
 * o3sr as real processes started from source: exit codes, signals, and a
 * relay killed with SIGKILL in the middle of a stream.
 */

import assert from "node:assert/strict";
import process from "node:process";
import { describe, test } from "node:test";
import { echo, freePort, readAll, readExactly, runtime, serve, tcp } from "./_helpers.ts";
import { matcherArgs, type O3srProcess, relayArgs, spawnFromSource } from "./_process.ts";

// Graceful shutdown is driven by SIGTERM, which Windows cannot deliver.
const windows = process.platform === "win32";

describe("o3sr processes", () => {
  test("bad flags: exit code 2 and one line on stderr, no stack trace", async () => {
    const run = spawnFromSource(["matcher", "--relay-port", "70000"]);
    assert.equal(await run.exited, 2);
    assert.deepEqual(run.stderr.filter((l) => l !== ""), [
      'o3sr: --relay-port must be a port number 0-65535, got "70000"',
    ]);
  });

  test(
    "relay killed mid-stream: its client is closed promptly; a second relay serves new clients; SIGTERM drains and exits 0",
    {
      skip: windows && "needs POSIX signals",
    },
    async () => {
      const transport = tcp();
      const dest = await serve(transport, echo);
      const [relayPort, clientPort] = [await freePort(), await freePort()];
      const children: O3srProcess[] = [];
      const spawned = (child: O3srProcess) => (children.push(child), child);
      const matcher = spawnFromSource(matcherArgs(relayPort, clientPort));
      const relayCli = relayArgs(relayPort, dest.port, "--connections", "1");
      try {
        await matcher.waitForLog(/matcher listening/);
        const first = spawned(spawnFromSource(relayCli));
        await first.waitForLog(/connected to /);

        const conn = await transport.connect({ hostname: "127.0.0.1", port: clientPort });
        await conn.write(new TextEncoder().encode("ping"));
        assert.equal(new TextDecoder().decode(await readExactly(conn, 4)), "ping");

        const second = spawned(spawnFromSource(relayCli));
        await second.waitForLog(/connected to /);
        const killedAt = Date.now();
        first.signal("SIGKILL");
        const outcome = await readAll(conn).then((rest) => `clean end after ${rest.length} bytes`, () => "reset");
        assert.ok(Date.now() - killedAt < 3000, "client closed within 3 s");
        if (runtime === "bun") assert.equal(outcome, "reset", "a cut-short stream must not look complete");
        // Deno's socket API cannot send RST (no SO_LINGER): its matcher can only close.
        else assert.match(outcome, /reset|clean end after 0 bytes/);
        conn.close();

        const next = await transport.connect({ hostname: "127.0.0.1", port: clientPort });
        await next.write(new TextEncoder().encode("still here"));
        assert.equal(new TextDecoder().decode(await readExactly(next, 10)), "still here");

        // SIGTERM with a stream open: the matcher drains, the stream keeps working.
        matcher.signal("SIGTERM");
        await matcher.waitForLog(/draining/);
        await next.write(new TextEncoder().encode("during drain"));
        assert.equal(new TextDecoder().decode(await readExactly(next, 12)), "during drain");
        await next.closeWrite();
        await readAll(next).catch(() => {});
        next.close();
        assert.equal(await matcher.exited, 0);
        second.signal("SIGTERM");
        assert.equal(await second.exited, 0);
      } finally {
        // Whatever failed above, leave no process behind.
        for (const child of children) child.signal("SIGKILL");
        matcher.signal("SIGKILL");
        dest.close();
      }
    },
  );
});
