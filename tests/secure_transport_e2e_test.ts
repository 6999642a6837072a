/**
 * Matcher and relay over TLS and over WebSocket (ws and wss): full transfers
 * checked with sha256, verification by CA and by pinned fingerprint, and a
 * wrong pin refused.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import { createLogger } from "../src/log.ts";
import type { Matcher } from "../src/matcher.ts";
import { type RelayOptions, startRelay } from "../src/relay.ts";
import { fingerprintOfPem } from "../src/transport/tls.ts";
import { testCerts } from "./_certs.ts";
import {
  echo,
  localMatcher,
  localRelay,
  pseudoRandomBytes,
  readAll,
  serve,
  tcp,
  waitFor,
  writeAll,
} from "./_helpers.ts";

const transport = tcp();
const certs = testCerts();

async function transfer(matcher: Matcher, size = 16 * 1024 * 1024): Promise<void> {
  const conn = await transport.connect({ hostname: "127.0.0.1", port: matcher.clientAddr.port });
  const data = pseudoRandomBytes(size, 42);
  const [, echoed] = await Promise.all([writeAll(conn, data, 256 * 1024), readAll(conn)]);
  conn.close();
  const digest = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
  assert.equal(echoed.length, data.length);
  assert.equal(digest(echoed), digest(data));
}

async function setup(relayOptions: Partial<RelayOptions>, matcherTls: "ca" | "self-signed" | null = "ca") {
  const dest = await serve(transport, echo);
  const logs: string[] = [];
  const matcher = await localMatcher({
    transport,
    tls: matcherTls === "ca"
      ? { cert: certs.serverCert, key: certs.serverKey }
      : matcherTls === "self-signed"
      ? { cert: certs.selfSignedCert, key: certs.selfSignedKey }
      : null,
    log: createLogger({ level: "debug", write: (line) => logs.push(line) }),
  });
  const relayLogs: string[] = [];
  const relay = localRelay(matcher, dest.port, {
    transport,
    connections: 1,
    reconnectMax: 1000,
    log: createLogger({ level: "debug", write: (line) => relayLogs.push(line) }),
    ...relayOptions,
  });
  return {
    matcher,
    relay,
    logs,
    relayLogs,
    async close() {
      await relay.close();
      await matcher.close();
      dest.close();
    },
  };
}

describe("matcher and relay over TLS and WebSocket", () => {
  test("TLS verified by a test CA: 16 MiB each way, sha256-exact; the matcher logs its pin", async () => {
    const hub = await setup({ tls: { ca: certs.caCert } });
    await hub.relay.connected();
    await transfer(hub.matcher);
    const pin = await fingerprintOfPem(certs.serverCert);
    assert.ok(hub.logs.some((l) => l.includes("relay port certificate") && l.includes(pin)));
    await hub.close();
  });

  test("TLS with a pinned fingerprint: a self-signed matcher certificate, as openssl prints the pin", async () => {
    const hub = await setup({ tls: { fingerprint: certs.selfSignedFingerprint } }, "self-signed");
    await hub.relay.connected();
    await transfer(hub.matcher, 1024 * 1024);
    await hub.close();
  });

  test("a wrong pin or an untrusted CA is refused, and the relay says why", async () => {
    const wrongPin = "sha256:" + "00".repeat(32);
    for (const tls of [{ fingerprint: wrongPin }, { ca: certs.otherCaCert }]) {
      const hub = await setup({ tls });
      await waitFor(() => hub.relayLogs.some((l) => l.includes("matcher unreachable")), 5000, "refusal");
      const line = hub.relayLogs.find((l) => l.includes("matcher unreachable"))!;
      assert.match(line, tls.fingerprint ? /fingerprint|pin/i : /certificate|verify|trust/i);
      assert.equal(hub.matcher.stats().relays.length, 0);
      await hub.close();
    }
  });

  test("WebSocket on the relay port (ws://): raw and WebSocket relays share one port", async () => {
    const hub = await setup({}, null);
    await hub.relay.connected();
    const wsRelayDest = await serve(transport, echo);
    const wsRelay = startRelay({
      transport,
      matcherUrl: `ws://127.0.0.1:${hub.matcher.relayAddr.port}/o3sr`,
      destHost: "127.0.0.1",
      destPort: wsRelayDest.port,
      connections: 1,
    });
    await wsRelay.connected();
    assert.equal(hub.matcher.stats().relays.length, 2);
    await hub.relay.close();
    await waitFor(() => hub.matcher.stats().relays.length === 1);
    await transfer(hub.matcher, 8 * 1024 * 1024); // now only through the WebSocket relay
    await wsRelay.close();
    wsRelayDest.close();
    await hub.close();
  });

  test("wss:// with the test CA", async () => {
    // The URL needs the port, known only once the matcher listens, so no setup() here.
    const dest = await serve(transport, echo);
    const matcher = await localMatcher({
      transport,
      tls: { cert: certs.serverCert, key: certs.serverKey },
    });
    const relay = startRelay({
      transport,
      matcherUrl: `wss://localhost:${matcher.relayAddr.port}/`,
      tls: { ca: certs.caCert },
      destHost: "127.0.0.1",
      destPort: dest.port,
      connections: 1,
    });
    await relay.connected();
    await transfer(matcher);
    await relay.close();
    await matcher.close();
    dest.close();
  });
});
