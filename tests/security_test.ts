/**
 * Token authentication, limits and the admin endpoints, over real TCP.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createLogger } from "../src/log.ts";
import type { Matcher, MatcherOptions } from "../src/matcher.ts";
import { encodeFrame, FrameDecoder } from "../src/protocol/codec.ts";
import { type Frame, FrameType } from "../src/protocol/frame.ts";
import type { Relay, RelayOptions } from "../src/relay.ts";
import type { Conn, Transport } from "../src/transport/types.ts";
import {
  concat,
  delay,
  echo,
  expectCutOff,
  localMatcher,
  localRelay,
  readAll,
  readExactly,
  serve,
  tcp,
  type TestServer,
  waitFor,
} from "./_helpers.ts";

const SECRET = "correct-horse-battery-staple-42";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface Hub {
  transport: Transport;
  matcher: Matcher;
  dest: TestServer;
  logs: string[];
  relay(options?: Partial<RelayOptions>, logs?: string[]): Relay;
  client(): Promise<Conn>;
  close(): Promise<void>;
}

async function startHub(options: Partial<MatcherOptions> = {}): Promise<Hub> {
  const transport = tcp();
  const logs: string[] = [];
  const dest = await serve(transport, echo);
  const matcher = await localMatcher({
    transport,
    log: createLogger({ level: "debug", write: (line) => logs.push(line) }),
    ...options,
  });
  const relays: Relay[] = [];
  return {
    transport,
    matcher,
    dest,
    logs,
    relay(relayOptions = {}, relayLogs = logs) {
      const relay = localRelay(matcher, dest.port, {
        transport,
        connections: 1,
        log: createLogger({ level: "debug", write: (line) => relayLogs.push(line) }),
        ...relayOptions,
      });
      relays.push(relay);
      return relay;
    },
    client: () => transport.connect({ hostname: "127.0.0.1", port: matcher.clientAddr.port }),
    async close() {
      await Promise.all(relays.map((r) => r.close()));
      await matcher.close();
      dest.close();
    },
  };
}

async function echoes(hub: Hub, text = "hello"): Promise<boolean> {
  const conn = await hub.client();
  try {
    await conn.write(encoder.encode(text));
    return decoder.decode(await readExactly(conn, text.length)) === text;
  } catch {
    return false;
  } finally {
    conn.close();
  }
}

/** A TCP forwarder that records what passes each way. */
async function tap(transport: Transport, port: number) {
  const up: Uint8Array[] = [];
  const server = await serve(transport, async (conn) => {
    const upstream = await transport.connect({ hostname: "127.0.0.1", port });
    const copy = async (from: Conn, to: Conn, record?: Uint8Array[]) => {
      for (let chunk = await from.read().catch(() => null); chunk; chunk = await from.read().catch(() => null)) {
        record?.push(chunk);
        await to.write(chunk).catch(() => {});
      }
      to.close();
    };
    await Promise.all([copy(conn, upstream, up), copy(upstream, conn)]);
  });
  return { port: server.port, close: () => server.close(), captured: () => concat(up) };
}

function frames(bytes: Uint8Array): Frame[] {
  const out: Frame[] = [];
  new FrameDecoder((frame) => out.push(frame)).push(bytes);
  return out;
}

/** Speaks the protocol by hand to the relay port. */
async function rawRelay(transport: Transport, port: number) {
  const conn = await transport.connect({ hostname: "127.0.0.1", port });
  const received: Frame[] = [];
  let ended = false;
  const decoderStream = new FrameDecoder((frame) => received.push(frame));
  (async () => {
    for (let chunk = await conn.read().catch(() => null); chunk; chunk = await conn.read().catch(() => null)) {
      decoderStream.push(chunk);
    }
    ended = true;
  })();
  return {
    conn,
    received,
    get ended() {
      return ended;
    },
    send: (bytes: Uint8Array) => conn.write(bytes),
    async next(type: number): Promise<Frame> {
      await waitFor(() => received.some((f) => f.type === type), 3000, `frame type ${type}`);
      return received.splice(received.findIndex((f) => f.type === type), 1)[0];
    },
  };
}

function helloFrame(): Uint8Array {
  return encodeFrame(FrameType.HELLO, 0, encoder.encode(JSON.stringify({ role: "relay", window: 1 << 20 })));
}

