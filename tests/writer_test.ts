import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { FrameDecoder } from "../src/protocol/codec.ts";
import { type Frame, FrameType } from "../src/protocol/frame.ts";
import { COPY_LIMIT, FrameWriter } from "../src/protocol/writer.ts";
import type { Conn } from "../src/transport/types.ts";
import { concat, pseudoRandomBytes } from "./_helpers.ts";

/** A connection that records each write and resolves it only when told to. */
class HeldConn implements Partial<Conn> {
  writes: Uint8Array[] = [];
  #release: Array<() => void> = [];
  fail: Error | null = null;

  write(chunk: Uint8Array): Promise<void> {
    if (this.fail) return Promise.reject(this.fail);
    this.writes.push(chunk);
    return new Promise((resolve) => this.#release.push(resolve));
  }

  /** Completes every write so far, and the ones they lead to, until none is waiting. */
  async releaseAll(): Promise<void> {
    for (let round = 0; round < 100; round++) {
      await new Promise((resolve) => setTimeout(resolve, 0));
      const waiting = this.#release.splice(0);
      if (waiting.length === 0) return;
      for (const resolve of waiting) resolve();
    }
  }

  /** Completes the oldest write. */
  async releaseOne(): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, 0));
    this.#release.shift()?.();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

function decodeAll(bytes: Uint8Array): Frame[] {
  const frames: Frame[] = [];
  const decoder = new FrameDecoder((frame) => frames.push({ ...frame, payload: frame.payload.slice() }));
  decoder.push(bytes);
  return frames;
}

function newWriter(conn: HeldConn, errors: unknown[] = []): FrameWriter {
  return new FrameWriter(conn as unknown as Conn, 256 * 1024, (error) => errors.push(error));
}

