/**
 * Named services, balancing and failover, PROXY protocol, connection modes,
 * several matchers, chaining and the library API, over real TCP.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createLogger } from "../src/log.ts";
import type { Matcher, MatcherOptions } from "../src/matcher.ts";
import { type Relay, type RelayEventMap, type RelayOptions, startRelay } from "../src/relay.ts";
import type { Conn, Transport } from "../src/transport/types.ts";
import { startMatcher as startLibraryMatcher, startRelay as startLibraryRelay } from "../mod.ts";
import {
  delay,
  echo,
  freePort,
  localMatcher,
  pseudoRandomBytes,
  readAll,
  readExactly,
  serve,
  tcp,
  type TestServer,
  waitFor,
  writeAll,
} from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const transport = tcp();

/** A destination that answers every connection with its name, then echoes. */
function named(name: string): Promise<TestServer> {
  return serve(transport, async (conn) => {
    await conn.write(encoder.encode(`${name}\n`));
    await echo(conn);
  });
}

async function matcherWith(options: Partial<MatcherOptions> = {}, logs: string[] = []): Promise<Matcher> {
  return await localMatcher({
    transport,
    log: createLogger({ level: "debug", write: (line) => logs.push(line) }),
    ...options,
  });
}

function relayTo(matcher: Matcher, options: Partial<RelayOptions>, logs: string[] = []): Relay {
  return startRelay({
    transport,
    matcherHost: "127.0.0.1",
    matcherPort: matcher.relayAddr.port,
    connections: 1,
    log: createLogger({ level: "debug", write: (line) => logs.push(line) }),
    ...options,
  });
}

async function dial(port: number): Promise<Conn> {
  return await transport.connect({ hostname: "127.0.0.1", port });
}

/** Connects, reads the destination's name line, checks an echo, closes. */
async function whoAnswers(port: number): Promise<string> {
  const conn = await dial(port);
  try {
    let line = "";
    while (!line.includes("\n")) {
      const chunk = await conn.read();
      if (chunk === null) throw new Error(`closed after ${JSON.stringify(line)}`);
      line += decoder.decode(chunk);
    }
    await conn.write(encoder.encode("x"));
    assert.equal(decoder.decode(await readExactly(conn, 1)), "x");
    return line.trim();
  } finally {
    conn.close();
  }
}

function count(names: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const name of names) counts[name] = (counts[name] ?? 0) + 1;
  return counts;
}

describe("named services", () => {
  test("fixed and allocated client ports; each service reaches its own destination; the relay says where", async () => {
    const web = await named("web");
    const api = await named("api");
    const fixedPort = await freePort();
    const rangeStart = await freePort();
    const matcher = await matcherWith({
      services: [{ name: "web", clientPort: fixedPort }],
      portRange: [rangeStart, rangeStart + 20],
    });
    const logs: string[] = [];
    const relay = relayTo(matcher, {
      services: [
        { name: "web", destHost: "127.0.0.1", destPort: web.port },
        { name: "api", destHost: "127.0.0.1", destPort: api.port },
      ],
    }, logs);
    await relay.connected();
    const apiPort = matcher.servicePort("api")!;
    assert.ok(apiPort >= rangeStart && apiPort <= rangeStart + 20, `api got ${apiPort}`);
    assert.deepEqual(relay.stats().services, {
      web: [`127.0.0.1:${fixedPort}`],
      api: [`127.0.0.1:${apiPort}`],
    });
    assert.ok(logs.some((l) => l.includes(`web is reachable at 127.0.0.1:${fixedPort}`)));
    assert.ok(logs.some((l) => l.includes(`api is reachable at 127.0.0.1:${apiPort}`)));
    assert.equal(await whoAnswers(fixedPort), "web");
    assert.equal(await whoAnswers(apiPort), "api");
    // The default client port has no relay for it: such a client waits, then is closed.
    assert.equal(matcher.stats().services.find((s) => s.name === "default")!.relays, 0);

    // A relay that comes back gets the same allocated port.
    await relay.close();
    const again = relayTo(matcher, {
      services: [{ name: "api", destHost: "127.0.0.1", destPort: api.port }],
    });
    await again.connected();
    assert.equal(matcher.servicePort("api"), apiPort);
    await again.close();
    await matcher.close();
    web.close();
    api.close();
  });

  test("a service the matcher has no port for is reported, and the others still work", async () => {
    const dest = await named("d");
    const matcher = await matcherWith();
    const logs: string[] = [];
    const relay = relayTo(matcher, {
      services: [
        { name: "default", destHost: "127.0.0.1", destPort: dest.port },
        { name: "extra", destHost: "127.0.0.1", destPort: dest.port },
      ],
    }, logs);
    await relay.connected();
    assert.ok(logs.some((l) => l.includes("ERROR service extra not published") && l.includes("--port-range")));
    assert.equal(await whoAnswers(matcher.clientAddr.port), "d");
    await relay.close();
    await matcher.close();
    dest.close();
  });
});

