import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { memoryTransport } from "../src/transport/memory.ts";
import type { Addr, Conn } from "../src/transport/types.ts";
import {
  acceptKey,
  applyMask,
  encodeFrame,
  parseWebSocketUrl,
  sniffWebSocket,
  type WebSocketConn,
  WebSocketHandshakeError,
  WebSocketProtocolError,
  wsAccept,
  wsConnect,
  wsTransport,
} from "../src/transport/websocket.ts";
import { conformance } from "./_conformance.ts";
import { testCerts, withOptions, withTls } from "./_certs.ts";
import {
  delay,
  echo,
  pseudoRandomBytes,
  readAll,
  repoRoot,
  runtime,
  serve,
  sha256,
  tcp,
  waitFor,
  writeAll,
} from "./_helpers.ts";

const certs = testCerts();
const text = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const PATH = "/o3sr";

conformance(`websocket over tcp (${runtime})`, () => wsTransport(tcp(), { path: PATH }));
conformance("websocket over memory", () => wsTransport(memoryTransport(), { path: PATH }));
conformance(
  `websocket over tls (${runtime}), wss`,
  () =>
    wsTransport(
      withTls(tcp(), { cert: certs.serverCert, key: certs.serverKey }, { ca: certs.caCert, serverName: "localhost" }),
      {
        path: PATH,
      },
    ),
);

// ---- A hand-rolled client, to send what a well-behaved one never would ----

/** Reads an HTTP head; returns it and what came after. */
async function readHead(conn: Conn): Promise<{ head: string; rest: Uint8Array }> {
  let buffer = new Uint8Array(0);
  for (;;) {
    const end = decode(buffer).indexOf("\r\n\r\n");
    if (end >= 0) return { head: decode(buffer.subarray(0, end)), rest: buffer.slice(end + 4) };
    const chunk = await conn.read();
    if (chunk === null) return { head: decode(buffer), rest: new Uint8Array(0) };
    const joined = new Uint8Array(buffer.length + chunk.length);
    joined.set(buffer);
    joined.set(chunk, buffer.length);
    buffer = joined;
  }
}

const KEY = "dGhlIHNhbXBsZSBub25jZQ==";