describe("token authentication", () => {
  test("a relay with a good token connects; the matcher logs the token's name, never the token", async () => {
    const hub = await startHub({ tokens: [{ name: "team-a", token: SECRET }] });
    const relay = hub.relay({ token: SECRET });
    await relay.connected();
    assert.ok(await echoes(hub));
    assert.equal(hub.matcher.stats().relays[0].token, "team-a");
    assert.ok(hub.logs.some((line) => line.includes("relay connected") && line.includes("token=team-a")));
    assert.ok(!hub.logs.join("\n").includes(SECRET));
    await hub.close();
  });

  test("a wrong token is refused with a clear message, backs off, and is logged without the token", async () => {
    const hub = await startHub({ tokens: [SECRET, "another-token-of-decent-length"] });
    const relayLogs: string[] = [];
    const relay = hub.relay({ token: "wrong-token-wrong-token", reconnectMax: 10_000 }, relayLogs);
    await waitFor(() => relayLogs.some((l) => l.includes("matcher refused: bad token")), 5000, "refusal");
    await delay(1500);
    const attempts = hub.logs.filter((l) => l.includes("relay refused")).length;
    // Backoff 0.5 s, 1 s, 2 s… (half of each random): at most 4 tries in 1.5 s, not hundreds.
    assert.ok(attempts >= 1 && attempts <= 4, `${attempts} attempts`);
    assert.equal(relay.stats().sessions, 0);
    assert.ok(hub.logs.some((l) => /WARN +relay refused relay=127\.0\.0\.1:\d+ reason="bad token"/.test(l)));
    const all = [...hub.logs, ...relayLogs].join("\n");
    assert.ok(!all.includes(SECRET) && !all.includes("wrong-token-wrong-token"), "no token in any log");
    await relay.close();
    await hub.close();
  });

  test("a relay without a token is told the matcher requires one", async () => {
    const hub = await startHub({ tokens: [SECRET] });
    const relayLogs: string[] = [];
    const relay = hub.relay({}, relayLogs);
    await waitFor(() => relayLogs.some((l) => l.includes("matcher requires a token; set --token or O3SR_TOKEN")));
    assert.ok(relayLogs.some((l) => l.includes("ERROR matcher refused")));
    await relay.close();
    await hub.close();
  });

  test("the token never crosses the wire, and a captured handshake cannot be replayed", async () => {
    const hub = await startHub({ tokens: [SECRET] });
    const wire = await tap(hub.transport, hub.matcher.relayAddr.port);
    const relay = hub.relay({ matcherPort: wire.port, token: SECRET });
    await relay.connected();
    assert.ok(await echoes(hub));
    await relay.close();
    const captured = wire.captured();
    const text = decoder.decode(captured);
    assert.ok(captured.length > 0);
    assert.ok(!text.includes(SECRET), "token not in clear");
    assert.ok(!text.includes(btoa(SECRET)), "token not in base64");
    const auth = frames(captured).find((f) => f.type === FrameType.AUTH);
    assert.ok(auth, "the relay answered a challenge");
    const { proof } = JSON.parse(decoder.decode(auth.payload));
    assert.match(proof, /^[A-Za-z0-9+/]{43}=$/, "an HMAC-SHA256, base64");

    // Replay the captured bytes (HELLO and AUTH) against a new session.
    const raw = await rawRelay(hub.transport, hub.matcher.relayAddr.port);
    await raw.send(helloFrame());
    const hello = JSON.parse(decoder.decode((await raw.next(FrameType.HELLO)).payload));
    assert.equal(typeof hello.auth.nonce, "string");
    await raw.send(encodeFrame(FrameType.AUTH, 0, auth.payload));
    const goAway = await raw.next(FrameType.GOAWAY);
    assert.equal(decoder.decode(goAway.payload), "refused: bad token");
    await waitFor(() => raw.ended, 3000, "matcher to hang up");
    assert.ok(hub.matcher.metrics().includes("o3sr_auth_failures_total 1"));
    wire.close();
    await hub.close();
  });

  test("a relay may not skip the challenge: stream frames before AUTH end the session", async () => {
    const hub = await startHub({ tokens: [SECRET] });
    const raw = await rawRelay(hub.transport, hub.matcher.relayAddr.port);
    await raw.send(helloFrame());
    await raw.next(FrameType.HELLO);
    await raw.send(encodeFrame(FrameType.TRAFFIC, 1, encoder.encode("sneak")));
    const goAway = await raw.next(FrameType.GOAWAY);
    assert.match(decoder.decode(goAway.payload), /before the handshake completed/);
    assert.equal(hub.matcher.stats().relays.length, 0);
    await hub.close();
  });
});