describe("pools and balancing", () => {
  async function pool(balance: "random" | "round-robin" | "least-streams") {
    const dests = await Promise.all(["a", "b", "c"].map(named));
    const matcher = await matcherWith({ balance });
    const relays = dests.map((dest) => relayTo(matcher, { destHost: "127.0.0.1", destPort: dest.port }));
    await Promise.all(relays.map((r) => r.connected()));
    return {
      matcher,
      async close() {
        await Promise.all(relays.map((r) => r.close()));
        await matcher.close();
        dests.forEach((d) => d.close());
      },
    };
  }

  test("round-robin: each relay of the pool in turn", async () => {
    const { matcher, close } = await pool("round-robin");
    const answers: string[] = [];
    for (let i = 0; i < 30; i++) answers.push(await whoAnswers(matcher.clientAddr.port));
    assert.deepEqual(count(answers), { a: 10, b: 10, c: 10 });
    assert.notEqual(answers[0], answers[1]);
    await close();
  });

  test("random: every relay gets a share", async () => {
    const { matcher, close } = await pool("random");
    const answers: string[] = [];
    for (let i = 0; i < 90; i++) answers.push(await whoAnswers(matcher.clientAddr.port));
    const counts = count(answers);
    assert.deepEqual(Object.keys(counts).sort(), ["a", "b", "c"]);
    // 90 draws over 3: fewer than 10 for one has a probability below 1e-6.
    for (const n of Object.values(counts)) assert.ok(n >= 10, JSON.stringify(counts));
    await close();
  });

  test("least-streams: a new client goes to the relay with the fewest open streams", async () => {
    const { matcher, close } = await pool("least-streams");
    const held: Conn[] = [];
    const holders: string[] = [];
    for (let i = 0; i < 3; i++) {
      const conn = await dial(matcher.clientAddr.port);
      holders.push(decoder.decode(await readExactly(conn, 2)).trim());
      held.push(conn);
    }
    assert.deepEqual(holders.sort(), ["a", "b", "c"], "three open streams spread one per relay");
    // Close b's stream: the next client must go to b.
    held[holders.indexOf("b")].close();
    await waitFor(() => matcher.stats().relays.some((r) => r.openStreams === 0));
    const next = await dial(matcher.clientAddr.port);
    assert.equal(decoder.decode(await readExactly(next, 2)).trim(), "b");
    next.close();
    held.forEach((c) => c.close());
    await close();
  });

  test("failover: a refused destination sends the client to another relay; the failing relay is then skipped", async () => {
    const good = await named("good");
    const gone = await named("gone");
    const gonePort = gone.port;
    gone.close();
    const logs: string[] = [];
    const matcher = await matcherWith({ balance: "round-robin" }, logs);
    const broken = relayTo(matcher, { destHost: "127.0.0.1", destPort: gonePort });
    await broken.connected();
    const healthy = relayTo(matcher, { destHost: "127.0.0.1", destPort: good.port });
    await healthy.connected();
    const answers: string[] = [];
    for (let i = 0; i < 12; i++) answers.push(await whoAnswers(matcher.clientAddr.port));
    assert.deepEqual(count(answers), { good: 12 }, "every client served");
    const failovers = Number(/^o3sr_failovers_total (\d+)$/m.exec(matcher.metrics())![1]);
    // Two failures mark the broken relay; then it is skipped for 30 s.
    assert.equal(failovers, 2);
    assert.equal(broken.stats().failedStreams, 2);
    assert.ok(logs.some((l) => l.includes("trying another") && l.includes("skipped=30s")));
    await broken.close();
    await healthy.close();
    await matcher.close();
    good.close();
  });
  test("failover: bytes a client sent before the first relay refused reach the next one intact", async () => {
    // The matcher forwards a client's first bytes before the relay accepts the
    // stream, so a refusal must replay them: here 100 KiB and the FIN, sent at once.
    const dest = await serve(transport, echo);
    const gone = await named("gone");
    const gonePort = gone.port;
    gone.close();
    const matcher = await matcherWith({ balance: "round-robin" });
    const broken = relayTo(matcher, { destHost: "127.0.0.1", destPort: gonePort });
    await broken.connected();
    const healthy = relayTo(matcher, { destHost: "127.0.0.1", destPort: dest.port });
    await healthy.connected();
    for (let i = 0; i < 4; i++) {
      const payload = pseudoRandomBytes(100 * 1024, i + 1);
      const conn = await dial(matcher.clientAddr.port);
      await writeAll(conn, payload);
      await conn.closeWrite();
      assert.deepEqual(await readAll(conn), payload, `client ${i}`);
      conn.close();
    }
    assert.match(
      matcher.metrics(),
      /^o3sr_failovers_total 2$/m,
      "the first two clients went to the broken relay first",
    );
    assert.equal(broken.stats().failedStreams, 2);
    await broken.close();
    await healthy.close();
    await matcher.close();
    dest.close();
  });
});

