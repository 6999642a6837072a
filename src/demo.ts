/**
 * `o3sr demo`: a matcher, a relay and an echo service on loopback, in one
 * process, so a newcomer sees bytes go through before touching a server.
 *
 * @module
 */

import { type MatcherOptions, startMatcher } from "./matcher.ts";
import { startRelay } from "./relay.ts";
import { formatAddr, type Transport } from "./transport/types.ts";
import type { Logger } from "./log.ts";

/** Options of {@linkcode runDemo}: matcher options plus where to print. */
export interface DemoOptions extends MatcherOptions {
  transport: Transport;
  log: Logger;
  /** Prints the how-to-try-it text. */
  print: (line: string) => void;
}

/** Starts the demo; `close()` stops all three parts. */
export async function runDemo(options: DemoOptions): Promise<{ close(drainTimeout?: number): Promise<void> }> {
  const { transport, log } = options;
  const echo = await startEchoService(transport);
  const matcher = await startMatcher({ ...options, listenHost: "127.0.0.1" });
  const relay = startRelay({
    ...options,
    matcherHost: "127.0.0.1",
    matcherPort: matcher.relayAddr.port,
    destHost: "127.0.0.1",
    destPort: echo.port,
    connections: 1,
    log: log.child({ role: "relay" }),
  });
  await relay.connected();
  const client = formatAddr(matcher.clientAddr);
  options.print(`
o3sr demo: a matcher, a relay and an echo service are running in this process.

  you ──▶ ${client} (matcher client port)
       ──▶ relay (dialed out to ${formatAddr(matcher.relayAddr)})
       ──▶ echo service on 127.0.0.1:${echo.port}

Try it from another terminal; every line you type comes back through the relay:
  nc 127.0.0.1 ${matcher.clientAddr.port}

Press Ctrl-C to stop.
`);
  return {
    async close(drainTimeout = 0) {
      await Promise.all([relay.close(drainTimeout), matcher.close(drainTimeout)]);
      echo.close();
    },
  };
}

/** A TCP echo service on 127.0.0.1 with a free port. */
async function startEchoService(transport: Transport): Promise<{ port: number; close(): void }> {
  const listener = await transport.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for (;;) {
      const conn = await listener.accept().catch(() => null);
      if (conn === null) return;
      (async () => {
        for (let chunk = await conn.read(); chunk !== null; chunk = await conn.read()) await conn.write(chunk);
        await conn.closeWrite();
      })().catch(() => conn.reset());
    }
  })();
  return { port: listener.addr.port, close: () => listener.close() };
}
