/**
 * Test helpers shared by every suite: the transport of the runtime running the
 * tests, byte generators, hashing and small servers.
 */

import assert from "node:assert/strict";
import { bunTransport } from "../src/transport/bun.ts";
import { denoTransport } from "../src/transport/deno.ts";
import type { Addr, Conn, Listener, Transport } from "../src/transport/types.ts";
import { type Matcher, type MatcherOptions, startMatcher } from "../src/matcher.ts";
import { type Relay, type RelayOptions, startRelay } from "../src/relay.ts";

/** The runtime executing the tests. */
export const runtime: "bun" | "deno" = "Bun" in globalThis ? "bun" : "deno";

/** The real TCP transport of this runtime. */
export function tcp(): Transport {
  return runtime === "bun" ? bunTransport() : denoTransport();
}

/** Deterministic pseudo-random bytes (xorshift), fast enough for hundreds of MiB. */
export function pseudoRandomBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  const words = new Uint32Array(out.buffer, 0, length >>> 2);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  for (let i = words.length * 4; i < length; i++) out[i] = i & 0xff;
  return out;
}

/** Hex SHA-256 of some bytes. */
export async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Incremental hash state: totals bytes and a cheap rolling checksum (for huge transfers). */
export class Tally {
  bytes = 0;
  #a = 1;
  #b = 0;
  add(chunk: Uint8Array): void {
    let a = this.#a, b = this.#b;
    for (let i = 0; i < chunk.length; i++) {
      a = (a + chunk[i]) % 65521;
      b = (b + a) % 65521;
    }
    this.#a = a;
    this.#b = b;
    this.bytes += chunk.length;
  }
  get digest(): string {
    return `${this.bytes}:${((this.#b << 16) | this.#a) >>> 0}`;
  }
}

/** Joins chunks into one buffer. */
export function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/** Reads a connection to its end, returning all bytes. */
export async function readAll(conn: Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for (let chunk = await conn.read(); chunk !== null; chunk = await conn.read()) chunks.push(chunk);
  return concat(chunks);
}

/** Reads exactly `n` bytes, or throws at an early end. Bytes past `n` in the last chunk are dropped. */
export async function readExactly(conn: Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    const chunk = await conn.read();
    if (chunk === null) throw new Error(`connection ended after ${at} of ${n} bytes`);
    out.set(chunk.subarray(0, n - at), at);
    at += Math.min(chunk.length, n - at);
  }
  return out;
}

/** Writes `data` in chunks of `chunkSize`, then half-closes. */
export async function writeAll(conn: Conn, data: Uint8Array, chunkSize = 64 * 1024): Promise<void> {
  for (let at = 0; at < data.length; at += chunkSize) {
    await conn.write(data.subarray(at, Math.min(at + chunkSize, data.length)));
  }
  await conn.closeWrite();
}

/**
 * Connects to `port`, sends `size` pseudo-random bytes (then FIN) and asserts
 * that an echo service behind it sent every byte back unchanged.
 */
export async function assertEchoed(transport: Transport, port: number, size: number, seed: number): Promise<void> {
  const conn = await transport.connect({ hostname: "127.0.0.1", port });
  const data = pseudoRandomBytes(size, seed);
  const [, got] = await Promise.all([writeAll(conn, data), readAll(conn)]);
  conn.close();
  assert.equal(got.length, data.length);
  assert.ok(Buffer.from(got).equals(Buffer.from(data)), "bytes arrive unchanged");
}

/** A server that runs `handle` for each connection until closed. */
export interface TestServer {
  listener: Listener;
  port: number;
  close(): void;
}

/** Starts a server on 127.0.0.1:0. */
export async function serve(transport: Transport, handle: (conn: Conn) => Promise<void> | void): Promise<TestServer> {
  const listener = await transport.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Conn>();
  (async () => {
    for (;;) {
      const conn = await listener.accept().catch(() => null);
      if (conn === null) return;
      conns.add(conn);
      Promise.resolve(handle(conn)).catch(() => conn.reset()).finally(() => conns.delete(conn));
    }
  })();
  return {
    listener,
    port: listener.addr.port,
    close() {
      listener.close();
      for (const conn of conns) conn.reset();
    },
  };
}

/** An echo handler: copies input to output, then half-closes. */
export async function echo(conn: Conn): Promise<void> {
  for (;;) {
    const chunk = await conn.read();
    if (chunk === null) break;
    await conn.write(chunk);
  }
  await conn.closeWrite();
  await conn.closed.catch(() => {});
  conn.close();
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` until true, or throws after `timeoutMs`. */
export async function waitFor(condition: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(10);
  }
}

/** Whether a promise settles within `ms` (answers as soon as it does). */
export function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    const settled = () => {
      clearTimeout(timer);
      resolve(true);
    };
    promise.then(settled, settled);
  });
}

/** The repository root. */
export const repoRoot: string = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(
  /^\/([A-Za-z]:)/,
  "$1",
);

/** Two connected ends over `transport`: the one that dialed and the one accepted. */
export async function connPair(transport: Transport): Promise<{ dialed: Conn; accepted: Conn }> {
  const listener = await transport.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const accepting = listener.accept();
    const dialed = await transport.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    return { dialed, accepted: (await accepting)! };
  } finally {
    listener.close();
  }
}

/** A port that was free a moment ago (bind 0, read it, release it). */
export async function freePort(transport: Transport = tcp()): Promise<number> {
  const listener = await transport.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  await delay(20);
  return port;
}

/**
 * Asserts that `conn` is cut off without further data: a reset on Bun; on
 * Deno, whose sockets cannot send RST, a reset or an immediate clean end.
 */
export async function expectCutOff(conn: Conn, what = "connection cut off"): Promise<void> {
  const outcome = await readAll(conn).then(
    (rest) => rest.length === 0 ? "closed" : `${rest.length} more bytes`,
    () => "reset",
  );
  if (runtime === "bun") {
    if (outcome !== "reset") throw new Error(`${what}: expected a reset, got ${outcome}`);
  } else if (outcome !== "reset" && outcome !== "closed") {
    throw new Error(`${what}: expected a reset or an empty end, got ${outcome}`);
  }
}

/** A matcher on 127.0.0.1 with free relay and client ports; `options` add to or override that. */
export function localMatcher(options: Partial<MatcherOptions> & { transport: Transport }): Promise<Matcher> {
  return startMatcher({ listenHost: "127.0.0.1", relayPort: 0, clientPort: 0, ...options });
}

/** A relay with one session to `matcher`, forwarding to 127.0.0.1:`destPort`; `options` add to or override that. */
export function localRelay(
  matcher: Matcher,
  destPort: number,
  options: Partial<RelayOptions> & { transport: Transport },
): Relay {
  return startRelay({
    matcherHost: "127.0.0.1",
    matcherPort: matcher.relayAddr.port,
    destHost: "127.0.0.1",
    destPort,
    connections: 1,
    ...options,
  });
}

/** A connection that passes everything on to `inner`: test doubles extend it and change how it is read. */
export class WrappedConn implements Conn {
  protected readonly inner: Conn;

  constructor(inner: Conn) {
    this.inner = inner;
  }

  get localAddr(): Addr {
    return this.inner.localAddr;
  }
  get remoteAddr(): Addr {
    return this.inner.remoteAddr;
  }
  get closed(): Promise<void> {
    return this.inner.closed;
  }
  read(): Promise<Uint8Array | null> {
    return this.inner.read();
  }
  write(chunk: Uint8Array): Promise<void> {
    return this.inner.write(chunk);
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
  reset(): void {
    this.inner.reset();
  }
}
