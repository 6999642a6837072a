/**
 * Borrowed reads (`Conn.readBorrowed` / `giveBack`): read buffers are reused
 * only once every chunk of them came back; a session that borrows its
 * connection's chunks gives each back only after every stream is done with it;
 * `pipe` only once the chunk was written; `prefixConn` never its prefix.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { pipe, type PipeResult, pipeThen } from "../src/pipe.ts";
import { Session } from "../src/protocol/session.ts";
import type { Stream } from "../src/protocol/stream.ts";
import { memoryTransport } from "../src/transport/memory.ts";
import { Inbound } from "../src/transport/inbound.ts";
import { MAX_READ, ReadBuffers } from "../src/transport/read_buffers.ts";
import { prefixConn } from "../src/transport/websocket.ts";
import type { Conn } from "../src/transport/types.ts";
import {
  concat,
  connPair,
  delay,
  pseudoRandomBytes,
  readAll,
  readExactly,
  tcp,
  waitFor,
  WrappedConn,
  writeAll,
} from "./_helpers.ts";

/** Reads `n` bytes into `buffers` as a socket would, each byte `seed + i`. */
function fakeRead(buffers: ReadBuffers, size: number, n: number, seed: number): Uint8Array {
  const room = buffers.room(size);
  for (let i = 0; i < n; i++) room[i] = (seed + i) & 0xff;
  return buffers.filled(n);
}

function assertIntact(chunk: Uint8Array, seed: number, what: string): void {
  for (let i = 0; i < chunk.length; i++) {
    if (chunk[i] !== ((seed + i) & 0xff)) assert.fail(`${what}: byte ${i} was overwritten`);
  }
}

describe("read buffers", () => {
  test("a chunk given back lets its memory be read into again; one kept or still lent never does", () => {
    const buffers = new ReadBuffers();
    const first = fakeRead(buffers, MAX_READ, 100_000, 1);
    buffers.lend(first);
    buffers.giveBack(first);
    const again = buffers.room(MAX_READ);
    assert.equal(again.buffer, first.buffer, "a buffer whose chunks all came back is read into again");
    assert.equal(again.byteOffset, 0);

    const held: Array<{ chunk: Uint8Array; seed: number; lent: boolean }> = [];
    for (let i = 0; i < 200; i++) {
      const size = i % 7 === 0 ? 4096 : MAX_READ;
      const chunk = fakeRead(buffers, size, 1 + (i * 7919) % Math.min(size, 20_000), i);
      if (i % 3 === 0) {
        buffers.keep(chunk);
        held.push({ chunk, seed: i, lent: false });
      } else {
        buffers.lend(chunk);
        if (i % 3 === 1) held.push({ chunk, seed: i, lent: true });
        else buffers.giveBack(chunk);
      }
      // Give back the oldest lent chunk now and then, out of order with the reads.
      const lent = held.findIndex((entry) => entry.lent);
      if (i % 5 === 0 && lent >= 0) buffers.giveBack(held.splice(lent, 1)[0].chunk);
      for (const entry of held) assertIntact(entry.chunk, entry.seed, `chunk ${entry.seed}`);
    }
  });

  test("a kept chunk's buffer is never read into again, also once reads moved on to another one", () => {
    const buffers = new ReadBuffers();
    const kept = fakeRead(buffers, MAX_READ, 1000, 5);
    const lent = fakeRead(buffers, MAX_READ / 2, 1000, 6);
    buffers.lend(lent);
    fakeRead(buffers, MAX_READ, 10, 7); // no room left: the next buffer
    buffers.keep(kept);
    buffers.giveBack(lent);
    for (let i = 0; i < 40; i++) {
      const chunk = fakeRead(buffers, MAX_READ, MAX_READ, 99);
      buffers.lend(chunk);
      buffers.giveBack(chunk);
    }
    assertIntact(kept, 5, "kept chunk");
  });

  test("bulk reads fill the rest of a buffer, and reads queued back to back reach the reader as one chunk", () => {
    const buffers = new ReadBuffers();
    const queue = new Inbound(MAX_READ, {
      pause() {},
      resume() {},
      delivered: (chunk, borrowed) => borrowed && buffers.lend(chunk),
    });
    const sizes = [160_000, 160_000, 100_000];
    sizes.forEach((n, i) => {
      if (queue.pushJoined(fakeRead(buffers, MAX_READ, n, i * 50))) buffers.joined();
    });
    let taken: Uint8Array | null = null;
    queue.readBorrowedThen((chunk) => taken = chunk, (error) => assert.fail(error));
    assert.ok(taken !== null);
    const chunk: Uint8Array = taken;
    assert.equal(chunk.length, 420_000, "one chunk holds all three reads");
    let at = 0;
    sizes.forEach((n, i) => {
      assertIntact(chunk.subarray(at, at + n), i * 50, `read ${i}`);
      at += n;
    });

    // A fourth read while the joined chunk is lent goes after it in the same buffer, queued apart.
    const fourth = buffers.room(MAX_READ);
    assert.equal(fourth.buffer, chunk.buffer);
    assert.equal(fourth.byteOffset, 420_000);
    assert.equal(fourth.length, MAX_READ - 420_000, "the rest of the buffer, not a new one");

    // Given back as one, the joined chunk frees the buffer: the next read starts at its beginning.
    queue.giveBack(chunk);
    buffers.giveBack(chunk);
    const again = buffers.room(MAX_READ);
    assert.equal(again.buffer, chunk.buffer);
    assert.equal(again.byteOffset, 0, "every chunk of the buffer came back");
  });

  test("a second give-back, or a chunk that was never lent, frees nothing", () => {
    const buffers = new ReadBuffers();
    const a = fakeRead(buffers, MAX_READ, 1000, 10);
    const b = fakeRead(buffers, 4096, 1000, 20);
    buffers.lend(a);
    buffers.lend(b);
    buffers.giveBack(a);
    buffers.giveBack(a);
    buffers.giveBack(new Uint8Array(10));
    buffers.giveBack(b.subarray(0, 10));
    for (let i = 0; i < 50; i++) fakeRead(buffers, MAX_READ, MAX_READ, 99);
    assertIntact(b, 20, "chunk still lent");
  });
});

