/**
 * The receive queue of the callback-driven adapters, and the read budget its
 * queues share: first against a stand-in socket, step by step, then over
 * real loopback sockets with the budget used up.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Inbound, ReadBudget, sharedReadBudget } from "../src/transport/inbound.ts";
import { memoryTransport } from "../src/transport/memory.ts";
import { type Conn, ConnectionClosedError } from "../src/transport/types.ts";
import { testCerts } from "./_certs.ts";
import {
  connPair,
  delay,
  pseudoRandomBytes,
  readAll,
  runtime,
  settlesWithin,
  tcp,
  waitFor,
  writeAll,
} from "./_helpers.ts";

/** A stand-in socket: records whether it was asked to pause. */
class Flow {
  paused = false;
  pauses = 0;
  pause(): void {
    this.paused = true;
    this.pauses++;
  }
  resume(): void {
    this.paused = false;
  }
}

async function readUntilBulk(conn: Conn): Promise<void> {
  for (let chunk = await conn.read(); chunk !== null && chunk.length <= 16 * 1024; chunk = await conn.read());
}

function queue(highWater: number, budget: ReadBudget | null = null) {
  const flow = new Flow();
  return { flow, inbound: new Inbound(highWater, flow, budget) };
}

describe("inbound queue and its read budget", () => {
  test("under the budget only the high-water mark pauses, and half of it resumes", async () => {
    const { flow, inbound } = queue(100, new ReadBudget(1000));
    inbound.push(new Uint8Array(60));
    assert.equal(flow.paused, false);
    inbound.push(new Uint8Array(60));
    assert.equal(flow.paused, true, "120 bytes queued, the mark is 100");
    await inbound.read();
    assert.equal(flow.paused, true, "60 left: above half the mark");
    await inbound.read();
    assert.equal(flow.paused, false);
  });

  test("over the budget a socket pauses after each chunk and reads again only when its reader asks", async () => {
    const budget = new ReadBudget(100);
    const stalled = queue(1000, budget);
    stalled.inbound.push(new Uint8Array(150)); // nobody reads it
    assert.equal(budget.exceeded, true);
    assert.equal(stalled.flow.paused, true, "queued past the budget: paused below its own mark");

    const active = queue(1000, budget);
    const reading = active.inbound.read();
    active.inbound.push(new Uint8Array(10));
    assert.equal((await reading)!.length, 10);
    assert.equal(active.flow.paused, true, "delivered a chunk over budget: paused until asked");
    const next = active.inbound.read();
    assert.equal(active.flow.paused, false, "its reader asked: reading again");
    active.inbound.push(new Uint8Array(20));
    assert.equal((await next)!.length, 20);

    await stalled.inbound.read();
    assert.equal(budget.queued, 0);
    assert.equal(stalled.flow.paused, false, "drained: reading again");
  });

  test("lends only the chunks readBorrowed handed out, and takes each back once", async () => {
    const { inbound } = queue(1000);
    const [queuedLent, queuedKept, awaitedLent, awaitedKept] = [1, 2, 3, 4].map((n) => new Uint8Array(n));
    inbound.push(queuedLent);
    inbound.push(queuedKept);
    assert.equal(await inbound.readBorrowed(), queuedLent);
    assert.equal(await inbound.read(), queuedKept);
    const borrowing = inbound.readBorrowed();
    inbound.push(awaitedLent);
    assert.equal(await borrowing, awaitedLent);
    const keeping = inbound.read();
    inbound.push(awaitedKept);
    assert.equal(await keeping, awaitedKept);

    assert.equal(inbound.giveBack(queuedKept), false, "a chunk from read() is its reader's");
    assert.equal(
      inbound.giveBack(awaitedKept),
      false,
      "a reader waiting in read() after a borrowing one keeps its chunk",
    );
    assert.equal(inbound.giveBack(queuedLent), true);
    assert.equal(inbound.giveBack(awaitedLent), true);
    assert.equal(inbound.giveBack(queuedLent), false, "a second give-back");
  });

  test("readBorrowedThen calls back at once with what is there, later with what arrives, then the end or the failure", () => {
    const got: Array<Uint8Array | null | Error> = [];
    const onChunk = (chunk: Uint8Array | null) => got.push(chunk);
    const onError = (error: Error) => got.push(error);
    const { inbound } = queue(1000);
    const [queued, later] = [new Uint8Array(1), new Uint8Array(2)];
    inbound.push(queued);
    inbound.readBorrowedThen(onChunk, onError);
    assert.deepEqual(got, [queued], "a queued chunk comes before the call returns");
    inbound.readBorrowedThen(onChunk, onError);
    assert.equal(got.length, 1, "nothing queued: the reader waits");
    assert.equal(inbound.waiting, true);
    inbound.push(later);
    assert.equal(got[1], later);
    assert.equal(inbound.waiting, false);
    assert.equal(inbound.giveBack(queued), true, "lent");
    assert.equal(inbound.giveBack(later), true, "lent");
    inbound.readBorrowedThen(onChunk, onError);
    inbound.end();
    assert.equal(got[2], null, "the end");
    inbound.readBorrowedThen(onChunk, onError);
    assert.equal(got[3], null, "and again after it");

    const failing = queue(1000).inbound;
    failing.readBorrowedThen(onChunk, onError);
    failing.fail("connection reset by peer");
    assert.ok(got[4] instanceof ConnectionClosedError);
    assert.match(got[4].message, /connection reset by peer/);
    assert.equal(got.length, 5, "each read called back once");
  });

  test("a reader called back that closes its connection is not paused afterwards, even over the budget", () => {
    const budget = new ReadBudget(10);
    const { flow, inbound } = queue(1000, budget);
    const other = queue(1000, budget).inbound;
    other.push(new Uint8Array(100)); // the budget is used up
    let got: Uint8Array | null = null;
    inbound.readBorrowedThen((chunk) => {
      got = chunk;
      inbound.closeLocally();
    }, assert.fail);
    inbound.push(new Uint8Array(5));
    assert.equal(got!.length, 5);
    assert.equal(flow.pauses, 0, "a closed connection's socket is left alone");
    other.closeLocally();
  });

  test("closing a queue gives its bytes back to the budget", () => {
    const budget = new ReadBudget(100);
    const { inbound } = queue(1000, budget);
    inbound.push(new Uint8Array(150));
    inbound.closeLocally();
    assert.equal(budget.queued, 0);
    assert.equal(budget.exceeded, false);
  });

  test(
    "with the shared budget used up by readers that stopped, a reader that keeps asking still gets every byte",
    async () => {
      const transport = tcp();
      const accepted: Conn[] = [];
      let stalling = true;
      const listener = await transport.listen({ hostname: "127.0.0.1", port: 0 });
      void (async () => {
        for (let conn = await listener.accept(); conn !== null; conn = await listener.accept()) {
          accepted.push(conn);
          // Reads until bulk data flows (so adapters read ahead), then stops, as a relay does when its destination stalls.
          if (stalling) void readUntilBulk(conn).catch(() => {});
        }
      })();
      const port = listener.addr.port;
      const start = sharedReadBudget.queued;
      const clients: Conn[] = [];
      try {
        // Uploaders whose server side never reads, until their queues pass the budget.
        const blob = new Uint8Array(2 * 1024 * 1024);
        for (let i = 0; i < 200 && !sharedReadBudget.exceeded; i++) {
          const client = await transport.connect({ hostname: "127.0.0.1", port });
          clients.push(client);
          void client.write(blob).catch(() => {});
          if (i % 16 === 15) await delay(20);
        }
        await waitFor(() => sharedReadBudget.exceeded, 10_000, "the shared budget used up");

        stalling = false;
        const data = pseudoRandomBytes(8 * 1024 * 1024, 41);
        const client = await transport.connect({ hostname: "127.0.0.1", port });
        clients.push(client);
        await waitFor(() => accepted.length === clients.length, 5000, "last connection accepted");
        const server = accepted[accepted.length - 1];
        const transfer = Promise.all([readAll(server), writeAll(client, data, 256 * 1024)]);
        assert.ok(await settlesWithin(transfer, 10_000), "the transfer stalled: the reader was never served");
        const [received] = await transfer;
        assert.equal(received.length, data.length);
        assert.ok(received.every((byte, i) => byte === data[i]), "bytes differ");
        assert.equal(sharedReadBudget.exceeded, true, "the budget stayed used up throughout");
      } finally {
        listener.close();
        for (const conn of [...clients, ...accepted]) conn.close();
      }
      // At most what was queued before: connections an earlier test left may have closed meanwhile.
      assert.ok(sharedReadBudget.queued <= start, "closed connections gave their queued bytes back");
    },
  );
});