describe("FrameWriter", () => {
  test("small and large frames go out in the order queued, large payloads without a copy", async () => {
    const conn = new HeldConn();
    const writer = newWriter(conn);
    const small = pseudoRandomBytes(100, 1);
    const large = pseudoRandomBytes(COPY_LIMIT, 2);
    const larger = pseudoRandomBytes(300 * 1024, 3);
    writer.frame(FrameType.TRAFFIC, 1, small);
    writer.frame(FrameType.TRAFFIC, 1, large);
    writer.frameUint32(FrameType.WINDOW, 3, 4096);
    writer.frame(FrameType.TRAFFIC, 3, larger);
    writer.frame(FrameType.FIN, 1);
    await conn.releaseAll();

    const frames = decodeAll(concat(conn.writes));
    assert.deepEqual(frames.map((frame) => [frame.type, frame.streamId, frame.payload.length]), [
      [FrameType.TRAFFIC, 1, 100],
      [FrameType.TRAFFIC, 1, COPY_LIMIT],
      [FrameType.WINDOW, 3, 4],
      [FrameType.TRAFFIC, 3, 300 * 1024],
      [FrameType.FIN, 1, 0],
    ]);
    assert.deepEqual(frames[0].payload, small);
    assert.deepEqual(frames[1].payload, large);
    assert.deepEqual(frames[3].payload, larger);
    // The large payloads reached the connection as the caller's own buffers.
    assert.ok(conn.writes.includes(large));
    assert.ok(conn.writes.includes(larger));
    assert.ok(!conn.writes.includes(small));
    assert.equal(writer.pending, 0);
  });

  test("written() waits until a payload kept by reference was handed over", async () => {
    const conn = new HeldConn();
    const writer = newWriter(conn);
    const payload = pseudoRandomBytes(64 * 1024, 4);
    const position = writer.frame(FrameType.TRAFFIC, 1, payload);
    let done = false;
    writer.written(position).then(() => done = true);
    await conn.releaseOne(); // the header
    assert.equal(done, false, "resolved before the payload was written");
    assert.equal(conn.writes.at(-1), payload);
    await conn.releaseOne(); // the payload
    assert.equal(done, true);
    await writer.flushed();
  });

  test("a burst of small frames shares one write", async () => {
    const conn = new HeldConn();
    const writer = newWriter(conn);
    for (let i = 0; i < 1000; i++) writer.frame(FrameType.TRAFFIC, 1, pseudoRandomBytes(64, i + 1));
    await conn.releaseAll();
    assert.equal(conn.writes.length, 1);
    assert.equal(decodeAll(conn.writes[0]).length, 1000);
  });

  test("writers given frames in the same tick each write theirs, and again after going idle", async () => {
    const conns = [new HeldConn(), new HeldConn(), new HeldConn()];
    const writers = conns.map((conn) => newWriter(conn));
    for (let round = 1; round <= 2; round++) {
      writers.forEach((writer, i) => writer.frame(FrameType.TRAFFIC, 1 + 2 * i, pseudoRandomBytes(50, 10 * round + i)));
      for (const conn of conns) await conn.releaseAll();
      conns.forEach((conn, i) => {
        assert.equal(conn.writes.length, round, `writer ${i}, round ${round}`);
        const [frame] = decodeAll(conn.writes[round - 1]);
        assert.equal(frame.streamId, 1 + 2 * i);
        assert.deepEqual(frame.payload, pseudoRandomBytes(50, 10 * round + i));
      });
    }
  });

  test("a buffer an idle writer lets go serves another writer only once its write completed", async () => {
    const [a, b, c] = [new HeldConn(), new HeldConn(), new HeldConn()];
    const [writerA, writerB, writerC] = [newWriter(a), newWriter(b), newWriter(c)];
    const payload = (seed: number) => pseudoRandomBytes(200, seed);
    writerA.frame(FrameType.TRAFFIC, 1, payload(1));
    await new Promise((resolve) => setTimeout(resolve, 0)); // A's write is out, and held
    for (let i = 0; i < 5; i++) {
      // B goes idle after every message, letting its buffer go each time.
      writerB.frame(FrameType.TRAFFIC, 3, payload(10 + i));
      await b.releaseAll();
    }
    assert.deepEqual(decodeAll(a.writes[0])[0].payload, payload(1), "A's held write intact");
    await a.releaseAll();
    writerC.frame(FrameType.TRAFFIC, 5, payload(20));
    await c.releaseAll();
    assert.deepEqual(decodeAll(c.writes[0])[0].payload, payload(20));
    assert.equal(b.writes.length, 5);
  });

  test("both buffers start small and grow without losing or reordering a byte", async () => {
    const conn = new HeldConn();
    const writer = newWriter(conn);
    const sent: Uint8Array[] = [];
    const queue = (count: number) => {
      for (let i = 0; i < count; i++) {
        const payload = pseudoRandomBytes(1 + (sent.length * 37) % 3000, sent.length + 1);
        sent.push(payload);
        writer.frame(FrameType.TRAFFIC, 1, payload);
      }
    };
    queue(100); // fills and grows the first buffer
    await new Promise((resolve) => setTimeout(resolve, 0));
    queue(200); // while that write is held: the other buffer grows
    await conn.releaseAll();
    assert.equal(conn.writes.length, 2);
    assert.deepEqual(decodeAll(concat(conn.writes)).map((frame) => frame.payload), sent);
    assert.equal(writer.pending, 0);
  });

  test("a write that fails after others, or throws at once, is reported once and ends the writer", async () => {
    const conn = new HeldConn();
    const errors: unknown[] = [];
    const writer = newWriter(conn, errors);
    writer.frame(FrameType.TRAFFIC, 1, pseudoRandomBytes(100, 1));
    await conn.releaseAll();
    const position = writer.frame(FrameType.TRAFFIC, 1, pseudoRandomBytes(COPY_LIMIT * 2, 2));
    conn.fail = new Error("connection reset");
    await writer.written(position);
    assert.deepEqual(errors.map((error) => (error as Error).message), ["connection reset"]);
    assert.equal(conn.writes.length, 1, "nothing written after the failure");

    const throwing = {
      write: () => {
        throw new Error("socket gone");
      },
    };
    const thrownErrors: unknown[] = [];
    const other = new FrameWriter(throwing as unknown as Conn, 256 * 1024, (error) => thrownErrors.push(error));
    other.frame(FrameType.TRAFFIC, 3, pseudoRandomBytes(10, 3));
    await other.flushed();
    other.frame(FrameType.FIN, 3);
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.deepEqual(thrownErrors.map((error) => (error as Error).message), ["socket gone"]);
  });

  test("a failed write is reported once, and waiters are released", async () => {
    const conn = new HeldConn();
    const errors: unknown[] = [];
    const writer = newWriter(conn, errors);
    conn.fail = new Error("broken pipe");
    const position = writer.frame(FrameType.TRAFFIC, 1, pseudoRandomBytes(COPY_LIMIT * 2, 5));
    writer.frame(FrameType.TRAFFIC, 1, pseudoRandomBytes(10, 6));
    await writer.written(position);
    await writer.flushed();
    await writer.drained();
    assert.equal(errors.length, 1);
    assert.equal((errors[0] as Error).message, "broken pipe");
    writer.frame(FrameType.FIN, 1); // dropped, no second report
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.equal(errors.length, 1);
  });
});