describe("limits", () => {
  test("max relay sessions: the extra relay is refused and says so", async () => {
    const hub = await startHub({ maxRelaySessions: 1 });
    await hub.relay().connected();
    const logs: string[] = [];
    const extra = hub.relay({}, logs);
    await waitFor(() => logs.some((l) => l.includes("matcher refused: too many relay sessions")));
    assert.equal(hub.matcher.stats().relays.length, 1);
    assert.ok(await echoes(hub));
    await extra.close();
    await hub.close();
  });

  test("max clients: a client over the limit is refused; the others are served", async () => {
    const hub = await startHub({ maxClients: 1 });
    await hub.relay().connected();
    const first = await hub.client();
    await first.write(encoder.encode("one"));
    assert.equal(decoder.decode(await readExactly(first, 3)), "one");
    const second = await hub.client();
    await expectCutOff(second, "a client over the limit");
    second.close();
    first.close();
    await waitFor(() => hub.matcher.stats().clientsActive === 0);
    assert.ok(await echoes(hub));
    assert.match(hub.matcher.metrics(), /o3sr_connections_refused_total\{reason="too many clients"\} 1/);
    assert.ok(hub.logs.some((l) => l.includes("client refused") && l.includes("too many clients")));
    await hub.close();
  });

  test("per-address rate: a burst beyond twice the rate is refused", async () => {
    const hub = await startHub({ clientRate: 2 });
    await hub.relay().connected();
    const results: boolean[] = [];
    for (let i = 0; i < 6; i++) results.push(await echoes(hub, `n${i}`));
    assert.deepEqual(results.slice(0, 4), [true, true, true, true], "a burst of 4 is fine");
    assert.ok(results.slice(4).includes(false), "then the rate applies");
    await delay(600);
    assert.ok(await echoes(hub), "tokens refill");
    await hub.close();
  });

  test("client_allow: addresses outside the ranges are refused", async () => {
    const hub = await startHub({ clientAllow: ["10.0.0.0/8", "fd00::/8"] });
    await hub.relay().connected();
    assert.equal(await echoes(hub), false);
    assert.match(hub.matcher.metrics(), /reason="address not allowed"\} 1/);
    await hub.close();
    const open = await startHub({ clientAllow: ["127.0.0.0/8"] });
    await open.relay().connected();
    assert.ok(await echoes(open));
    await open.close();
  });

  test("handshake timeout: a peer that connects and says nothing is closed", async () => {
    const hub = await startHub({ handshakeTimeout: 300 });
    const raw = await rawRelay(hub.transport, hub.matcher.relayAddr.port);
    const started = Date.now();
    await waitFor(() => raw.ended, 3000, "silent peer closed");
    assert.ok(Date.now() - started >= 250);
    assert.ok(
      hub.logs.some((l) => l.includes("relay handshake failed") && l.includes("nothing received within 300ms")),
    );
    await hub.relay().connected();
    assert.ok(await echoes(hub));
    await hub.close();
  });

  test("idle timeout: a stream without traffic is closed; a busy one is not", async () => {
    const hub = await startHub({ idleTimeout: 300 });
    await hub.relay().connected();
    const idle = await hub.client();
    await idle.write(encoder.encode("x"));
    await readExactly(idle, 1);
    const busy = await hub.client();
    for (let i = 0; i < 8; i++) {
      await busy.write(encoder.encode("y"));
      await readExactly(busy, 1);
      await delay(100);
    }
    await expectCutOff(idle, "the idle stream");
    assert.ok(hub.logs.some((l) => l.includes("idle for 300ms")));
    await busy.write(encoder.encode("z"));
    assert.equal(decoder.decode(await readExactly(busy, 1)), "z");
    idle.close();
    busy.close();
    await hub.close();
  });

  test("max frame: a relay sending a frame above the limit loses its session", async () => {
    const hub = await startHub({ maxFrame: 16 * 1024 });
    const raw = await rawRelay(hub.transport, hub.matcher.relayAddr.port);
    await raw.send(helloFrame());
    const hello = JSON.parse(decoder.decode((await raw.next(FrameType.HELLO)).payload));
    assert.equal(hello.maxFrame, 16 * 1024, "the limit is announced");
    await raw.send(encodeFrame(FrameType.PING, 0, new Uint8Array(16 * 1024 + 1)));
    assert.match(decoder.decode((await raw.next(FrameType.GOAWAY)).payload), /limit is 16384/);
    assert.match(hub.matcher.metrics(), /o3sr_frames_rejected_total\{reason="oversize-frame"\} 1/);
    await hub.relay().connected();
    assert.ok(await echoes(hub));
    await hub.close();
  });
});