function upgradeRequest(extra = "", { method = "GET", path = PATH, version = "13", key = KEY } = {}): string {
  return `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    (key ? `Sec-WebSocket-Key: ${key}\r\n` : "") + (version ? `Sec-WebSocket-Version: ${version}\r\n` : "") + extra +
    "\r\n";
}

type Frame = { fin: boolean; opcode: number; payload: Uint8Array };

/** Parses the server's (unmasked) frames out of a byte stream. */
class FrameReader {
  #buffer: Uint8Array;
  constructor(readonly conn: Conn, leftover: Uint8Array) {
    this.#buffer = leftover;
  }
  async next(): Promise<Frame | null> {
    for (;;) {
      const frame = this.#parse();
      if (frame) return frame;
      const chunk = await this.conn.read().catch(() => null);
      if (chunk === null) return null;
      const joined = new Uint8Array(this.#buffer.length + chunk.length);
      joined.set(this.#buffer);
      joined.set(chunk, this.#buffer.length);
      this.#buffer = joined;
    }
  }
  #parse(): Frame | null {
    const b = this.#buffer;
    if (b.length < 2) return null;
    assert.equal(b[1] & 0x80, 0, "server frames must not be masked");
    let length = b[1] & 0x7f;
    let at = 2;
    if (length === 126) {
      if (b.length < 4) return null;
      length = (b[2] << 8) | b[3];
      at = 4;
    } else if (length === 127) {
      if (b.length < 10) return null;
      length = Number(new DataView(b.buffer, b.byteOffset + 2, 8).getBigUint64(0));
      at = 10;
    }
    if (b.length < at + length) return null;
    this.#buffer = b.slice(at + length);
    return { fin: (b[0] & 0x80) !== 0, opcode: b[0] & 0x0f, payload: b.slice(at, at + length) };
  }
}

/** Connects raw TCP to `port`, upgrades by hand, and returns the raw conn and a reader of the server's frames. */
async function rawClient(port: number): Promise<{ conn: Conn; frames: FrameReader }> {
  const conn = await tcp().connect({ hostname: "127.0.0.1", port });
  await conn.write(text(upgradeRequest()));
  const { head, rest } = await readHead(conn);
  assert.match(head, /^HTTP\/1\.1 101 /);
  assert.match(
    head,
    new RegExp(`\r\nSec-WebSocket-Accept: ${(await acceptKey(KEY)).replace(/[+/]/g, "\\$&")}(\r\n|$)`, "i"),
  );
  return { conn, frames: new FrameReader(conn, rest) };
}

/** Masked client frame bytes. */
function clientFrame(fin: boolean, opcode: number, payload: Uint8Array): Uint8Array {
  const parts = encodeFrame(fin, opcode, payload, true);
  assert.equal(parts.length, 1);
  return parts[0];
}

/** A WebSocket server on real TCP whose handler sees each upgraded connection; failures are collected. */
async function wsServer(handle: (ws: WebSocketConn) => Promise<void>) {
  const errors: Error[] = [];
  const server = await serve(tcp(), async (conn) => {
    let ws: WebSocketConn;
    try {
      ws = await wsAccept(conn, null, { path: PATH });
    } catch (error) {
      errors.push(error as Error);
      return;
    }
    await handle(ws).catch((error) => {
      errors.push(error);
      ws.close();
    });
  });
  return { ...server, errors };
}

describe(`websocket (${runtime}): data`, () => {
  test("8 MiB echo over TCP arrives byte-exact", async () => {
    const transport = wsTransport(tcp(), { path: PATH });
    const server = await serve(transport, echo);
    const conn = await transport.connect({ hostname: "127.0.0.1", port: server.port });
    const data = pseudoRandomBytes(8 * 1024 * 1024, 11);
    // 3 MiB writes: each goes out as a message of 1 MiB fragments.
    const [, got] = await Promise.all([writeAll(conn, data, 3 * 1024 * 1024), readAll(conn)]);
    assert.equal(got.length, data.length);
    assert.equal(await sha256(got), await sha256(data));
    conn.close();
    server.close();
  });

  test("a fragmented message with a ping between its fragments, sent one byte per write", async () => {
    const server = await wsServer(echo);
    const { conn, frames } = await rawClient(server.port);
    const message = pseudoRandomBytes(70_000, 5);
    const bytes = [
      clientFrame(false, 0x2, message.subarray(0, 10)),
      clientFrame(true, 0x9, text("are you there")),
      clientFrame(false, 0x0, message.subarray(10, 40_000)),
      clientFrame(true, 0x0, message.subarray(40_000)),
    ];
    // Headers and payloads split at every byte boundary of the first frames; the rest in bulk.
    for (const b of bytes.slice(0, 2)) for (let i = 0; i < b.length; i++) await conn.write(b.subarray(i, i + 1));
    for (const b of bytes.slice(2)) await conn.write(b);
    const echoed: Uint8Array[] = [];
    let total = 0;
    let pong: Uint8Array | null = null;
    while (total < message.length || pong === null) {
      const frame = await frames.next();
      assert.ok(frame, "connection ended early");
      if (frame.opcode === 0xa) pong = frame.payload;
      else {
        assert.ok(frame.opcode === 0x2 || frame.opcode === 0x0, `unexpected opcode ${frame.opcode}`);
        echoed.push(frame.payload);
        total += frame.payload.length;
      }
    }
    assert.equal(decode(pong), "are you there");
    assert.equal(await sha256(await readAll(chunksConn(echoed))), await sha256(message));
    conn.close();
    server.close();
  });

  test("ping() resolves when the pong comes back", async () => {
    const transport = wsTransport(tcp(), { path: PATH });
    const server = await serve(transport, echo);
    const conn = (await transport.connect({ hostname: "127.0.0.1", port: server.port })) as WebSocketConn;
    const reading = readAll(conn);
    await conn.ping(text("one"));
    await conn.ping();
    await conn.closeWrite();
    assert.equal((await reading).length, 0);
    conn.close();
    server.close();
  });

  test("ws:// and wss:// URLs say where to dial", () => {
    assert.deepEqual(parseWebSocketUrl("ws://hub.example.com/o3sr"), {
      hostname: "hub.example.com",
      port: 80,
      path: "/o3sr",
      tls: false,
    });
    assert.deepEqual(parseWebSocketUrl("wss://hub.example.com:8443/a?b=c"), {
      hostname: "hub.example.com",
      port: 8443,
      path: "/a?b=c",
      tls: true,
    });
    assert.deepEqual(parseWebSocketUrl("wss://[::1]"), { hostname: "::1", port: 443, path: "/", tls: true });
    assert.throws(() => parseWebSocketUrl("http://x/"), /not a WebSocket URL/);
    assert.throws(() => parseWebSocketUrl("ws://u:p@x/"), /credentials/);
    assert.throws(() => parseWebSocketUrl("hub:6543"), /not a WebSocket URL|not a URL/);
  });

  test("masking by words matches masking byte by byte, at every alignment and phase", () => {
    const key = new Uint8Array([0x12, 0x34, 0x56, 0x78]);
    for (const length of [0, 1, 3, 4, 5, 17, 64, 1001]) {
      for (let offset = 0; offset < 4; offset++) {
        for (let phase = 0; phase < 4; phase++) {
          const backing = pseudoRandomBytes(length + 8, length + offset);
          const data = backing.subarray(offset, offset + length);
          const expected = data.map((b, i) => b ^ key[(phase + i) & 3]);
          applyMask(data, key, phase);
          assert.deepEqual(data, expected, `length ${length}, offset ${offset}, phase ${phase}`);
        }
        // A client frame's payload, unmasked with the key it carries, is what was sent.
        const payload = pseudoRandomBytes(length + 4, 3).subarray(offset, offset + length);
        const [frame] = encodeFrame(true, 0x2, payload, true);
        const start = frame.length - length;
        const body = frame.slice(start);
        applyMask(body, frame.subarray(start - 4, start));
        assert.deepEqual(body, payload, `encoded length ${length}, offset ${offset}`);
      }
    }
  });
});

describe(`websocket (${runtime}): closing`, () => {
  test("close handshake: each side's Close frame ends the other's input, and data still flows the other way", async () => {
    let serverSawEnd = false;
    const server = await wsServer(async (ws) => {
      assert.equal(decode(await readAll(ws)), "request");
      serverSawEnd = true;
      await writeAll(ws, text("reply after the client's close"));
      await ws.closed;
    });
    const client = await wsConnect(await tcp().connect({ hostname: "127.0.0.1", port: server.port }), {
      host: "127.0.0.1",
      path: PATH,
    });
    await client.write(text("request"));
    await client.closeWrite();
    await assert.rejects(client.write(text("more")), /write after close/);
    assert.equal(decode(await readAll(client)), "reply after the client's close");
    assert.ok(serverSawEnd);
    await client.closed;
    await waitFor(() => server.errors.length === 0);
    server.close();
  });

  test("a Close frame with an error status makes read() fail with that status", async () => {
    const server = await wsServer(async (ws) => {
      await ws.read();
    });
    const { conn, frames } = await rawClient(server.port);
    await conn.write(clientFrame(true, 0x8, new Uint8Array([0x03, 0xf3, ...text("bye")]))); // 1011
    const frame = await frames.next();
    assert.equal(frame?.opcode, 0x8);
    await waitFor(() => server.errors.length > 0);
    assert.ok(server.errors[0] instanceof WebSocketProtocolError);
    assert.match(server.errors[0].message, /status 1011 \(bye\)/);
    conn.close();
    server.close();
  });

  for (
    const [name, frame, code] of [
      ["a text frame", clientFrame(true, 0x1, text("hello")), 1003],
      ["an unmasked frame", encodeFrame(true, 0x2, text("hello"), false)[0], 1002],
      ["a frame with a reserved bit", Uint8Array.of(0xc2, 0x80, 0, 0, 0, 0), 1002],
      ["a frame over 16 MiB", Uint8Array.of(0x82, 0xff, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x01, 1, 2, 3, 4), 1009],
      ["a continuation outside a message", clientFrame(true, 0x0, text("x")), 1002],
      ["an unknown opcode", clientFrame(true, 0x3, text("x")), 1002],
      ["a fragmented ping", clientFrame(false, 0x9, text("x")), 1002],
    ] as const
  ) {
    test(`${name} closes the connection with status ${code}`, async () => {
      const server = await wsServer(async (ws) => {
        await readAll(ws);
      });
      const { conn, frames } = await rawClient(server.port);
      await conn.write(frame);
      const close = await frames.next();
      assert.equal(close?.opcode, 0x8, "expected a Close frame");
      assert.equal((close!.payload[0] << 8) | close!.payload[1], code);
      assert.equal(await frames.next(), null, "the server did not close the connection");
      await waitFor(() => server.errors.length > 0);
      assert.ok(server.errors[0] instanceof WebSocketProtocolError);
      assert.equal((server.errors[0] as WebSocketProtocolError).code, code);
      conn.close();
      server.close();
    });
  }

  test("a connection that ends without a Close frame is an error, not an end", async () => {
    const server = await wsServer(async (ws) => {
      await readAll(ws);
    });
    const { conn } = await rawClient(server.port);
    await conn.write(clientFrame(true, 0x2, text("partial")));
    await conn.closeWrite();
    await waitFor(() => server.errors.length > 0);
    assert.match(server.errors[0].message, /ended without a Close frame/);
    conn.close();
    server.close();
  });
});

describe(`websocket (${runtime}): the upgrade`, () => {
  const bad: Array<[string, string, number, RegExp]> = [
    ["no Sec-WebSocket-Key", upgradeRequest("", { key: "" }), 400, /Sec-WebSocket-Key is missing/],
    ["a key that is not 16 bytes", upgradeRequest("", { key: "c2hvcnQ=" }), 400, /not 16 bytes/],
    ["two keys", upgradeRequest(`Sec-WebSocket-Key: ${KEY}\r\n`), 400, /appears more than once/],
    ["version 8", upgradeRequest("", { version: "8" }), 426, /Sec-WebSocket-Version "8" is not supported/],
    ["no version", upgradeRequest("", { version: "" }), 426, /Sec-WebSocket-Version is missing/],
    ["POST", upgradeRequest("", { method: "POST" }), 405, /method POST is not allowed/],
    ["another path", upgradeRequest("", { path: "/elsewhere" }), 404, /no WebSocket endpoint at \/elsewhere/],
    [
      "no Upgrade header",
      `GET ${PATH} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      400,
      /Upgrade: websocket is missing/,
    ],
    [
      "no Host header",
      `GET ${PATH} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      400,
      /Host header is missing/,
    ],
    ["HTTP/1.0", upgradeRequest().replace("HTTP/1.1", "HTTP/1.0"), 400, /needs HTTP\/1.1/],
    ["a folded header", upgradeRequest("X-Folded: a\r\n  b\r\n"), 400, /malformed header/],
    ["a head over 8 KiB", upgradeRequest(`X-Big: ${"a".repeat(9000)}\r\n`), 431, /over the limit/],
    ["garbage", "\x16\x03\x01\x02\x00\r\n\r\n", 400, /malformed request line/],
  ];

  for (const [name, request, status, message] of bad) {
    test(`a request with ${name} gets ${status} and is dropped; the listener goes on`, async () => {
      const errors: Array<[Error, Addr]> = [];
      const transport = withOptions(wsTransport(tcp(), { path: PATH }), {
        onHandshakeError: (e, a) => errors.push([e, a]),
      }, {});
      const server = await serve(transport, echo);
      const raw = await tcp().connect({ hostname: "127.0.0.1", port: server.port });
      await raw.write(text(request));
      const response = decode(await readAll(raw));
      assert.match(response, new RegExp(`^HTTP/1\\.1 ${status} `));
      if (status === 426) assert.match(response, /\r\nSec-WebSocket-Version: 13\r\n/);
      if (status === 405) assert.match(response, /\r\nAllow: GET\r\n/);
      await waitFor(() => errors.length > 0);
      assert.ok(errors[0][0] instanceof WebSocketHandshakeError);
      assert.equal((errors[0][0] as WebSocketHandshakeError).status, status);
      assert.match(errors[0][0].message, message);
      assert.equal(errors[0][1].port, raw.localAddr.port);
      raw.close();
      // A good client is still served.
      const conn = await transport.connect({ hostname: "127.0.0.1", port: server.port });
      await writeAll(conn, text("still here"));
      assert.equal(decode(await readAll(conn)), "still here");
      conn.close();
      server.close();
    });
  }

  test("the client refuses an answer other than 101, saying what came instead", async () => {
    const server = await serve(tcp(), async (conn) => {
      await readHead(conn);
      await conn.write(text("HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nno such ws"));
      conn.close();
    });
    const conn = await tcp().connect({ hostname: "127.0.0.1", port: server.port });
    await assert.rejects(
      wsConnect(conn, { host: "127.0.0.1", path: "/nope" }),
      (error: Error) =>
        error instanceof WebSocketHandshakeError && error.status === 404 &&
        /answered 404 Not Found \(no such ws\) instead of 101; check the path/.test(error.message),
    );
    server.close();
  });

  test("the client refuses a 101 whose Sec-WebSocket-Accept does not match its key", async () => {
    const server = await serve(tcp(), async (conn) => {
      await readHead(conn);
      await conn.write(
        text(
          `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${await acceptKey(
            KEY,
          )}\r\n\r\n`,
        ),
      );
      await conn.closed;
    });
    const conn = await tcp().connect({ hostname: "127.0.0.1", port: server.port });
    await assert.rejects(wsConnect(conn, { host: "127.0.0.1", path: PATH }), /Sec-WebSocket-Accept does not match/);
    server.close();
  });

  test("a silent client does not hold up the next upgrade, and is dropped after the timeout", async () => {
    const errors: Error[] = [];
    const transport = withOptions(wsTransport(tcp(), { path: PATH, handshakeTimeout: 300 }), {
      onHandshakeError: (e) => errors.push(e),
    }, {});
    const listener = await transport.listen({ hostname: "127.0.0.1", port: 0 });
    const silent = await tcp().connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const accepted = listener.accept();
    const client = await transport.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const conn = (await accepted)!;
    await client.write(text("hi"));
    assert.equal(decode((await conn.read())!), "hi");
    await waitFor(() => errors.length > 0, 3000);
    assert.match(errors[0].message, /WebSocket handshake from .* did not complete within 300 ms/);
    assert.equal(await silent.read().catch(() => null), null);
    for (const c of [silent, client, conn]) c.close();
    listener.close();
  });
});

describe(`websocket (${runtime}): one port for WebSocket and raw o3sr`, () => {
  test("sniffWebSocket tells an upgrade request from an o3sr HELLO", async () => {
    const server = await serve(tcp(), async (raw) => {
      const sniffed = await sniffWebSocket(raw);
      const conn = sniffed.kind === "websocket" ? await wsAccept(sniffed.conn, null, { path: PATH }) : sniffed.conn;
      const got = await readAll(conn);
      await writeAll(conn, text(`${sniffed.kind}:${got.length}:${got[3]}`));
      await conn.closed;
    });
    // Raw: an o3sr frame header, version 2 big-endian.
    const raw = await tcp().connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(raw, Uint8Array.of(0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0));
    assert.equal(decode(await readAll(raw)), "raw:16:2");
    raw.close();
    // WebSocket, its request split so the first read holds a single byte.
    const tcpConn = await tcp().connect({ hostname: "127.0.0.1", port: server.port });
    const splitting: Conn = {
      closed: tcpConn.closed,
      localAddr: tcpConn.localAddr,
      remoteAddr: tcpConn.remoteAddr,
      read: () => tcpConn.read(),
      write: async (chunk) => {
        if (chunk[0] === 0x47) { // "G": the request line
          await tcpConn.write(chunk.subarray(0, 1));
          await delay(30);
          await tcpConn.write(chunk.subarray(1));
        } else await tcpConn.write(chunk);
      },
      closeWrite: () => tcpConn.closeWrite(),
      close: () => tcpConn.close(),
      reset: () => tcpConn.reset(),
    };
    const ws = await wsConnect(splitting, { host: "127.0.0.1", path: PATH });
    await writeAll(ws, Uint8Array.of(9, 9, 9, 7));
    assert.equal(decode(await readAll(ws)), "websocket:4:7");
    ws.close();
    server.close();
  });
});

describe(`websocket (${runtime}): wss`, () => {
  const listenTls = { cert: certs.serverCert, key: certs.serverKey };

  test("wss with the test CA carries 1 MiB both ways", async () => {
    const transport = wsTransport(withTls(tcp(), listenTls, { ca: certs.caCert }), { path: PATH });
    const server = await serve(transport, echo);
    const conn = await transport.connect({ hostname: "127.0.0.1", port: server.port });
    const data = pseudoRandomBytes(1024 * 1024, 2);
    const [, got] = await Promise.all([writeAll(conn, data), readAll(conn)]);
    assert.equal(await sha256(got), await sha256(data));
    conn.close();
    server.close();
  });

  test("a client on the other runtime talks wss to this one (child process)", async () => {
    const other = runtime === "deno" ? "bun" : "deno";
    const transport = wsTransport(withTls(tcp(), listenTls, {}), { path: PATH });
    const server = await serve(transport, echo);
    const dir = mkdtempSync(join(tmpdir(), "o3sr-ws-"));
    try {
      const src = (file: string) => JSON.stringify(new URL(`../src/transport/${file}`, import.meta.url).href);
      writeFileSync(
        join(dir, "client.ts"),
        `import { ${other}Transport } from ${src(`${other}.ts`)};
import { wsTransport } from ${src("websocket.ts")};
const ca = ${JSON.stringify(certs.caCert)};
const conn = await wsTransport(${other}Transport(), { path: ${JSON.stringify(PATH)} })
  .connect({ hostname: "127.0.0.1", port: ${server.port}, tls: { ca, serverName: "localhost" } });
const data = new Uint8Array(3 * 1024 * 1024).map((_, i) => (i * 7) & 0xff);
const sending = (async () => { await conn.write(data); await conn.closeWrite(); })();
let total = 0, sum = 0;
for (let c = await conn.read(); c !== null; c = await conn.read()) { total += c.length; for (const b of c) sum = (sum + b) % 65521; }
await sending;
conn.close();
console.log(total, sum);
`,
      );
      const args = other === "deno" ? ["run", "-A", join(dir, "client.ts")] : [join(dir, "client.ts")];
      const stdout = await new Promise<string>((resolve, reject) => {
        execFile(join(repoRoot, "node_modules", ".bin", other), args, { timeout: 20_000 }, (error, stdout, stderr) => {
          if (error) reject(new Error(`${other} client failed: ${error.message}\n${stderr}`));
          else resolve(String(stdout));
        });
      });
      let sum = 0;
      for (let i = 0; i < 3 * 1024 * 1024; i++) sum = (sum + ((i * 7) & 0xff)) % 65521;
      assert.equal(stdout.trim(), `${3 * 1024 * 1024} ${sum}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      server.close();
    }
  });

  test("wss refuses a server whose certificate another CA signed", async () => {
    const transport = wsTransport(withTls(tcp(), listenTls, { ca: certs.otherCaCert }), { path: PATH });
    const server = await serve(transport, echo);
    await assert.rejects(
      transport.connect({ hostname: "127.0.0.1", port: server.port }),
      /TLS handshake with 127\.0\.0\.1:\d+ failed/,
    );
    server.close();
  });
});

/** A Conn that reads the given chunks, then ends. */
function chunksConn(chunks: Uint8Array[]): Conn {
  let i = 0;
  const addr = { hostname: "", port: 0 };
  return {
    localAddr: addr,
    remoteAddr: addr,
    read: () => Promise.resolve(i < chunks.length ? chunks[i++] : null),
    write: () => Promise.resolve(),
    closeWrite: () => Promise.resolve(),
    close() {},
    reset() {},
    closed: Promise.resolve(),
  };
}