/**
 * Lends copies of the chunks `inner` reads, like a transport reusing its
 * buffers: a chunk given back is overwritten at once, so anyone who still
 * uses it afterwards sees 0xee instead of the data.
 */
class LendingConn extends WrappedConn {
  readonly #lent = new Set<Uint8Array>();
  givenBack = 0;

  get outstanding(): number {
    return this.#lent.size;
  }

  async readBorrowed(): Promise<Uint8Array | null> {
    const chunk = await this.inner.read();
    if (chunk === null) return null;
    const lent = chunk.slice();
    this.#lent.add(lent);
    return lent;
  }
  giveBack(chunk: Uint8Array): void {
    assert.ok(this.#lent.delete(chunk), "gave back a chunk that was not lent, or gave it back twice");
    chunk.fill(0xee);
    this.givenBack++;
  }
}

/**
 * A dialer session over `dialerConn` and an acceptor over `acceptorConn`, past
 * their handshake; the acceptor accepts every stream and hands it to `onStream`.
 */
async function sessionsOver(
  dialerConn: Conn,
  acceptorConn: Conn,
  onStream: (stream: Stream) => void,
): Promise<{ dialer: Session; close(): void }> {
  const acceptor = new Session(acceptorConn, {
    side: "acceptor",
    heartbeatInterval: 0,
    onStream: (stream) => {
      stream.accept();
      onStream(stream);
    },
  });
  const dialer = new Session(dialerConn, { side: "dialer", heartbeatInterval: 0 });
  const close = () => {
    dialer.close("test over");
    acceptor.close("test over");
  };
  try {
    await Promise.all([dialer.ready, acceptor.ready]);
  } catch (error) {
    close();
    throw error;
  }
  return { dialer, close };
}

/** How the receiving side of each test stream reads. */
type Reader = "borrows" | "keeps" | "stalls, then borrows";

async function consume(stream: Stream, how: Reader): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  if (how === "stalls, then borrows") await delay(300);
  if (how === "keeps") {
    // Held until the end: a kept chunk that shared lent memory would be overwritten by then.
    for (let chunk = await stream.read(); chunk !== null; chunk = await stream.read()) chunks.push(chunk);
    return concat(chunks);
  }
  for (let chunk = await stream.readBorrowed(); chunk !== null; chunk = await stream.readBorrowed()) {
    chunks.push(chunk.slice());
    stream.giveBack(chunk);
  }
  return concat(chunks);
}