describe("Bun sockets lending their chunks", () => {
  test(
    "a large chunk given back is freed at once; a small one, or one read to keep, is left as it was",
    { skip: runtime !== "bun" && "Deno connections reuse lent memory instead (see borrow_test)" },
    async () => {
      const { dialed: client, accepted: server } = await connPair(tcp());
      try {
        assert.ok(server.readBorrowed && server.giveBack, "Bun connections lend their chunks");
        const large = pseudoRandomBytes(256 * 1024, 5);
        await client.write(large);
        let freed = 0;
        for (let received = 0; received < large.length;) {
          const lent: Uint8Array = (await server.readBorrowed())!;
          received += lent.length;
          const length = lent.length;
          server.giveBack(lent);
          if (length >= 16 * 1024) {
            assert.equal(lent.length, 0, "its memory was released (the view is detached)");
            freed++;
          } else assert.equal(lent.length, length, "a small chunk is left to the collector");
        }
        assert.ok(freed > 0, "no chunk of 256 KiB was large enough to free");

        await client.write(new Uint8Array([1, 2, 3]));
        const small = (await server.readBorrowed())!;
        server.giveBack(small);
        assert.deepEqual(small, new Uint8Array([1, 2, 3]), "a small chunk is left to the collector");

        await client.write(large);
        const kept = (await server.read())!;
        const copy = kept.slice();
        server.giveBack(kept);
        assert.deepEqual(kept, copy, "a chunk that was not lent stays as it was");
      } finally {
        client.close();
        server.close();
      }
    },
  );
});

