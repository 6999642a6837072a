/**
 * A minimal TCP forwarder for Bun: socket to socket, no framing, no
 * multiplexing, nothing else. Two of them in a row are the floor any two-hop
 * relay written for Bun (matcher + relay) can reach on this machine, which
 * puts o3sr's figures in proportion. Bench use only.
 *
 * `bun bench/forwarder.ts --to PORT` listens on a free port and prints
 * `listening on PORT`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { bun, type BunSocket } from "./bun_api.ts";

const HOST = "127.0.0.1";
const api = bun();

/** One side of a forwarded connection. */
interface Side {
  peer: BunSocket<Side> | null;
  /** Bytes this side could not take yet. */
  backlog: Uint8Array[];
  /** Bytes for the peer, received before it connected. */
  early: Uint8Array[];
  ended: boolean;
}

const side = (peer: BunSocket<Side> | null): Side => ({ peer, backlog: [], early: [], ended: false });

/** Writes to `to`, keeping what it cannot take and pausing `from` until it drains. */
function forward(from: BunSocket<Side>, to: BunSocket<Side>, chunk: Uint8Array): void {
  if (to.data.backlog.length > 0) {
    to.data.backlog.push(chunk);
    return;
  }
  const written = to.write(chunk);
  if (written < chunk.length) {
    to.data.backlog.push(chunk.subarray(Math.max(written, 0)));
    from.pause();
  }
}

function drain(socket: BunSocket<Side>): void {
  const backlog = socket.data.backlog;
  while (backlog.length > 0) {
    const chunk = backlog[0];
    const written = socket.write(chunk);
    if (written < chunk.length) {
      backlog[0] = chunk.subarray(Math.max(written, 0));
      return;
    }
    backlog.shift();
  }
  socket.data.peer?.resume();
  if (socket.data.peer?.data.ended) socket.shutdown();
}

function end(socket: BunSocket<Side>): void {
  socket.data.ended = true;
  const peer = socket.data.peer;
  if (peer && peer.data.backlog.length === 0) peer.shutdown();
}

const handlers = {
  binaryType: "uint8array" as const,
  data(socket: BunSocket<Side>, chunk: Uint8Array) {
    const peer = socket.data.peer;
    if (peer) forward(socket, peer, chunk);
    else socket.data.early.push(chunk);
  },
  drain,
  end,
  close(socket: BunSocket<Side>) {
    socket.data.peer?.end();
  },
  error() {},
};

const { values } = parseArgs({ options: { to: { type: "string" } } });
const to = Number(values.to);
if (!Number.isInteger(to) || to <= 0) {
  console.error("forwarder: --to PORT is required");
  process.exit(2);
}

const server = api.listen<Side>({
  hostname: HOST,
  port: 0,
  allowHalfOpen: true,
  socket: {
    ...handlers,
    open(client) {
      client.data = side(null);
      api.connect<Side>({
        hostname: HOST,
        port: to,
        allowHalfOpen: true,
        data: side(client),
        socket: {
          ...handlers,
          open(upstream) {
            client.data.peer = upstream;
            for (const chunk of client.data.early) forward(client, upstream, chunk);
            client.data.early = [];
            if (client.data.ended) end(client);
          },
          connectError: () => client.terminate(),
        },
      }).catch(() => client.terminate());
    },
  },
});
console.log(`listening on ${server.port}`);