describe("a session borrowing its connection's chunks", () => {
  test("gives every chunk back, and only after every stream is done with its bytes", async () => {
    const { dialed: dialerConn, accepted } = await connPair(memoryTransport());
    const lending = new LendingConn(accepted);
    const readers: Reader[] = ["borrows", "keeps", "stalls, then borrows", "borrows", "keeps", "borrows"];
    const received: Array<Promise<Uint8Array>> = [];
    const { dialer, close } = await sessionsOver(
      dialerConn,
      lending,
      (stream) => received.push(consume(stream, readers[received.length])),
    );
    try {
      const sent = readers.map((_, i) => pseudoRandomBytes(1_500_000 + i * 77_777, i + 1));
      await Promise.all(sent.map(async (data, i) => {
        const stream = dialer.openStream();
        // Small and large writes: payloads copied out of a chunk, and payloads lent on.
        await writeAll(stream, data, i % 2 === 0 ? 3_000 : 300_000);
        await stream.closeWrite();
      }));
      const got = await Promise.all(received);
      for (const [i, data] of sent.entries()) {
        assert.equal(got[i].length, data.length, `stream ${i} (${readers[i]}): length`);
        assert.ok(got[i].every((byte, at) => byte === data[at]), `stream ${i} (${readers[i]}): bytes differ`);
      }
      assert.ok(lending.givenBack > 0, "the session never gave a chunk back");
      assert.equal(lending.outstanding, 0, "chunks the session never gave back");
    } finally {
      close();
    }
  });
});

describe("a stream holding several borrowed payloads", () => {
  test("gives each one's chunk back when that payload comes back, in any order, and only then", async () => {
    const { dialed: dialerConn, accepted } = await connPair(memoryTransport());
    const lending = new LendingConn(accepted);
    const streams: Stream[] = [];
    const { dialer, close } = await sessionsOver(dialerConn, lending, (stream) => streams.push(stream));
    try {
      const sent = [1, 2, 3].map((seed) => pseudoRandomBytes(20_000, seed));
      const stream = dialer.openStream();
      for (const data of sent) await stream.write(data);
      // Each payload is a chunk of its own here (the writer sends a large payload apart from its header).
      await waitFor(() => streams.length === 1 && lending.outstanding === 3, 5000, "all three queued");
      const [receiving] = streams;
      // The first lands in the stream's own slot, the others in its map.
      const got = [];
      for (let i = 0; i < 3; i++) got.push((await receiving.readBorrowed())!);
      for (const i of [1, 2, 0]) {
        got.forEach((chunk, j) => {
          if (chunk.length > 0) assert.deepEqual(chunk, sent[j], `payload ${j} intact before ${i} comes back`);
        });
        receiving.giveBack(got[i]);
        got[i] = new Uint8Array(0);
      }
      assert.equal(lending.outstanding, 0, "each payload's chunk given back");
      stream.reset();
    } finally {
      close();
    }
  });
});

describe("pipe", () => {
  test("gives a borrowed chunk back only once the other side has written it", async () => {
    // client -> (lending) -> pipe -> stream -> session -> peer stream
    const client = await connPair(memoryTransport());
    const link = await connPair(memoryTransport());
    const streams: Stream[] = [];
    const { dialer: session, close } = await sessionsOver(link.dialed, link.accepted, (stream) => streams.push(stream));
    try {
      const lending = new LendingConn(client.accepted);
      const piped = pipe(lending, session.openStream());
      const data = pseudoRandomBytes(3_000_000, 7);
      // Large writes: the stream's writer holds payloads this long until they are sent.
      const sending = writeAll(client.dialed, data, 200_000).then(() => client.dialed.closeWrite());
      while (streams.length === 0) await delay(5);
      const [got] = await Promise.all([readAll(streams[0]), sending]);
      assert.equal(got.length, data.length);
      assert.ok(got.every((byte, at) => byte === data[at]), "bytes differ: a chunk was given back before it was sent");
      await streams[0].closeWrite();
      const result = await piped;
      assert.equal(result.error, null);
      assert.equal(lending.outstanding, 0, "chunks the pipe never gave back");
    } finally {
      close();
    }
  });
});