describe("PROXY protocol", () => {
  for (const version of ["v1", "v2"] as const) {
    test(`${version}: the destination learns the client's address`, async () => {
      let header: Uint8Array | null = null;
      const dest = await serve(transport, async (conn) => {
        header = (await conn.read())!;
        await conn.write(encoder.encode("ok"));
        await echo(conn);
      });
      const matcher = await matcherWith();
      const relay = relayTo(matcher, { destHost: "127.0.0.1", destPort: dest.port, proxyProtocol: version });
      await relay.connected();
      const conn = await dial(matcher.clientAddr.port);
      assert.equal(decoder.decode(await readExactly(conn, 2)), "ok");
      const clientPort = conn.localAddr.port;
      conn.close();
      assert.ok(header);
      const bytes = header as Uint8Array;
      if (version === "v1") {
        assert.match(
          decoder.decode(bytes),
          new RegExp(`^PROXY TCP4 127\\.0\\.0\\.1 127\\.0\\.0\\.1 ${clientPort} \\d+\\r\\n$`),
        );
      } else {
        assert.deepEqual([...bytes.subarray(0, 12)], [13, 10, 13, 10, 0, 13, 10, 81, 85, 73, 84, 10]);
        assert.equal(bytes[12], 0x21, "version 2, PROXY");
        assert.equal(bytes[13], 0x11, "TCP over IPv4");
        assert.equal((bytes[14] << 8) | bytes[15], 12);
        assert.deepEqual([...bytes.subarray(16, 20)], [127, 0, 0, 1]);
        assert.equal((bytes[24] << 8) | bytes[25], clientPort);
        assert.equal(bytes.length, 28);
      }
      await relay.close();
      await matcher.close();
      dest.close();
    });
  }
});

