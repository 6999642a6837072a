/**
 * The Deno adapter's read-ahead, over a stand-in for `Deno.connect` so it runs
 * under either runtime and can count the socket reads the adapter makes.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type DenoConnLike, type DenoLike, denoTransport } from "../src/transport/deno.ts";
import { MAX_READ } from "../src/transport/read_buffers.ts";
import { delay } from "./_helpers.ts";

/** A socket whose peer sends `total` bytes (byte i is i & 0xff), then its end or `failure`. */
class FakeSocket implements DenoConnLike {
  readonly localAddr = { hostname: "127.0.0.1", port: 1 };
  readonly remoteAddr = { hostname: "127.0.0.1", port: 2 };
  /** Bytes the adapter has taken from the socket. */
  taken = 0;
  reads = 0;

  constructor(readonly total: number, readonly failure?: Error) {}

  async read(buffer: Uint8Array): Promise<number | null> {
    this.reads++;
    await delay(0);
    if (this.taken === this.total) {
      if (this.failure) throw this.failure;
      return null;
    }
    const n = Math.min(buffer.length, this.total - this.taken);
    for (let i = 0; i < n; i++) buffer[i] = (this.taken + i) & 0xff;
    this.taken += n;
    return n;
  }

  write(data: Uint8Array): Promise<number> {
    return Promise.resolve(data.length);
  }
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {}
}

function connectTo(socket: FakeSocket) {
  const deno: DenoLike = {
    listen: () => {
      throw new Error("not used");
    },
    connect: () => Promise.resolve(socket),
  };
  return denoTransport(deno).connect({ hostname: "127.0.0.1", port: 2 });
}

/** Reads until the end, checking every byte is the next one the peer sent. */
async function readInOrder(conn: { read(): Promise<Uint8Array | null> }, from: number): Promise<number> {
  let at = from;
  for (let chunk = await conn.read(); chunk !== null; chunk = await conn.read()) {
    for (const byte of chunk) assert.equal(byte, at++ & 0xff, `byte ${at - 1} out of order`);
  }
  return at;
}

/** Reads past the small first reads (1 KiB, doubling) to the first bulk chunk; returns the bytes read. */
async function readUntilBulk(conn: { read(): Promise<Uint8Array | null> }): Promise<number> {
  let consumed = 0;
  for (let chunk = await conn.read(); chunk !== null; chunk = await conn.read()) {
    consumed += chunk.length;
    if (chunk.length > 16 * 1024) break;
  }
  return consumed;
}

describe("deno adapter: reads ahead of the consumer", () => {
  test("keeps reading bulk data while the consumer is busy, stops at 512 KiB, and goes on once it catches up", async () => {
    const socket = new FakeSocket(8 * 1024 * 1024);
    const conn = await connectTo(socket);
    // Small chunks for an idle reader are read only when asked: that is interactive traffic.
    const consumed = await readUntilBulk(conn);
    for (let waited = 0; waited < 200 && socket.taken < 512 * 1024; waited++) await delay(1);
    await delay(20);
    const ahead = socket.taken - consumed;
    assert.ok(ahead >= 512 * 1024, `only ${ahead} bytes read ahead`);
    // The limit plus one read that was under way.
    assert.ok(ahead <= 512 * 1024 + MAX_READ, `${ahead} bytes read ahead: not bounded`);
    const readsWhenFull = socket.reads;
    await delay(20);
    assert.equal(socket.reads, readsWhenFull, "kept reading with a full queue");
    assert.equal(await readInOrder(conn, consumed), 8 * 1024 * 1024);
    conn.close();
  });

  test("bytes queued before the peer's end or a failure are still read, then the end or the error", async () => {
    const ended = new FakeSocket(300_000);
    const conn = await connectTo(ended);
    const consumed = await readUntilBulk(conn);
    for (let waited = 0; waited < 200 && ended.taken < ended.total; waited++) await delay(1);
    assert.equal(ended.taken, ended.total, "the end was not read ahead");
    await delay(10);
    assert.equal(await readInOrder(conn, consumed), 300_000);
    assert.equal(await conn.read(), null);
    conn.close();

    const broken = new FakeSocket(100_000, Object.assign(new Error("reset"), { name: "ConnectionReset" }));
    const failing = await connectTo(broken);
    let received = 0;
    await assert.rejects(async () => {
      for (let chunk = await failing.read(); chunk !== null; chunk = await failing.read()) received += chunk.length;
    }, /connection reset by peer/);
    assert.equal(received, 100_000);
    failing.close();
  });

  test("a closed connection reads no more", async () => {
    const socket = new FakeSocket(8 * 1024 * 1024);
    const conn = await connectTo(socket);
    await readUntilBulk(conn);
    conn.close();
    const taken = socket.taken;
    await delay(20);
    assert.ok(socket.taken - taken <= MAX_READ, "went on reading after close()");
    await assert.rejects(conn.read());
  });
});