describe("pipe over TCP", () => {
  test("pipeThen copies both ways and calls back once, with the bytes each way", async () => {
    // client <-> a ... pipe ... b <-> server
    const left = await connPair(tcp());
    const right = await connPair(tcp());
    const results: PipeResult[] = [];
    pipeThen(left.accepted, right.dialed, (result) => results.push(result));
    const up = pseudoRandomBytes(700_000, 31);
    const down = pseudoRandomBytes(300_000, 32);
    const sent = writeAll(left.dialed, up).then(() => left.dialed.closeWrite());
    assert.deepEqual(await readExactly(right.accepted, up.length), up);
    await writeAll(right.accepted, down);
    await right.accepted.closeWrite();
    assert.deepEqual(await readAll(left.dialed), down);
    await sent;
    assert.equal(await right.accepted.read(), null, "the client's end reached the server");
    while (results.length === 0) await delay(5);
    await delay(20);
    assert.equal(results.length, 1, "called back once");
    // Bun frees chunks given back: counting one after that counted 0 bytes.
    assert.deepEqual(results[0], { aToB: up.length, bToA: down.length, error: null });
    left.dialed.close();
    right.accepted.close();
  });
});

describe("a connection that replays its first bytes (prefixConn)", () => {
  test("lends what its inner connection lends, and gives back only that", async () => {
    const { dialed, accepted } = await connPair(memoryTransport());
    const lending = new LendingConn(accepted);
    const conn = prefixConn(lending, new Uint8Array([1, 2, 3]));
    await dialed.write(new Uint8Array([4, 5]));
    await dialed.closeWrite();
    assert.ok(conn.readBorrowed && conn.giveBack, "borrowing passed through");
    const first = (await conn.readBorrowed())!;
    assert.deepEqual([...first], [1, 2, 3]);
    conn.giveBack(first); // LendingConn fails on a chunk it did not lend
    const second = (await conn.readBorrowed())!;
    assert.deepEqual([...second], [4, 5]);
    conn.giveBack(second);
    assert.equal(lending.givenBack, 1);
    assert.equal(await conn.readBorrowed(), null);
    conn.close();
    dialed.close();
  });

  test("reads by callback over a lender that only has promise reads", async () => {
    const { dialed, accepted } = await connPair(memoryTransport());
    const lending = new LendingConn(accepted);
    assert.equal("readBorrowedThen" in lending, false);
    const conn = prefixConn(lending, new Uint8Array([1, 2, 3]));
    await dialed.write(new Uint8Array([4, 5]));
    await dialed.closeWrite();
    const next = () => new Promise<Uint8Array | null>((resolve, reject) => conn.readBorrowedThen!(resolve, reject));
    const first = (await next())!;
    assert.deepEqual([...first], [1, 2, 3]);
    conn.giveBack!(first);
    const second = (await next())!;
    assert.deepEqual([...second], [4, 5]);
    conn.giveBack!(second);
    assert.equal(lending.givenBack, 1);
    assert.equal(await next(), null);
    conn.close();
    dialed.close();
  });

  test("reads by callback where its inner connection does: the prefix, then the socket's bytes, then the end", async () => {
    const { dialed, accepted } = await connPair(tcp());
    const conn = prefixConn(accepted, new Uint8Array([1, 2, 3]));
    // The matcher's relay sessions come through here: without this they read in a promise loop.
    assert.ok(conn.readBorrowedThen, "callback reads passed through");
    const sent = pseudoRandomBytes(200_000, 7);
    await writeAll(dialed, sent);
    await dialed.closeWrite();
    const received: Uint8Array[] = [];
    await new Promise<void>((resolve, reject) => {
      const onChunk = (chunk: Uint8Array | null) => {
        if (chunk === null) return resolve();
        received.push(chunk.slice());
        conn.giveBack!(chunk);
        // Asked again after returning, so queued chunks do not recurse.
        queueMicrotask(() => conn.readBorrowedThen!(onChunk, reject));
      };
      conn.readBorrowedThen!(onChunk, reject);
    });
    assert.deepEqual([...received[0]], [1, 2, 3]);
    assert.deepEqual(concat(received.slice(1)), sent);
    conn.close();
    dialed.close();
  });
});