describe("node:tls connections (the Deno build's TLS)", () => {
  test("queue their decrypted bytes under the shared read budget, and give them back as they are read", async () => {
    const nodeTls = await import("node:tls");
    const { acceptNodeTls, serverContext, startNodeTls } = await import("../src/transport/node_tls.ts");
    const certs = testCerts();
    const transport = memoryTransport();
    const listener = await transport.listen({ hostname: "127.0.0.1", port: 0 });
    const accepting = listener.accept();
    const rawClient = await transport.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const context = serverContext(nodeTls as never, { cert: certs.serverCert, key: certs.serverKey });
    const [server, client] = await Promise.all([
      accepting.then((raw) => acceptNodeTls(nodeTls as never, raw!, context)),
      startNodeTls(nodeTls as never, rawClient, {
        hostname: "localhost",
        port: listener.addr.port,
        tls: { ca: certs.caCert },
      }),
    ]);
    listener.close();
    try {
      const before = sharedReadBudget.queued;
      const data = pseudoRandomBytes(1024 * 1024, 3);
      const sending = writeAll(client, data).then(() => client.closeWrite());
      // Nobody reads yet: the server's queue fills to its high-water mark, counted in the budget.
      await waitFor(
        () => sharedReadBudget.queued - before >= 128 * 1024,
        5000,
        "decrypted bytes counted in the budget",
      );
      const got = await readAll(server);
      await sending;
      assert.ok(got.every((byte, i) => byte === data[i]) && got.length === data.length, "bytes differ");
      assert.equal(sharedReadBudget.queued, before, "read bytes were given back to the budget");
    } finally {
      client.close();
      server.close();
    }
  });
});
