/**
 * End to end over real TCP on loopback: client → matcher → relay → destination.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import type { Channel } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import { type Matcher, startMatcher } from "../src/matcher.ts";
import { encodeFrame } from "../src/protocol/codec.ts";
import { FrameType } from "../src/protocol/frame.ts";
import { type Relay, startRelay } from "../src/relay.ts";
import type { Conn, Transport } from "../src/transport/types.ts";
import {
  delay,
  echo,
  localMatcher,
  localRelay,
  pseudoRandomBytes,
  readAll,
  readExactly,
  runtime,
  serve,
  settlesWithin,
  tcp,
  type TestServer,
  waitFor,
  writeAll,
} from "./_helpers.ts";

const MiB = 1024 * 1024;

interface System {
  transport: Transport;
  matcher: Matcher;
  relays: Relay[];
  dest: TestServer;
  logs: string[];
  client(): Promise<Conn>;
  addRelay(): Promise<Relay>;
  close(): Promise<void>;
}

async function startSystem(
  handle: (conn: Conn) => Promise<void> | void,
  options: { relays?: number; window?: number; channel?: Channel } = {},
): Promise<System> {
  const transport = tcp();
  const logs: string[] = [];
  const log = createLogger({ level: "debug", write: (line) => logs.push(line) });
  const dest = await serve(transport, handle);
  const matcher = await localMatcher({
    transport,
    window: options.window,
    log: log.child({ role: "matcher" }),
  });
  const relays: Relay[] = [];
  const addRelay = async () => {
    const relay = localRelay(matcher, dest.port, {
      transport,
      connections: 1,
      channel: options.channel,
      poolSize: 4,
      window: options.window,
      log: log.child({ role: "relay" }),
    });
    relays.push(relay);
    await relay.connected();
    return relay;
  };
  for (let i = 0; i < (options.relays ?? 1); i++) await addRelay();
  return {
    transport,
    matcher,
    relays,
    dest,
    logs,
    addRelay,
    client: () => transport.connect({ hostname: "127.0.0.1", port: matcher.clientAddr.port }),
    async close() {
      await Promise.all(relays.map((r) => r.close()));
      await matcher.close();
      dest.close();
    },
  };
}

/** Sends `size` pseudo-random bytes in 256 KiB writes; returns their sha256. */
async function sendHashed(conn: Conn, size: number, seed: number): Promise<string> {
  const hash = createHash("sha256");
  const block = 256 * 1024;
  for (let at = 0, i = 0; at < size; at += block, i++) {
    const chunk = pseudoRandomBytes(Math.min(block, size - at), seed + i);
    hash.update(chunk);
    await conn.write(chunk);
  }
  await conn.closeWrite();
  return hash.digest("hex");
}

/** Reads to the end; returns the sha256 and byte count. */
async function receiveHashed(conn: Conn): Promise<{ hash: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for (let chunk = await conn.read(); chunk !== null; chunk = await conn.read()) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { hash: hash.digest("hex"), bytes };
}

for (const channel of ["mux", "pool", "event"] as const) {
  describe(`end to end over TCP (channel ${channel})`, () => {
    test("64 MiB each way arrive byte-exact (sha256)", async () => {
      const size = 64 * MiB;
      let destReceived: Promise<{ hash: string; bytes: number }> | null = null;
      let destSent: Promise<string> | null = null;
      const system = await startSystem((conn) => {
        destReceived = receiveHashed(conn);
        destSent = sendHashed(conn, size, 5000);
        return Promise.all([destReceived, destSent]).then(() => conn.close());
      }, { channel });
      const conn = await system.client();
      const [sent, received] = await Promise.all([sendHashed(conn, size, 1000), receiveHashed(conn)]);
      conn.close();
      await waitFor(() => destReceived !== null && destSent !== null, 5000, "destination connection");
      const atDest = await destReceived!;
      assert.equal(atDest.bytes, size);
      assert.equal(atDest.hash, sent, "client → destination");
      assert.equal(received.bytes, size);
      assert.equal(received.hash, await destSent!, "destination → client");
      await system.close();
    });

    test("200 concurrent streams, each byte-exact", async () => {
      const system = await startSystem(echo, { relays: 2, channel });
      const results = await Promise.all(Array.from({ length: 200 }, async (_, i) => {
        const conn = await system.client();
        const data = pseudoRandomBytes(20_000 + i * 97, i + 1);
        const [, got] = await Promise.all([writeAll(conn, data, 4096), readAll(conn)]);
        conn.close();
        return Buffer.compare(Buffer.from(got), Buffer.from(data)) === 0;
      }));
      assert.equal(results.filter((ok) => ok).length, 200);
      assert.match(system.matcher.metrics(), /^o3sr_streams_opened_total 200$/m);
      // Both relays took a share.
      if (channel === "mux") assert.ok(system.matcher.stats().relays.every((r) => r.totalStreams > 1));
      await system.close();
    });

    test("half-close: the client shuts down writing and still gets the full reply", async () => {
      const reply = pseudoRandomBytes(2 * MiB, 9);
      const system = await startSystem(async (conn) => {
        const request = await readAll(conn); // ends only at the client's FIN
        assert.equal(new TextDecoder().decode(request), "GET everything");
        await writeAll(conn, reply);
        conn.close();
      }, { channel });
      const conn = await system.client();
      await conn.write(new TextEncoder().encode("GET everything"));
      await conn.closeWrite();
      const got = await readAll(conn);
      assert.equal(got.length, reply.length);
      assert.ok(Buffer.from(got).equals(Buffer.from(reply)));
      conn.close();
      await system.close();
    });
  });
}

