import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { acceptInBackground } from "../src/transport/accept.ts";
import { memoryTransport } from "../src/transport/memory.ts";
import type { Addr, Conn, Transport } from "../src/transport/types.ts";
import { conformance } from "./_conformance.ts";
import { delay, runtime, settlesWithin, tcp } from "./_helpers.ts";

const transports: Array<[string, () => Transport]> = [[`tcp (${runtime})`, tcp], ["memory", memoryTransport]];

for (const [name, make] of transports) conformance(name, make);

describe("acceptInBackground: handshakes off the accept loop", () => {
  // Each raw connection's first byte says what its handshake does: "h" hangs, "f" fails, else it succeeds.
  async function handshake(conn: Conn): Promise<Conn> {
    const first = await conn.read();
    if (first === null) throw new Error("peer left during the handshake");
    if (first[0] === 0x66) throw new Error("bad handshake");
    if (first[0] === 0x68) await new Promise(() => {});
    return conn;
  }

  async function setup(timeout = 5000) {
    const transport = memoryTransport();
    const errors: Array<[string, Addr]> = [];
    const inner = await transport.listen({ hostname: "127.0.0.1", port: 0 });
    const listener = acceptInBackground(inner, handshake, {
      what: "test",
      timeout,
      onHandshakeError: (error, remote) => errors.push([error.message, remote]),
    });
    const dial = async (first: string) => {
      const conn = await transport.connect({ hostname: "127.0.0.1", port: listener.addr.port });
      await conn.write(new TextEncoder().encode(first));
      return conn;
    };
    return { listener, errors, dial };
  }

  test("a hanging handshake does not delay the next connection", async () => {
    const { listener, dial } = await setup();
    const silent = await dial("h");
    const good = await dial("g");
    const accepted = listener.accept();
    assert.ok(await settlesWithin(accepted, 1000), "accept() waited for the hanging handshake");
    assert.equal((await accepted)!.remoteAddr.port, good.localAddr.port);
    listener.close();
    silent.close();
    good.close();
  });

  test("a failed handshake drops that connection, reports it, and accepting goes on", async () => {
    const { listener, errors, dial } = await setup();
    const bad = await dial("f");
    const good = await dial("g");
    const conn = await listener.accept();
    assert.equal(conn!.remoteAddr.port, good.localAddr.port);
    while (errors.length === 0) await delay(5);
    assert.equal(errors[0][0], "bad handshake");
    assert.equal(errors[0][1].port, bad.localAddr.port);
    await assert.rejects(bad.read());
    listener.close();
    good.close();
  });

  test("a handshake that takes too long is reset and reported", async () => {
    const { listener, errors, dial } = await setup(100);
    const silent = await dial("h");
    while (errors.length === 0) await delay(5);
    assert.match(errors[0][0], /test handshake from .* did not complete within 100 ms/);
    await assert.rejects(silent.read());
    listener.close();
  });

  test("close() ends accept() and resets connections still in their handshake", async () => {
    const { listener, errors, dial } = await setup();
    const pending = listener.accept();
    const silent = await dial("h");
    await delay(20);
    listener.close();
    assert.equal(await pending, null);
    assert.equal(await listener.accept(), null);
    await assert.rejects(silent.read());
    assert.equal(errors.length, 0, "a closed listener reports nothing");
  });
});
