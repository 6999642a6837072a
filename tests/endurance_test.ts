/**
 * Endurance and faults, bounded: a fuzzer over the frame decoder and over a
 * live matcher and relay (>= 100,000 random and mutated frames), 1,000
 * concurrent streams byte-exact, and a relay killed and restarted repeatedly
 * under load with no client left hanging.
 */

import assert from "node:assert/strict";
import process from "node:process";
import { describe, test } from "node:test";
import { startMatcher } from "../src/matcher.ts";
import { encodeFrame, FrameDecoder } from "../src/protocol/codec.ts";
import { ProtocolError } from "../src/protocol/errors.ts";
import { FrameType } from "../src/protocol/frame.ts";
import { startRelay } from "../src/relay.ts";
import type { Conn } from "../src/transport/types.ts";
import {
  delay,
  echo,
  freePort,
  localMatcher,
  localRelay,
  pseudoRandomBytes,
  readAll,
  readExactly,
  serve,
  tcp,
  waitFor,
  writeAll,
} from "./_helpers.ts";
import { type O3srProcess, relayArgs, spawnFromSource } from "./_process.ts";

const transport = tcp();
const encoder = new TextEncoder();

/** A small deterministic random source (xorshift32). */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  return { next, int: (n: number) => Math.floor(next() * n) };
}

/** A plausible frame: any type, small ids, short payloads (sometimes JSON, sometimes a window). */
function plausibleFrame(r: ReturnType<typeof rng>): Uint8Array {
  const type = 1 + r.int(10);
  const id = r.int(4) === 0 ? 0 : 1 + r.int(16);
  let payload: Uint8Array;
  switch (type) {
    case FrameType.WINDOW:
      payload = new Uint8Array([0, r.int(256), r.int(256), r.int(256)]);
      break;
    case FrameType.HELLO:
    case FrameType.AUTH:
    case FrameType.CONNECT:
      payload = encoder.encode(JSON.stringify({ role: "relay", window: r.int(2 ** 20), service: "x" }));
      break;
    default:
      payload = pseudoRandomBytes(r.int(300), r.int(1000));
  }
  return encodeFrame(type, id, payload);
}

/** Mutates a frame: flips bits, truncates, rewrites a header field, or adds junk. */
function mutate(frame: Uint8Array, r: ReturnType<typeof rng>): Uint8Array {
  const out = frame.slice();
  switch (r.int(6)) {
    case 0:
      for (let i = 0; i < 1 + r.int(4); i++) out[r.int(out.length)] ^= 1 << r.int(8);
      return out;
    case 1:
      return out.subarray(0, r.int(out.length));
    case 2:
      new DataView(out.buffer).setUint32(4 * r.int(4), r.int(2) ? r.int(2 ** 32) : r.int(20));
      return out;
    case 3:
      return new Uint8Array([...out, ...pseudoRandomBytes(r.int(40), r.int(1000))]);
    case 4:
      return pseudoRandomBytes(1 + r.int(64), r.int(100_000));
    default:
      return out;
  }
}

