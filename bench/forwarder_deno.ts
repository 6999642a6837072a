/**
 * A minimal TCP forwarder for Deno, the counterpart of `forwarder.ts`: socket
 * to socket, no framing, no multiplexing. Each direction reads into one
 * buffer of its own, reused for every read (it starts at 2 KiB, so an idle
 * connection costs little, and doubles up to 1 MiB while reads fill it): as
 * little as a Deno relay can allocate. Two of them in a row are the floor for
 * a two-hop relay on Deno. Bench use only.
 *
 * `deno run --allow-net bench/forwarder_deno.ts --to PORT` listens on a free
 * port and prints `listening on PORT`.
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";

/** The slice of a Deno TCP connection the forwarder uses. */
interface DenoConn {
  read(buffer: Uint8Array): Promise<number | null>;
  write(bytes: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
  setNoDelay(noDelay?: boolean): void;
}

/** The slice of the `Deno` namespace the forwarder uses. */
interface DenoLike {
  listen(options: { hostname: string; port: number }): AsyncIterable<DenoConn> & { addr: { port: number } };
  connect(options: { hostname: string; port: number }): Promise<DenoConn>;
  args: string[];
}

const HOST = "127.0.0.1";
const FIRST_BUFFER = 2 * 1024;
const LARGEST_BUFFER = 1024 * 1024;
const deno = (globalThis as unknown as { Deno: DenoLike }).Deno;

/** Copies `from` into `to` until end of input, then half-closes `to`. */
async function copy(from: DenoConn, to: DenoConn): Promise<void> {
  let buffer = new Uint8Array(FIRST_BUFFER);
  for (;;) {
    const n = await from.read(buffer);
    if (n === null) return to.closeWrite();
    for (let offset = 0; offset < n;) offset += await to.write(buffer.subarray(offset, n));
    if (n === buffer.length && buffer.length < LARGEST_BUFFER) buffer = new Uint8Array(buffer.length * 2);
  }
}

function closeQuietly(conn: DenoConn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

async function forward(client: DenoConn, to: number): Promise<void> {
  let upstream: DenoConn;
  try {
    upstream = await deno.connect({ hostname: HOST, port: to });
  } catch {
    return closeQuietly(client);
  }
  // Deno leaves Nagle on; latency figures need it off, as o3sr has it.
  client.setNoDelay(true);
  upstream.setNoDelay(true);
  await Promise.all([copy(client, upstream), copy(upstream, client)]).catch(() => {});
  closeQuietly(client);
  closeQuietly(upstream);
}

const { values } = parseArgs({ args: deno.args, options: { to: { type: "string" } } });
const to = Number(values.to);
if (!Number.isInteger(to) || to <= 0) {
  console.error("forwarder_deno: --to PORT is required");
  process.exit(2);
}

const listener = deno.listen({ hostname: HOST, port: 0 });
console.log(`listening on ${listener.addr.port}`);
// A failure ends that one connection, never the forwarder.
for await (const client of listener) forward(client, to).catch(() => closeQuietly(client));