describe("admin endpoints", () => {
  async function get(port: number, path: string): Promise<{ status: number; type: string; body: string }> {
    const conn = await tcp().connect({ hostname: "127.0.0.1", port });
    await conn.write(encoder.encode(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`));
    const response = decoder.decode(await readAll(conn));
    conn.close();
    const [head, body] = response.split("\r\n\r\n");
    const type = /content-type: ([^\r]+)/i.exec(head)?.[1] ?? "";
    return { status: Number(head.split(" ")[1]), type, body };
  }

  test("/health, /stats and /metrics say what they claim; /health is 503 while draining", async () => {
    const hub = await startHub({ adminPort: 0, tokens: [{ name: "ops", token: SECRET }] });
    const admin = hub.matcher.adminAddr!.port;
    await hub.relay({ token: SECRET }).connected();
    const badLogs: string[] = [];
    const bad = hub.relay({ token: "nope-nope-nope-nope" }, badLogs);
    await waitFor(() => badLogs.some((l) => l.includes("bad token")));
    await bad.close();
    const garbage = await rawRelay(hub.transport, hub.matcher.relayAddr.port);
    await garbage.send(encodeFrame(FrameType.HELLO, 0, encoder.encode("{}"), 1));
    await waitFor(() => garbage.ended);
    assert.ok(await echoes(hub, "abc"));
    const held = await hub.client();
    await held.write(encoder.encode("q"));
    await readExactly(held, 1);

    const health = await get(admin, "/health");
    assert.equal(health.status, 200);
    assert.equal(health.body, "ok\n");

    const stats = await get(admin, "/stats");
    assert.equal(stats.status, 200);
    assert.equal(stats.type, "application/json");
    const parsed = JSON.parse(stats.body);
    assert.equal(parsed.relays.length, 1);
    assert.equal(parsed.relays[0].token, "ops");
    assert.match(parsed.relays[0].address, /^127\.0\.0\.1:\d+$/);
    assert.equal(parsed.relays[0].openStreams, 1);
    assert.ok(parsed.relays[0].bytesSent >= 4 && parsed.relays[0].bytesReceived >= 4);
    assert.equal(parsed.clientsWaiting, 0);
    assert.ok(parsed.uptimeMs > 0);
    assert.ok(parsed.memory.readQueued >= 0 && parsed.memory.readBudget === 64 * 1024 * 1024, "read budget");
    assert.ok(parsed.memory.windowGrowth >= 0 && parsed.memory.windowBudget === 64 * 1024 * 1024, "window budget");
    assert.ok(parsed.memory.piecesHeld >= 0 && parsed.memory.pieceBudget === 32 * 1024 * 1024, "piece budget");

    const metrics = await get(admin, "/metrics");
    assert.equal(metrics.status, 200);
    assert.match(metrics.type, /^text\/plain; version=0\.0\.4/);
    const samples = new Map<string, number>();
    for (const line of metrics.body.trim().split("\n")) {
      if (line.startsWith("#")) {
        assert.match(line, /^# (HELP|TYPE) o3sr_\w+ /);
        continue;
      }
      const match = /^(o3sr_\w+(?:\{[^}]*\})?) (\d+(?:\.\d+)?)$/.exec(line);
      assert.ok(match, `a valid sample line: ${line}`);
      samples.set(match[1], Number(match[2]));
    }
    assert.equal(samples.get("o3sr_relay_sessions"), 1);
    assert.equal(samples.get("o3sr_open_streams"), 1);
    assert.ok(samples.get("o3sr_read_queued_bytes")! >= 0, "read queue gauge");
    assert.ok(samples.get("o3sr_window_growth_bytes")! >= 0, "window growth gauge");
    assert.ok(samples.get("o3sr_read_pieces_bytes")! >= 0, "read pieces gauge");
    assert.equal(samples.get("o3sr_streams_opened_total"), 2);
    assert.equal(samples.get('o3sr_streams_closed_total{outcome="clean"}'), 1);
    assert.equal(samples.get('o3sr_bytes_total{direction="up"}'), 3);
    assert.ok((samples.get("o3sr_auth_failures_total") ?? 0) >= 1);
    assert.equal(samples.get('o3sr_frames_rejected_total{reason="bad-version"}'), 1);

    assert.equal((await get(admin, "/nope")).status, 404);

    const closing = hub.matcher.close(5000);
    await waitFor(() => hub.matcher.stats().draining);
    assert.equal((await get(admin, "/health")).status, 503);
    held.close();
    await closing;
    await hub.close();
  });
});
