/**
 * The transport conformance cases, shared by every transport's suite: TCP
 * and memory (transport_test.ts), TLS (tls_test.ts), WebSocket
 * (websocket_test.ts).
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConnectionClosedError, type Transport } from "../src/transport/types.ts";
import {
  concat,
  echo,
  pseudoRandomBytes,
  readAll,
  readExactly,
  serve,
  settlesWithin,
  sha256,
  writeAll,
} from "./_helpers.ts";

/**
 * Registers the conformance cases for one transport.
 *
 * @param name shown in the report
 * @param make a fresh transport per case; its `listen`/`connect` take plain host and port
 */
export function conformance(name: string, make: () => Transport): void {
  describe(`transport conformance: ${name}`, () => {
    test("listen on port 0 reports the real port; echo round trip", async () => {
      const transport = make();
      const server = await serve(transport, echo);
      assert.ok(server.port > 0);
      const conn = await transport.connect({ hostname: "127.0.0.1", port: server.port });
      assert.equal(conn.remoteAddr.port, server.port);
      const data = pseudoRandomBytes(100_000, 7);
      await conn.write(data);
      assert.deepEqual(await readExactly(conn, data.length), data);
      await conn.closeWrite();
      assert.equal(await conn.read(), null);
      conn.close();
      server.close();
    });

    test("closed resolves once the connection is closed, asked before or only after", async () => {
      const transport = make();
      const server = await serve(transport, echo);
      const data = pseudoRandomBytes(1000, 9);
      for (const askFirst of [true, false]) {
        const conn = await transport.connect({ hostname: "127.0.0.1", port: server.port });
        const asked = askFirst ? conn.closed : null;
        await conn.write(data);
        assert.deepEqual(await readExactly(conn, data.length), data);
        conn.close();
        assert.ok(await settlesWithin(asked ?? conn.closed, 3000), `closed asked ${askFirst ? "before" : "after"}`);
      }
      server.close();
    });

    test("readBorrowedThen, where offered: a reader that reads again inside its callback gets every chunk", async () => {
      const transport = make();
      let offered = true;
      const server = await serve(transport, (conn) =>
        new Promise<void>((resolve) => {
          if (conn.readBorrowedThen === undefined || conn.giveBack === undefined) {
            offered = false;
            conn.close();
            return resolve();
          }
          // Echoes each chunk and asks for the next one before returning, as a session's read loop does.
          const onChunk = (chunk: Uint8Array | null): void => {
            if (chunk === null) {
              conn.close();
              return resolve();
            }
            const copy = chunk.slice();
            conn.giveBack!(chunk);
            conn.write(copy).catch(() => {});
            conn.readBorrowedThen!(onChunk, onError);
          };
          const onError = (): void => resolve();
          conn.readBorrowedThen(onChunk, onError);
        }));
      const conn = await transport.connect({ hostname: "127.0.0.1", port: server.port });
      // One small message at a time, each answered before the next: every one is read as it comes.
      for (let i = 0; i < 50 && offered; i++) {
        const message = pseudoRandomBytes(1 + i * 7, i);
        await conn.write(message);
        const echoed = readExactly(conn, message.length);
        assert.ok(await settlesWithin(echoed, 3000) || !offered, `message ${i} was read and echoed`);
        if (offered) assert.deepEqual(await echoed, message);
      }
      conn.close();
      server.close();
    });

    test("half-close: the writer shuts down and still receives the full reply", async () => {
      const transport = make();
      const reply = pseudoRandomBytes(3 * 1024 * 1024, 3);
      const server = await serve(transport, async (conn) => {
        const request = await readAll(conn); // until the client's FIN
        assert.equal(request.length, 5);
        await writeAll(conn, reply);
        conn.close();
      });
      const conn = await transport.connect({ hostname: "127.0.0.1", port: server.port });
      await conn.write(new TextEncoder().encode("hello"));
      await conn.closeWrite();
      const got = await readAll(conn);
      assert.equal(await sha256(got), await sha256(reply));
      conn.close();
      server.close();
    });

    test("write backpressure: writes stall while the peer does not read", async () => {
      const transport = make();
      let release!: () => void;
      const released = new Promise<void>((r) => release = r);
      let received = 0;
      const server = await serve(transport, async (conn) => {
        await released;
        received = (await readAll(conn)).length;
        conn.close();
      });
      const conn = await transport.connect({ hostname: "127.0.0.1", port: server.port });
      const chunk = new Uint8Array(1024 * 1024);
      let written = 0;
      let stalled = false;
      // Loopback kernels buffer a few MiB at most; 256 MiB can never fit.
      while (written < 256 * 1024 * 1024) {
        const write = conn.write(chunk);
        if (!(await settlesWithin(write, 200))) {
          stalled = true;
          release();
          await write;
          written += chunk.length;
          break;
        }
        written += chunk.length;
      }
      assert.ok(stalled, `wrote ${written} bytes without backpressure`);
      await conn.closeWrite();
      assert.equal(await conn.read().catch(() => null), null);
      while (received === 0) await new Promise((r) => setTimeout(r, 10));
      assert.equal(received, written);
      conn.close();
      server.close();
    });

    test("chunks from read() are the caller's: they stay intact while later ones arrive", async () => {
      const transport = make();
      const data = pseudoRandomBytes(8 * 1024 * 1024, 17);
      const server = await serve(transport, async (conn) => {
        await writeAll(conn, data, 256 * 1024);
        conn.close();
      });
      const conn = await transport.connect({ hostname: "127.0.0.1", port: server.port });
      // Hold every chunk until the end, so a transport that reused its buffers would corrupt earlier ones.
      const chunks: Uint8Array[] = [];
      for (let chunk = await conn.read(); chunk !== null; chunk = await conn.read()) chunks.push(chunk);
      conn.close();
      assert.equal(await sha256(concat(chunks)), await sha256(data));
      server.close();
    });

    test("connecting to a closed port fails", async () => {
      const transport = make();
      const server = await serve(transport, echo);
      const port = server.port;
      server.close();
      await assert.rejects(transport.connect({ hostname: "127.0.0.1", port }));
    });

    test("a closed listener accepts nothing more", async () => {
      const transport = make();
      const listener = await transport.listen({ hostname: "127.0.0.1", port: 0 });
      const pending = listener.accept();
      listener.close();
      assert.equal(await pending, null);
      assert.equal(await listener.accept(), null);
    });

    test("reading after close() fails with ConnectionClosedError", async () => {
      const transport = make();
      const server = await serve(transport, echo);
      const conn = await transport.connect({ hostname: "127.0.0.1", port: server.port });
      const pending = conn.read();
      conn.close();
      await assert.rejects(pending, ConnectionClosedError);
      await assert.rejects(conn.write(new Uint8Array(1)), ConnectionClosedError);
      server.close();
    });
  });
}