describe("connection modes", () => {
  for (const channel of ["mux", "pool", "event"] as const) {
    test(`${channel}: authenticated, byte-exact, sequential and concurrent clients`, async () => {
      const token = "mode-test-token-0123456789";
      const dest = await serve(transport, echo);
      const matcher = await matcherWith({ tokens: [token] });
      const relay = relayTo(matcher, { destHost: "127.0.0.1", destPort: dest.port, channel, poolSize: 3, token });
      await relay.connected();
      for (let i = 0; i < 10; i++) {
        const conn = await dial(matcher.clientAddr.port);
        const data = pseudoRandomBytes(50_000 + i, i + 1);
        const [, got] = await Promise.all([writeAll(conn, data), readAll(conn)]);
        assert.ok(Buffer.from(got).equals(Buffer.from(data)), `client ${i}`);
        conn.close();
      }
      const results = await Promise.all(Array.from({ length: 8 }, async (_, i) => {
        const conn = await dial(matcher.clientAddr.port);
        const data = pseudoRandomBytes(300_000, 100 + i);
        const [, got] = await Promise.all([writeAll(conn, data), readAll(conn)]);
        conn.close();
        return Buffer.from(got).equals(Buffer.from(data));
      }));
      assert.deepEqual(results, Array(8).fill(true));
      if (channel === "pool") {
        // Every used session was replaced: the pool is full again.
        await waitFor(() => relay.stats().sessions === 3, 5000, "pool refilled");
        assert.ok(matcher.stats().relays.every((r) => r.channel === "pool"));
      }
      assert.equal(relay.stats().totalStreams, 18);
      await relay.close();
      await matcher.close();
      dest.close();
    });
  }

  test("pool: clients that wait for a session get one each, not one between them", async () => {
    const dest = await serve(transport, echo);
    const matcher = await matcherWith();
    const relay = relayTo(matcher, { destHost: "127.0.0.1", destPort: dest.port, channel: "pool", poolSize: 2 });
    await relay.connected();
    // Eight clients at once for a pool of two: six wait while sessions are replaced.
    const clients = await Promise.all(Array.from({ length: 8 }, async (_, i) => {
      const conn = await dial(matcher.clientAddr.port);
      await conn.write(encoder.encode(`client ${i}`));
      assert.equal(decoder.decode(await conn.read() ?? undefined), `client ${i}`);
      return conn;
    }));
    // All eight still open, each on a session of its own (fresh sessions may
    // still have their registration stream open: one stream as well).
    const open = matcher.stats().relays.map((r) => r.openStreams);
    assert.ok(open.every((streams) => streams <= 1), `streams per session: ${open}`);
    assert.ok(open.filter((streams) => streams === 1).length >= 8, `streams per session: ${open}`);
    for (const conn of clients) conn.close();
    await relay.close();
    await matcher.close();
    dest.close();
  });

  test("pool: sessions replacing the ones clients took are logged at debug, the pool's arrival at info", async () => {
    const dest = await serve(transport, echo);
    const matcherLogs: string[] = [];
    const relayLogs: string[] = [];
    const matcher = await matcherWith({}, matcherLogs);
    const relay = relayTo(
      matcher,
      { destHost: "127.0.0.1", destPort: dest.port, channel: "pool", poolSize: 2 },
      relayLogs,
    );
    await relay.connected();
    await waitFor(() => relay.stats().sessions === 2, 5000, "pool filled");
    for (let i = 0; i < 5; i++) {
      const conn = await dial(matcher.clientAddr.port);
      await conn.write(encoder.encode(`client ${i}`));
      assert.equal(decoder.decode(await conn.read() ?? undefined), `client ${i}`);
      conn.close();
    }
    await waitFor(() => matcher.stats().relays.length === 2 && relay.stats().sessions === 2, 5000, "pool refilled");
    const count = (logs: string[], level: string, text: string) =>
      logs.filter((line) => line.includes(` ${level} `) && line.includes(text)).length;
    // The matcher: the first session from the relay's address is news, the other six are routine.
    assert.equal(count(matcherLogs, "INFO ", "relay connected"), 1, matcherLogs.join("\n"));
    assert.equal(count(matcherLogs, "DEBUG", "relay connected"), 6, matcherLogs.join("\n"));
    // The relay: filling the pool is news, replacing a taken session is not.
    assert.equal(count(relayLogs, "INFO ", "connected to"), 2, relayLogs.join("\n"));
    assert.equal(count(relayLogs, "DEBUG", "connected to"), 5, relayLogs.join("\n"));
    assert.equal(count(relayLogs, "INFO ", "ended"), 0, relayLogs.join("\n"));
    await waitFor(() => count(relayLogs, "DEBUG", "ended") === 5, 5000, "five pool sessions ended");
    await relay.close();
    await matcher.close();
    dest.close();
  });

  test("event: a relay that never opens the data session lets the client fail over", async () => {
    const dest = await named("mux-relay");
    const matcher = await matcherWith({ balance: "round-robin", connectTimeout: 300 });
    // An event relay whose dials after the control session never complete.
    let dials = 0;
    const stalling: Transport = {
      name: "stalling",
      listen: (options) => transport.listen(options),
      connect: (options) => dials++ === 0 ? transport.connect(options) : new Promise(() => {}),
    };
    const silent = relayTo(matcher, { channel: "event", connections: 1, transport: stalling, connectTimeout: 60_000 });
    await silent.connected();
    const real = relayTo(matcher, { destHost: "127.0.0.1", destPort: dest.port });
    await real.connected();
    const started = Date.now();
    assert.equal(await whoAnswers(matcher.clientAddr.port), "mux-relay");
    assert.ok(Date.now() - started >= 250, "waited for the event relay first");
    assert.match(matcher.metrics(), /^o3sr_failovers_total 1$/m);
    await silent.close();
    await real.close();
    await matcher.close();
    dest.close();
  });
});