describe("fuzzing", () => {
  test("the decoder takes 100,000 random and mutated frames without failing other than with ProtocolError", () => {
    const r = rng(12345);
    let frames = 0, violations = 0, decoded = 0;
    let decoder = new FrameDecoder(() => decoded++, { splitTraffic: true });
    while (frames < 100_000) {
      const frame = r.int(3) === 0 ? plausibleFrame(r) : mutate(plausibleFrame(r), r);
      // A new connection every 50 frames: a mutated length may swallow the rest of one.
      if (frames++ % 50 === 0) decoder = new FrameDecoder(() => decoded++, { splitTraffic: true });
      try {
        // Feed in odd-sized pieces, as a network would.
        for (let at = 0; at < frame.length;) {
          const size = 1 + r.int(frame.length);
          decoder.push(frame.subarray(at, at + size));
          at += size;
        }
      } catch (error) {
        assert.ok(error instanceof ProtocolError, `only ProtocolError escapes, got ${error}`);
        violations++;
        decoder = new FrameDecoder(() => decoded++, { splitTraffic: true });
      }
    }
    assert.ok(violations > 1000 && decoded > 20_000, `${violations} violations, ${decoded} frames decoded`);
  });

  test("a live matcher and relay take 100,000 fuzzed frames; a healthy stream and new clients are unaffected", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (error: unknown) => unhandled.push(error);
    process.on("unhandledRejection", onUnhandled);
    const dest = await serve(transport, echo);
    const matcher = await localMatcher({
      transport,
      handshakeTimeout: 2000,
      maxRelaySessions: 100_000,
      summaryInterval: 0,
    });
    const relay = localRelay(matcher, dest.port, {
      transport,
      connections: 1,
    });
    await relay.connected();
    const healthy = await transport.connect({ hostname: "127.0.0.1", port: matcher.clientAddr.port });
    const ping = async (conn: Conn, text: string) => {
      await conn.write(encoder.encode(text));
      return new TextDecoder().decode(await readExactly(conn, text.length));
    };
    assert.equal(await ping(healthy, "before"), "before");

    // The matcher's side: raw peers that handshake (or not) and then send fuzz.
    const r = rng(777);
    const hello = encodeFrame(FrameType.HELLO, 0, encoder.encode('{"role":"relay","window":1048576}'));
    let sent = 0;
    const peers: Promise<void>[] = [];
    for (let peer = 0; peer < 720; peer++) {
      const batch: Uint8Array[] = r.int(4) === 0 ? [] : [hello];
      for (let i = 0; i < 125; i++) batch.push(r.int(2) ? plausibleFrame(r) : mutate(plausibleFrame(r), r));
      sent += batch.length;
      const bytes = new Uint8Array(batch.reduce((n, b) => n + b.length, 0));
      batch.reduce((at, b) => (bytes.set(b, at), at + b.length), 0);
      peers.push((async () => {
        const conn = await transport.connect({ hostname: "127.0.0.1", port: matcher.relayAddr.port });
        await conn.write(bytes).catch(() => {});
        await conn.closeWrite().catch(() => {});
        await readAll(conn).catch(() => {});
        conn.close();
      })());
      if (peers.length >= 40) await Promise.all(peers.splice(0));
    }
    await Promise.all(peers);
    assert.ok(sent >= 90_000, `${sent} frames at the matcher`);

    // The relay's side: a fake matcher that sends fuzz after its HELLO.
    const fake = await serve(transport, async (conn) => {
      await conn.read();
      const batch: Uint8Array[] = [
        encodeFrame(FrameType.HELLO, 0, encoder.encode('{"role":"matcher","window":1048576}')),
      ];
      for (let i = 0; i < 125; i++) batch.push(r.int(2) ? plausibleFrame(r) : mutate(plausibleFrame(r), r));
      for (const frame of batch) await conn.write(frame).catch(() => {});
      sent += batch.length;
      await readAll(conn).catch(() => {});
      conn.close();
    });
    const victim = startRelay({
      transport,
      matcherHost: "127.0.0.1",
      matcherPort: fake.port,
      destHost: "127.0.0.1",
      destPort: dest.port,
      connections: 8,
      reconnectMax: 200,
    });
    await waitFor(() => sent >= 100_000, 30_000, "100,000 frames sent in all");
    await victim.close();
    fake.close();

    assert.equal(await ping(healthy, "after"), "after", "the healthy stream is unaffected");
    const fresh = await transport.connect({ hostname: "127.0.0.1", port: matcher.clientAddr.port });
    assert.equal(await ping(fresh, "fresh"), "fresh", "new clients are served");
    fresh.close();
    healthy.close();
    await waitFor(() => matcher.stats().relays.length === 1, 5000, "fuzzing sessions gone");
    await waitFor(() => matcher.stats().relays[0].openStreams === 0, 3000, "no stream left behind");
    assert.deepEqual(unhandled, [], "no unhandled rejection");
    process.off("unhandledRejection", onUnhandled);
    await relay.close();
    await matcher.close();
    dest.close();
  });
});

