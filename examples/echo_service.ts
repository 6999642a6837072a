/**
 * An echo service served in-process by a relay: no destination socket, the
 * relay hands each client stream to a function.
 *
 *   bun examples/echo_service.ts            (or: deno run -A examples/echo_service.ts)
 *   then: nc 127.0.0.1 <printed port>
 *
 * Point `matcherHost` at a real matcher to serve it from behind NAT.
 */

import { startMatcher, startRelay } from "../mod.ts";

const matcher = await startMatcher({ listenHost: "127.0.0.1", relayPort: 0, clientPort: 0 });
const relay = startRelay({
  matcherHost: "127.0.0.1",
  matcherPort: matcher.relayAddr.port,
  // Web streams: whatever a client sends comes straight back.
  handler: (stream) => stream.readable.pipeTo(stream.writable),
});
relay.addEventListener("stream-open", (event) => {
  console.log(`client ${(event as CustomEvent).detail.client} connected`);
});
await relay.connected();
console.log(`echo service ready: nc 127.0.0.1 ${matcher.clientAddr.port}  (Ctrl-C stops)`);

await new Promise<void>((resolve) => {
  // Both runtimes raise SIGINT through node:process as well as their own APIs.
  import("node:process").then(({ default: process }) => process.once("SIGINT", () => resolve()));
});
await relay.close();
await matcher.close();