describe("scale-out", () => {
  test("one relay holds sessions to two matchers; both serve clients", async () => {
    const dest = await named("svc");
    const [m1, m2] = [await matcherWith(), await matcherWith()];
    const relay = startRelay({
      transport,
      matcherHost: [`127.0.0.1:${m1.relayAddr.port}`, `127.0.0.1:${m2.relayAddr.port}`],
      destHost: "127.0.0.1",
      destPort: dest.port,
      connections: 2,
    });
    await relay.connected();
    assert.equal(relay.stats().sessions, 4);
    assert.equal(m1.stats().relays.length, 2);
    assert.equal(m2.stats().relays.length, 2);
    assert.equal(await whoAnswers(m1.clientAddr.port), "svc");
    assert.equal(await whoAnswers(m2.clientAddr.port), "svc");
    // One matcher going away leaves the other serving.
    await m1.close();
    assert.equal(await whoAnswers(m2.clientAddr.port), "svc");
    await relay.close();
    await m2.close();
    dest.close();
  });

  test("chaining: a relay's destination is another matcher's client port (two tiers)", async () => {
    const dest = await serve(transport, echo);
    const inner = await matcherWith();
    const innerRelay = relayTo(inner, { destHost: "127.0.0.1", destPort: dest.port });
    const outer = await matcherWith();
    const outerRelay = relayTo(outer, { destHost: "127.0.0.1", destPort: inner.clientAddr.port });
    await Promise.all([innerRelay.connected(), outerRelay.connected()]);
    const conn = await dial(outer.clientAddr.port);
    const data = pseudoRandomBytes(2 * 1024 * 1024, 77);
    const [, got] = await Promise.all([writeAll(conn, data), readAll(conn)]);
    assert.ok(Buffer.from(got).equals(Buffer.from(data)));
    conn.close();
    await Promise.all([innerRelay.close(), outerRelay.close()]);
    await Promise.all([inner.close(), outer.close()]);
    dest.close();
  });
});

describe("library API", () => {
  test("mod.ts: ports 0, an in-process handler with web streams, events, stats and close()", async () => {
    const matcher = await startLibraryMatcher({ listenHost: "127.0.0.1", relayPort: 0, clientPort: 0 });
    const relay = startLibraryRelay({
      matcherHost: "127.0.0.1",
      matcherPort: matcher.relayAddr.port,
      handler: (stream) => stream.readable.pipeTo(stream.writable),
    });
    const events: Array<[string, unknown]> = [];
    for (const type of ["connected", "registered", "stream-open", "stream-close"] as const) {
      relay.addEventListener(type, (e) => {
        const detail = (e as CustomEvent<RelayEventMap[typeof type]>).detail;
        events.push([type, "stream" in detail ? { ...detail, stream: undefined } : detail]);
      });
    }
    await relay.connected();
    const conn = await dial(matcher.clientAddr.port);
    const data = pseudoRandomBytes(1024 * 1024, 5);
    const [, got] = await Promise.all([writeAll(conn, data), readAll(conn)]);
    assert.ok(Buffer.from(got).equals(Buffer.from(data)), "echoed by the handler");
    conn.close();
    await waitFor(() => events.some(([type]) => type === "stream-close"));
    const types = events.map(([type]) => type);
    assert.deepEqual(count(types), { connected: 2, registered: 1, "stream-open": 1, "stream-close": 1 });
    assert.ok(types.indexOf("stream-open") < types.indexOf("stream-close"));
    const opened = events.find(([type]) => type === "stream-open")![1] as { service: string; client: string };
    assert.equal(opened.service, "default");
    assert.match(opened.client, /^127\.0\.0\.1:\d+$/);
    assert.equal(relay.stats().totalStreams, 1);
    await relay.close();
    await matcher.close();
    await delay(10);
  });
});