describe("load", () => {
  test("1,000 concurrent streams, each byte-exact", async () => {
    const dest = await serve(transport, echo);
    const matcher = await localMatcher({
      transport,
      clientRate: 0,
      summaryInterval: 0,
    });
    const relay = localRelay(matcher, dest.port, {
      transport,
      connections: 2,
    });
    await relay.connected();
    const results = await Promise.all(Array.from({ length: 1000 }, async (_, i) => {
      const conn = await transport.connect({ hostname: "127.0.0.1", port: matcher.clientAddr.port });
      const data = pseudoRandomBytes(8192 + (i % 97) * 31, i + 1);
      const [, got] = await Promise.all([writeAll(conn, data, 4096), readAll(conn)]);
      conn.close();
      return Buffer.from(got).equals(Buffer.from(data));
    }));
    assert.equal(results.filter(Boolean).length, 1000);
    await relay.close();
    await matcher.close();
    dest.close();
  });

  test("a relay killed and restarted repeatedly under load: no client hangs, and service comes back each time", {
    skip: process.platform === "win32" && "needs POSIX signals",
  }, async () => {
    const dest = await serve(transport, echo);
    const [relayPort, clientPort] = [await freePort(), await freePort()];
    const matcher = await startMatcher({
      transport,
      listenHost: "127.0.0.1",
      relayPort,
      clientPort,
      relayWait: 3000,
      clientRate: 0,
      summaryInterval: 0,
    });
    const relayCli = relayArgs(relayPort, dest.port, "--connections", "2", "--reconnect-max", "500ms");
    let relay: O3srProcess = spawnFromSource(relayCli);
    let stop = false;
    const outcomes = { ok: 0, failed: 0, slowest: 0 };
    // Clients keep coming, each bounded: a full echo, or a prompt failure.
    const clients = Array.from({ length: 4 }, async (_, worker) => {
      for (let n = 0; !stop; n++) {
        const started = Date.now();
        try {
          const conn = await transport.connect({ hostname: "127.0.0.1", port: clientPort });
          const data = pseudoRandomBytes(64 * 1024, worker * 100_000 + n + 1);
          const [, got] = await Promise.all([writeAll(conn, data, 16 * 1024), readAll(conn)]);
          conn.close();
          if (Buffer.from(got).equals(Buffer.from(data))) outcomes.ok++;
          else outcomes.failed++;
        } catch {
          outcomes.failed++;
        }
        outcomes.slowest = Math.max(outcomes.slowest, Date.now() - started);
      }
    });
    try {
      for (let round = 0; round < 4; round++) {
        await waitFor(() => matcher.stats().relays.length === 2, 15_000, `relay up (round ${round})`);
        const before = outcomes.ok;
        await waitFor(() => outcomes.ok >= before + 5, 10_000, `clients served (round ${round})`);
        relay.signal("SIGKILL");
        await relay.exited;
        await delay(200);
        relay = spawnFromSource(relayCli);
      }
      await waitFor(() => matcher.stats().relays.length === 2, 15_000, "relay up at the end");
      const before = outcomes.ok;
      await waitFor(() => outcomes.ok >= before + 5, 10_000, "clients served at the end");
    } finally {
      stop = true;
      await Promise.all(clients);
      relay.signal("SIGKILL");
      await matcher.close();
      dest.close();
    }
    // A client caught by a kill fails at once or waits for the relay (relay_wait 3 s), never longer.
    assert.ok(outcomes.slowest < 8000, `slowest client took ${outcomes.slowest} ms`);
    assert.ok(outcomes.ok >= 25, JSON.stringify(outcomes));
  });
});