describe("end to end over TCP", () => {
  test("a stalled reader stalls only its own stream, within its window", async () => {
    const window = 256 * 1024;
    let releaseStalled!: () => void;
    const stalled = new Promise<void>((resolve) => releaseStalled = resolve);
    let stalledReceived = 0;
    const system = await startSystem(async (conn) => {
      const first = (await conn.read())!;
      if (first[0] === 0x53 /* "S" */) {
        await stalled;
        stalledReceived = first.length + (await readAll(conn)).length;
        conn.close();
      } else {
        await conn.write(first);
        await echo(conn);
      }
    }, { window });

    const slow = await system.client();
    await slow.write(new TextEncoder().encode("S"));
    // Push until backpressure reaches the client: the bytes in flight are
    // bounded by socket buffers plus one stream window, not by what we send.
    const chunk = new Uint8Array(256 * 1024);
    let pushed = 0;
    let pending: Promise<void> | null = null;
    while (pushed < 512 * MiB) {
      const write = slow.write(chunk);
      if (!(await settlesWithin(write, 300))) {
        pending = write;
        break;
      }
      pushed += chunk.length;
    }
    assert.ok(pending !== null, `sent ${pushed} bytes to a stalled reader without backpressure`);
    const relayStats = system.relays[0].stats();
    assert.equal(relayStats.openStreams, 1);

    // Meanwhile another stream on the same session flows freely.
    const fast = await system.client();
    const data = pseudoRandomBytes(4 * MiB, 3);
    data[0] = 0x46; // "F": not the stalled kind
    const [, echoed] = await Promise.all([writeAll(fast, data), readAll(fast)]);
    assert.ok(Buffer.from(echoed).equals(Buffer.from(data)));
    fast.close();

    releaseStalled();
    await pending;
    pushed += chunk.length;
    await slow.closeWrite();
    await waitFor(() => stalledReceived > 0, 10_000, "stalled stream to drain");
    assert.equal(stalledReceived, 1 + pushed);
    slow.close();
    await system.close();
  });

  test("relay gone mid-stream: its clients are closed promptly; another relay serves new clients", async () => {
    const system = await startSystem(echo, { relays: 1 });
    const victim = system.relays[0];
    const conn = await system.client();
    await conn.write(new Uint8Array([1, 2, 3]));
    assert.deepEqual(await readExactly(conn, 3), new Uint8Array([1, 2, 3]));
    await system.addRelay();
    const started = Date.now();
    await victim.close(0); // drops its sessions with the stream still open
    await assert.rejects(async () => {
      // A reset, not a clean end: the transfer was cut short.
      for (;;) if ((await conn.read()) === null) throw new Error("clean end");
    });
    assert.ok(Date.now() - started < 2000, "client closed within 2 s");
    conn.close();
    const next = await system.client();
    const data = pseudoRandomBytes(100_000, 4);
    const [, got] = await Promise.all([writeAll(next, data), readAll(next)]);
    assert.ok(Buffer.from(got).equals(Buffer.from(data)));
    next.close();
    await system.close();
  });

  test("matcher restarted on the same ports: the relay reconnects by itself", async () => {
    const transport = tcp();
    const dest = await serve(transport, echo);
    let matcher = await localMatcher({ transport });
    const { relayAddr, clientAddr } = matcher;
    const relay = startRelay({
      transport,
      matcherHost: "127.0.0.1",
      matcherPort: relayAddr.port,
      destHost: "127.0.0.1",
      destPort: dest.port,
      connections: 2,
    });
    await relay.connected();
    await matcher.close();
    await waitFor(() => relay.stats().sessions === 0, 5000, "relay to notice");
    matcher = await startMatcher({
      transport,
      listenHost: "127.0.0.1",
      relayPort: relayAddr.port,
      clientPort: clientAddr.port,
    });
    await waitFor(() => matcher.stats().relays.length === 2, 10_000, "relay to reconnect");
    const conn = await transport.connect({ hostname: "127.0.0.1", port: clientAddr.port });
    await conn.write(new TextEncoder().encode("back"));
    assert.equal(new TextDecoder().decode(await readExactly(conn, 4)), "back");
    conn.close();
    await relay.close();
    await matcher.close();
    dest.close();
  });

  test("a refused destination resets only that stream", async () => {
    const transport = tcp();
    const logs: string[] = [];
    const dead = await serve(transport, echo);
    const deadPort = dead.port;
    dead.close();
    const matcher = await localMatcher({ transport });
    const relay = localRelay(matcher, deadPort, {
      transport,
      connections: 1,
      log: createLogger({ write: (line) => logs.push(line) }),
    });
    await relay.connected();
    for (let i = 0; i < 3; i++) {
      const conn = await transport.connect({ hostname: "127.0.0.1", port: matcher.clientAddr.port });
      if (runtime === "bun") {
        await assert.rejects(readAll(conn), "the client sees a reset");
      } else {
        // Deno's socket API cannot send RST (no SO_LINGER), so its matcher
        // closes instead; the client still gets no bytes.
        const got = await readAll(conn).catch(() => new Uint8Array(0));
        assert.equal(got.length, 0);
      }
      conn.close();
    }
    assert.equal(relay.stats().sessions, 1, "the session survives");
    assert.equal(relay.stats().failedStreams, 3);
    assert.ok(logs.some((line) => line.includes("stream refused") && line.includes(`127.0.0.1:${deadPort}`)));
    await relay.close();
    await matcher.close();
  });

  test("no relay connected: the client waits, then is closed and the event logged", async () => {
    const transport = tcp();
    const logs: string[] = [];
    const matcher = await localMatcher({
      transport,
      relayWait: 300,
      log: createLogger({ write: (line) => logs.push(line) }),
    });
    const conn = await transport.connect({ hostname: "127.0.0.1", port: matcher.clientAddr.port });
    const started = Date.now();
    assert.equal(await conn.read().catch(() => null), null);
    assert.ok(Date.now() - started >= 250);
    assert.ok(logs.some((line) => line.includes("no relay available")));
    conn.close();
    await matcher.close();
  });

  test("a client that arrives before any relay is served once one connects", async () => {
    const transport = tcp();
    const dest = await serve(transport, echo);
    const matcher = await localMatcher({ transport });
    const conn = await transport.connect({ hostname: "127.0.0.1", port: matcher.clientAddr.port });
    await conn.write(new TextEncoder().encode("early"));
    await delay(200);
    assert.equal(matcher.stats().clientsWaiting, 1);
    const relay = localRelay(matcher, dest.port, {
      transport,
    });
    assert.equal(new TextDecoder().decode(await readExactly(conn, 5)), "early");
    conn.close();
    await relay.close();
    await matcher.close();
    dest.close();
  });

  test("a peer sending garbage on the relay port is cut off; other sessions and streams go on", async () => {
    const system = await startSystem(echo);
    const conn = await system.client();
    await conn.write(new Uint8Array([7]));
    assert.deepEqual(await readExactly(conn, 1), new Uint8Array([7]));

    const attacks: Array<[string, Uint8Array]> = [
      ["garbage", new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")],
      ["version", encodeFrame(FrameType.HELLO, 0, new TextEncoder().encode('{"window":1000}'), 1)],
      ["oversize", new Uint8Array([0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 4, 0x7f, 0xff, 0xff, 0xff])],
      ["unknown frame type", encodeFrame(77, 0)],
    ];
    for (const [, bytes] of attacks) {
      const bad = await system.transport.connect({ hostname: "127.0.0.1", port: system.matcher.relayAddr.port });
      await bad.write(bytes);
      await readAll(bad).catch(() => {}); // the matcher hangs up
      bad.close();
    }
    await waitFor(() => system.logs.filter((l) => l.includes("relay handshake failed")).length === attacks.length);
    const failures = system.logs.filter((l) => l.includes("relay handshake failed")).join("\n");
    assert.match(failures, /bad-version/);
    assert.match(failures, /oversize-frame/);
    assert.match(failures, /unknown-frame-type/);

    // The healthy stream still works, and so do new ones.
    await conn.write(new Uint8Array([8]));
    assert.deepEqual(await readExactly(conn, 1), new Uint8Array([8]));
    conn.close();
    assert.equal(system.matcher.stats().relays.length, 1);
    await system.close();
  });
});
