import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { EMPTY, encodeFrame, FrameDecoder, writeHeader } from "../src/protocol/codec.ts";
import { ProtocolError, type ProtocolErrorCode, StreamResetError } from "../src/protocol/errors.ts";
import { type Frame, FrameType, MAX_PAYLOAD, MAX_WINDOW } from "../src/protocol/frame.ts";
import { Session, SESSION_DEFAULTS, type SessionOptions } from "../src/protocol/session.ts";
import type { Stream } from "../src/protocol/stream.ts";
import { INITIAL_WINDOW, WindowBudget } from "../src/protocol/window.ts";
import { memoryTransport } from "../src/transport/memory.ts";
import { type Conn, ConnectionClosedError, type Transport } from "../src/transport/types.ts";
import {
  concat,
  delay,
  pseudoRandomBytes,
  readAll,
  readExactly,
  runtime,
  settlesWithin,
  tcp,
  waitFor,
  WrappedConn,
  writeAll,
} from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---- Plumbing ----

/** Everything a test opened, closed when it ends however it ends. */
class Scope {
  readonly #sessions: Session[] = [];
  readonly #conns: Conn[] = [];

  session(conn: Conn, options: SessionOptions): Session {
    // Heartbeats off unless a test asks: no timers outliving a test.
    const session = new Session(conn, { heartbeatInterval: 0, ...options });
    this.#sessions.push(session);
    return session;
  }

  conn<T extends Conn>(conn: T): T {
    this.#conns.push(conn);
    return conn;
  }

  dispose(): void {
    for (const session of this.#sessions) session.close("test over");
    for (const conn of this.#conns) conn.reset();
  }
}

function scoped(fn: (scope: Scope) => Promise<void>): () => Promise<void> {
  return async () => {
    const scope = new Scope();
    try {
      await fn(scope);
    } finally {
      scope.dispose();
    }
  };
}

/** Rejects if `promise` does not settle within `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A connected pair of conns: dialed and accepted. */
async function connPair(
  scope: Scope,
  transport: Transport,
): Promise<{ dialer: Conn; acceptor: Conn }> {
  const listener = await transport.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const accepting = listener.accept();
    const dialer = scope.conn(
      await transport.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    );
    const acceptor = await within(accepting, 5000, "accept");
    assert.ok(acceptor, "listener closed before accepting");
    return { dialer, acceptor: scope.conn(acceptor) };
  } finally {
    listener.close();
  }
}

type SideOptions = Omit<SessionOptions, "side">;

interface PairOptions {
  transport?: Transport;
  dialer?: SideOptions;
  acceptor?: SideOptions;
}

/** Two sessions over a fresh connection; by default each side echoes streams the other opens. */
async function sessionPair(scope: Scope, options: PairOptions = {}) {
  const conns = await connPair(scope, options.transport ?? memoryTransport());
  const dialer = scope.session(conns.dialer, {
    onStream: echoStream,
    ...options.dialer,
    side: "dialer",
  });
  const acceptor = scope.session(conns.acceptor, {
    onStream: echoStream,
    ...options.acceptor,
    side: "acceptor",
  });
  return { dialer, acceptor };
}

async function readyPair(scope: Scope, options: PairOptions = {}) {
  const pair = await sessionPair(scope, options);
  await within(Promise.all([pair.dialer.ready, pair.acceptor.ready]), 5000, "handshake");
  return pair;
}

/** Copies a stream back to itself, then half-closes. */
async function echoStream(stream: Stream): Promise<void> {
  try {
    for (;;) {
      const chunk = await stream.read();
      if (chunk === null) break;
      await stream.write(chunk);
    }
    await stream.closeWrite();
  } catch {
    stream.reset("echo failed");
  }
}

/** Sends `data` (then FIN) while reading everything back. */
async function roundTrip(
  stream: Stream,
  data: Uint8Array,
  chunkSize = 50_000,
): Promise<Uint8Array> {
  const [, received] = await Promise.all([writeAll(stream, data, chunkSize), readAll(stream)]);
  return received;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  assert.ok(sameBytes(actual, expected), `${what}: bytes differ`);
}

function json(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

/** Marks `promise` as handled, so that a test failing early leaks no unhandled rejection. */
function guard<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => {});
  return promise;
}

/** Reads until the stream fails; returns the error (or null at a clean end). */
async function readUntilError(stream: Stream): Promise<unknown> {
  try {
    for (let i = 0; i < 10_000; i++) {
      if (await stream.read() === null) return null;
    }
  } catch (error) {
    return error;
  }
  throw new Error("stream kept delivering data");
}

/** Tracks the largest value of `sample()` until stopped. */
function sampleMax(sample: () => number): { stop(): number } {
  let max = sample();
  const timer = setInterval(() => max = Math.max(max, sample()), 1);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(max, sample());
    },
  };
}

/**
 * The far end of a session played by hand: writes raw frames and decodes what
 * the session sends.
 */
class RawPeer {
  readonly frames: Frame[] = [];
  ended = false;
  endError: unknown = null;
  /** Answer PINGs, as a live session would. */
  autoPong = false;
  readonly #decoder = new FrameDecoder((frame) => {
    const copy = { ...frame, payload: frame.payload.slice() };
    this.frames.push(copy);
    if (this.autoPong && frame.type === FrameType.PING) {
      this.conn.write(encodeFrame(FrameType.PONG, 0, copy.payload)).catch(() => {});
    }
  });

  constructor(readonly conn: Conn) {
    this.#loop();
  }

  async #loop(): Promise<void> {
    try {
      for (;;) {
        const chunk = await this.conn.read();
        if (chunk === null) break;
        this.#decoder.push(chunk);
      }
    } catch (error) {
      this.endError = error;
    } finally {
      this.ended = true;
    }
  }

  send(...frames: Uint8Array[]): Promise<void> {
    const total = frames.reduce((n, f) => n + f.length, 0);
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const frame of frames) {
      bytes.set(frame, at);
      at += frame.length;
    }
    return this.conn.write(bytes);
  }

  /** Waits for a frame matching `match` that arrived at or after index `from`. */
  async expect(what: string, match: (frame: Frame) => boolean, from = 0): Promise<Frame> {
    let found: Frame | undefined;
    await waitFor(() => (found = this.frames.slice(from).find(match)) !== undefined, 3000, what);
    return found!;
  }

  ofType(type: number): Frame[] {
    return this.frames.filter((frame) => frame.type === type);
  }
}

/** A session over a memory connection whose other end is a {@linkcode RawPeer}. */
async function rawPair(
  scope: Scope,
  options: SessionOptions,
  transport: Transport = memoryTransport(),
) {
  const conns = await connPair(scope, transport);
  const sessionConn = options.side === "acceptor" ? conns.acceptor : conns.dialer;
  const peerConn = options.side === "acceptor" ? conns.dialer : conns.acceptor;
  const session = scope.session(sessionConn, options);
  return { session, peer: new RawPeer(peerConn) };
}

/** Completes the handshake by hand, whichever side the raw peer plays. */
async function rawHandshake(session: Session, peer: RawPeer, window = 1024 * 1024): Promise<void> {
  const hello = encodeFrame(FrameType.HELLO, 0, json({ window, role: "raw" }));
  await peer.send(hello);
  await within(session.ready, 3000, "session ready");
  await peer.expect("the session's HELLO", (f) => f.type === FrameType.HELLO);
}

/** A frame header claiming `length` payload bytes, with none following. */
function bareHeader(type: number, streamId: number, length: number, version = 2): Uint8Array {
  const out = new Uint8Array(16);
  writeHeader(out, 0, type, streamId, length, version);
  return out;
}

function uint32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

/**
 * A connection that lends by callback (as the TCP adapters do), cuts what it
 * reads into `piece`-byte chunks, and while held keeps them queued: on
 * release its reader finds thousands of chunks waiting, each handed over
 * before `readBorrowedThen` returns.
 */
class QueueingLender extends WrappedConn {
  readonly #piece: number;
  readonly #queue: Array<Uint8Array | null> = [];
  #held = false;
  #onChunk: ((chunk: Uint8Array | null) => void) | null = null;

  constructor(inner: Conn, piece: number) {
    super(inner);
    this.#piece = piece;
    this.#pump();
  }

  get queued(): number {
    return this.#queue.length;
  }

  hold(): void {
    this.#held = true;
  }

  release(): void {
    this.#held = false;
    this.#deliver();
  }

  async #pump(): Promise<void> {
    for (;;) {
      const chunk = await this.inner.read().catch(() => null);
      if (chunk === null) break;
      for (let at = 0; at < chunk.length; at += this.#piece) this.#queue.push(chunk.slice(at, at + this.#piece));
      this.#deliver();
    }
    this.#queue.push(null);
    this.#deliver();
  }

  #deliver(): void {
    const onChunk = this.#onChunk;
    if (this.#held || onChunk === null || this.#queue.length === 0) return;
    this.#onChunk = null;
    onChunk(this.#queue.shift()!);
  }

  readBorrowedThen(onChunk: (chunk: Uint8Array | null) => void): void {
    if (!this.#held && this.#queue.length > 0) return onChunk(this.#queue.shift()!);
    this.#onChunk = onChunk;
  }
  readBorrowed(): Promise<Uint8Array | null> {
    return new Promise((resolve) => this.readBorrowedThen(resolve));
  }
  override read(): Promise<Uint8Array | null> {
    return this.readBorrowed();
  }
  giveBack(): void {}
}

// ---- Tests ----

describe("session handshake", () => {
  test(
    "ready resolves on both sides with the other's HELLO fields and window",
    scoped(async (scope) => {
      const { dialer, acceptor } = await sessionPair(scope, {
        dialer: { hello: { role: "relay", name: "r1", window: 5 }, window: 100_000 },
        acceptor: { hello: { role: "matcher" }, window: 200_000 },
      });
      assert.equal(dialer.peerHello, null, "no HELLO before any I/O");
      assert.equal(dialer.acceptingStreams, false, "no streams before the handshake");
      assert.throws(() => dialer.openStream(), /Cannot open stream: session is handshake/);
      const [fromAcceptor, fromDialer] = await within(
        Promise.all([dialer.ready, acceptor.ready]),
        3000,
        "ready",
      );
      assert.deepEqual(fromAcceptor, { role: "matcher", window: 200_000, maxFrame: MAX_PAYLOAD });
      // The window field is always the configured one, even if `hello` carries another.
      assert.deepEqual(fromDialer, { role: "relay", name: "r1", window: 100_000, maxFrame: MAX_PAYLOAD });
      assert.deepEqual(dialer.peerHello, fromAcceptor);
      assert.deepEqual(acceptor.peerHello, fromDialer);
      // Asked again after the handshake (a session then drops its promise): the same HELLO.
      assert.deepEqual(await dialer.ready, fromAcceptor);
      assert.deepEqual(await acceptor.ready, fromDialer);
      for (const session of [dialer, acceptor]) {
        assert.equal(session.acceptingStreams, true);
        assert.equal(session.isClosed, false);
        assert.equal(session.closeReason, "");
        assert.equal(session.closeError, null);
      }
    }),
  );

  test(
    "checkHello throwing on the acceptor refuses the session; both ends learn why",
    scoped(async (scope) => {
      const { dialer, acceptor } = await sessionPair(scope, {
        dialer: { hello: { role: "intruder" } },
        acceptor: {
          checkHello: (hello) => {
            if (hello.role !== "relay") {
              throw new Error(`role ${String(hello.role)} may not connect`);
            }
          },
        },
      });
      const [dialerReason, acceptorReason] = await within(
        Promise.all([dialer.closed, acceptor.closed]),
        3000,
        "both sides close",
      );
      assert.match(acceptorReason, /^protocol error \(handshake\): role intruder may not connect$/);
      assert.ok(acceptor.closeError instanceof ProtocolError);
      assert.equal(acceptor.closeError.code, "handshake");
      assert.match(dialerReason, /role intruder may not connect/);
      await assert.rejects(acceptor.ready, /before the handshake completed/);
      await assert.rejects(
        dialer.ready,
        /before the handshake completed.*role intruder may not connect/,
      );
      assert.equal(dialer.isClosed, true);
      assert.equal(acceptor.isClosed, true);
      assert.throws(() => dialer.openStream(), /session is closed/);
    }),
  );

  test(
    "checkHello throwing on the dialer refuses the session; the acceptor learns why",
    scoped(async (scope) => {
      const { dialer, acceptor } = await sessionPair(scope, {
        dialer: {
          checkHello: () => {
            throw new Error("matcher speaks an old dialect");
          },
        },
      });
      const [dialerReason, acceptorReason] = await within(
        Promise.all([dialer.closed, acceptor.closed]),
        3000,
        "both sides close",
      );
      assert.match(dialerReason, /^protocol error \(handshake\): matcher speaks an old dialect$/);
      assert.equal((dialer.closeError as ProtocolError).code, "handshake");
      assert.match(acceptorReason, /matcher speaks an old dialect/);
      await assert.rejects(dialer.ready);
    }),
  );

  test(
    "handshake timeout on the acceptor when the dialer sends nothing",
    scoped(async (scope) => {
      const started = Date.now();
      const { session, peer } = await rawPair(scope, { side: "acceptor", handshakeTimeout: 100 });
      const reason = await within(session.closed, 3000, "handshake timeout");
      assert.ok(Date.now() - started >= 90, `closed after ${Date.now() - started} ms`);
      assert.match(reason, /^protocol error \(handshake\): no handshake within 100 ms$/);
      assert.ok(session.closeError instanceof ProtocolError);
      assert.equal(session.closeError.code, "handshake");
      await assert.rejects(session.ready, /no handshake within 100 ms/);
      const goAway = await peer.expect("GOAWAY", (f) => f.type === FrameType.GOAWAY);
      assert.match(decoder.decode(goAway.payload), /no handshake within 100 ms/);
      await waitFor(() => peer.ended, 3000, "connection closed");
    }),
  );

  test(
    "handshake timeout on the dialer when the acceptor never answers its HELLO",
    scoped(async (scope) => {
      const { session, peer } = await rawPair(scope, { side: "dialer", handshakeTimeout: 100 });
      const hello = await peer.expect("dialer HELLO", (f) => f.type === FrameType.HELLO);
      assert.equal(hello.streamId, 0);
      assert.equal(JSON.parse(decoder.decode(hello.payload)).window, INITIAL_WINDOW);
      const reason = await within(session.closed, 3000, "handshake timeout");
      assert.match(reason, /no handshake within 100 ms/);
      assert.equal((session.closeError as ProtocolError).code, "handshake");
    }),
  );

  test(
    "the constructor refuses a window outside 1..2^31-1",
    scoped(async (scope) => {
      for (const window of [0, -1, 1.5, MAX_WINDOW + 1]) {
        const { dialer } = await connPair(scope, memoryTransport());
        assert.throws(
          () => new Session(dialer, { side: "dialer", window }),
          RangeError,
          `window ${window}`,
        );
      }
    }),
  );
});

describe("session end", () => {
  test(
    "whenClosed: called once with the reason, after the call that ended the session, also when asked afterwards",
    scoped(async (scope) => {
      const { dialer } = await readyPair(scope);
      const heard: string[] = [];
      dialer.whenClosed((reason) => heard.push(`before: ${reason}`));
      dialer.close("done here");
      assert.equal(heard.length, 0, "not inside close()");
      dialer.whenClosed((reason) => heard.push(`after: ${reason}`));
      assert.equal(await dialer.closed, "done here");
      await new Promise((resolve) => setTimeout(resolve, 10));
      assert.deepEqual(heard, ["before: done here", "after: done here"]);
    }),
  );
});

describe("session streams", () => {
  test(
    "streams stay reachable by id whichever of them ends first (the first is kept apart from the rest)",
    scoped(async (scope) => {
      const { dialer } = await readyPair(scope);
      // The first stream ends while later ones are open, then more open: each must still get its own bytes.
      const first = dialer.openStream();
      const second = dialer.openStream();
      const third = dialer.openStream();
      assert.ok(sameBytes(await roundTrip(first, pseudoRandomBytes(1000, 1)), pseudoRandomBytes(1000, 1)));
      await waitFor(() => dialer.openStreams === 2, 3000, "first stream released");
      const fourth = dialer.openStream();
      const echoed = await Promise.all(
        [second, third, fourth].map((stream, i) => roundTrip(stream, pseudoRandomBytes(5000 + i, 10 + i))),
      );
      echoed.forEach((bytes, i) => assert.ok(sameBytes(bytes, pseudoRandomBytes(5000 + i, 10 + i)), `stream ${i + 2}`));
      await waitFor(() => dialer.openStreams === 0, 3000, "all released");
      assert.equal(dialer.isClosed, false);
    }),
  );

  test(
    "the sender honours the frame limit the peer announced in its HELLO",
    scoped(async (scope) => {
      const { dialer, acceptor } = await readyPair(scope, { dialer: { maxPayload: 4096 } });
      assert.equal(acceptor.maxFramePayload, 4096);
      assert.equal(dialer.peerHello!.maxFrame, MAX_PAYLOAD);
      const data = pseudoRandomBytes(300_000, 21);
      // Larger frames would end the session with oversize-frame.
      const echoed = await roundTrip(acceptor.openStream(), data);
      assert.ok(Buffer.from(echoed).equals(Buffer.from(data)));
      assert.equal(dialer.isClosed, false);
    }),
  );

  test(
    "accept: the receiver acknowledges with CONNECT; a reset before that rejects accepted",
    scoped(async (scope) => {
      let refusedHere = null as Stream | null;
      const { acceptor } = await readyPair(scope, {
        dialer: {
          onStream: (stream) => {
            if (stream.meta.refuse) {
              refusedHere = stream;
              return stream.reset("unreachable: no destination");
            }
            stream.accept({ via: "dialer" });
            echoStream(stream);
          },
        },
      });
      const good = acceptor.openStream({});
      assert.deepEqual(await good.accepted, { via: "dialer" });
      const data = pseudoRandomBytes(5000, 23);
      assert.ok(Buffer.from(await roundTrip(good, data)).equals(Buffer.from(data)));
      // Asked again once accepted (the stream then keeps only the metadata): the same answer.
      assert.deepEqual(await good.accepted, { via: "dialer" });
      const refused = acceptor.openStream({ refuse: true });
      await assert.rejects(refused.accepted, /reset by peer: unreachable: no destination/);
      assert.throws(() => good.accept(), /only the receiving side accepts/);
      // The receiving side's promises are made when asked; asked only after the end, they settle as it did.
      await assert.rejects(refusedHere!.accepted, /reset locally: unreachable: no destination/);
      assert.ok(await settlesWithin(refusedHere!.closed, 3000), "closed asked after the reset");
    }),
  );

  test(
    "readBorrowedThen: a stream's chunks in order, then its end; a reset fails the waiting read",
    scoped(async (scope) => {
      const opened: Stream[] = [];
      const { acceptor } = await readyPair(scope, {
        dialer: {
          onStream: (stream) => {
            stream.accept();
            opened.push(stream);
          },
        },
      });
      const data = pseudoRandomBytes(200_000, 41);
      const stream = acceptor.openStream({});
      await stream.accepted;
      const peer = opened[0];
      const writing = writeAll(peer, data, 30_000).then(() => peer.closeWrite());
      const chunks: Uint8Array[] = [];
      const read = new Promise<void>((resolve, reject) => {
        const onChunk = (chunk: Uint8Array | null): void => {
          if (chunk === null) return resolve();
          chunks.push(chunk.slice());
          stream.giveBack(chunk);
          stream.readBorrowedThen(onChunk, reject);
        };
        stream.readBorrowedThen(onChunk, reject);
      });
      await within(Promise.all([read, writing]), 5000, "all the data, then the end");
      assertSameBytes(concat(chunks), data, "read with callbacks");

      const second = acceptor.openStream({});
      await second.accepted;
      const failed = new Promise<Error>((resolve, reject) =>
        second.readBorrowedThen(() => reject(new Error("a chunk")), resolve)
      );
      opened[1].reset("gone");
      assert.match((await within(failed, 3000, "the reset")).message, /reset by peer: gone/);
    }),
  );

  test(
    "accepting twice, or acknowledging a stream the peer opened itself, is a protocol error",
    scoped(async (scope) => {
      const { session, peer } = await rawPair(scope, { side: "acceptor", onStream: () => {} });
      await rawHandshake(session, peer);
      const stream = session.openStream();
      await peer.send(encodeFrame(FrameType.CONNECT, stream.id));
      await stream.accepted;
      await peer.send(encodeFrame(FrameType.CONNECT, stream.id));
      assert.match(await within(session.closed, 3000, "closed"), /accepted stream 1 twice/);
    }),
  );

  test(
    "an onStream handler that throws resets its stream, not the session",
    scoped(async (scope) => {
      let calls = 0;
      const { dialer, acceptor } = await readyPair(scope, {
        dialer: {
          onStream: (stream) => {
            if (calls++ === 0) throw new Error("boom");
            echoStream(stream);
          },
        },
      });
      const first = acceptor.openStream();
      await assert.rejects(first.read(), /stream handler failed: boom/);
      const data = pseudoRandomBytes(10_000, 22);
      assert.ok(Buffer.from(await roundTrip(acceptor.openStream(), data)).equals(Buffer.from(data)));
      assert.equal(dialer.isClosed, false);
    }),
  );

  test(
    "streams opened by the acceptor get odd ids, the dialer's even ids; data echoes",
    scoped(async (scope) => {
      const { dialer, acceptor } = await readyPair(scope);
      const fromAcceptor = [acceptor.openStream(), acceptor.openStream(), acceptor.openStream()];
      const fromDialer = [dialer.openStream(), dialer.openStream()];
      assert.deepEqual(fromAcceptor.map((s) => s.id), [1, 3, 5]);
      assert.deepEqual(fromDialer.map((s) => s.id), [2, 4]);
      const all = [...fromAcceptor, ...fromDialer];
      await within(
        Promise.all(all.map(async (stream, i) => {
          const data = pseudoRandomBytes(10_000 + i * 7919, i + 1);
          assertSameBytes(await roundTrip(stream, data, 3000), data, `stream ${stream.id}`);
        })),
        5000,
        "echo",
      );
      await waitFor(
        () => dialer.openStreams === 0 && acceptor.openStreams === 0,
        3000,
        "streams released",
      );
      assert.equal(acceptor.stats().totalStreams, 5);
      assert.equal(dialer.stats().totalStreams, 5);
    }),
  );

  test(
    "meta sent with CONNECT arrives as stream.meta",
    scoped(async (scope) => {
      const seen: Stream[] = [];
      const { dialer } = await readyPair(scope, {
        acceptor: {
          onStream: (stream) => {
            seen.push(stream);
            echoStream(stream);
          },
        },
      });
      const meta = {
        service: "ssh",
        port: 22,
        nested: { list: [1, "two", null] },
        unicode: "häh ✓",
      };
      const withMeta = dialer.openStream(meta);
      const without = dialer.openStream();
      assert.deepEqual(withMeta.meta, meta);
      assert.deepEqual(without.meta, {});
      await waitFor(() => seen.length === 2, 3000, "two streams accepted");
      assert.equal(seen[0].id, withMeta.id);
      assert.deepEqual(seen[0].meta, meta);
      assert.deepEqual(seen[1].meta, {});
    }),
  );

  test(
    "200 concurrent streams each arrive byte-exact",
    scoped(async (scope) => {
      const { dialer, acceptor } = await readyPair(scope, { dialer: { window: 128 * 1024 } });
      const count = 200;
      const results = await within(
        Promise.all(Array.from({ length: count }, async (_, i) => {
          const stream = acceptor.openStream({ index: i });
          const data = pseudoRandomBytes(1 + ((i * 104_729) % 40_000), 1000 + i);
          return { i, id: stream.id, data, got: await roundTrip(stream, data, 4096) };
        })),
        20_000,
        "200 streams",
      );
      assert.equal(new Set(results.map((r) => r.id)).size, count, "ids are unique");
      for (const { i, data, got } of results) assertSameBytes(got, data, `stream #${i}`);
      await waitFor(
        () => dialer.openStreams === 0 && acceptor.openStreams === 0,
        3000,
        "streams released",
      );
      const total = results.reduce((n, r) => n + r.data.length, 0);
      assert.equal(acceptor.stats().bytesSent, total);
      assert.equal(acceptor.stats().bytesReceived, total);
      assert.equal(dialer.stats().bytesSent, total);
    }),
  );

  test(
    "half-close: after closeWrite the peer reads the data then null and can still reply in full",
    scoped(async (scope) => {
      const request = pseudoRandomBytes(300_000, 11);
      const reply = pseudoRandomBytes(3 * 1024 * 1024 + 17, 12);
      let served: Promise<Uint8Array> | null = null;
      let acceptorSide: Stream | null = null;
      const { dialer, acceptor } = await readyPair(scope, {
        // A window smaller than the reply: the reply needs credit after the half-close.
        dialer: { window: 256 * 1024 },
        acceptor: {
          window: 64 * 1024,
          onStream: (stream) => {
            acceptorSide = stream;
            served = (async () => {
              const got = await readAll(stream); // until the dialer's FIN
              assert.equal(await stream.read(), null, "null again after the end");
              await writeAll(stream, reply, 100_000);
              return got;
            })();
          },
        },
      });
      const stream = dialer.openStream();
      await writeAll(stream, request, 70_000);
      await assert.rejects(
        stream.write(new Uint8Array(1)),
        ConnectionClosedError,
        "write after closeWrite",
      );
      const got = await within(readAll(stream), 10_000, "reply");
      assertSameBytes(got, reply, "reply");
      assertSameBytes(await within(served!, 3000, "request"), request, "request");
      await within(Promise.all([stream.closed, acceptorSide!.closed]), 3000, "both ends finished");
      assert.equal(stream.open, false);
      await waitFor(() => dialer.openStreams === 0 && acceptor.openStreams === 0, 3000, "released");
      assert.equal(dialer.isClosed, false, "a finished stream does not end its session");
    }),
  );

  test(
    "writes and closeWrite called without waiting keep their order, also while a write waits for credit",
    scoped(async (scope) => {
      const received: Promise<Uint8Array>[] = [];
      const { dialer } = await readyPair(scope, {
        acceptor: { window: 64 * 1024, onStream: (stream) => received.push(readAll(stream)) },
      });
      // Small: framed at once, and the half-close right behind it.
      const small = dialer.openStream();
      const smallWrite = small.write(encoder.encode("just this"));
      const smallFin = small.closeWrite();
      // Larger than the window: the first write waits for credit, the rest queue behind it.
      const large = dialer.openStream();
      const bulk = pseudoRandomBytes(1024 * 1024, 21);
      const writes = [large.write(bulk), large.write(encoder.encode("tail")), large.closeWrite()];
      await within(Promise.all([smallWrite, smallFin, ...writes]), 10_000, "writes and half-closes");
      await waitFor(() => received.length === 2, 3000, "both streams arrived");
      assert.equal(decoder.decode(await within(received[0], 3000, "small stream")), "just this");
      const got = await within(received[1], 10_000, "large stream");
      assert.equal(got.length, bulk.length + 4);
      assertSameBytes(got.subarray(0, bulk.length), bulk, "bulk");
      assert.equal(decoder.decode(got.subarray(bulk.length)), "tail");
      await assert.rejects(large.write(new Uint8Array(1)), ConnectionClosedError, "write after closeWrite");
    }),
  );

  test(
    "streams are refused without onStream and above maxStreams",
    scoped(async (scope) => {
      const held: Stream[] = [];
      const { dialer, acceptor } = await readyPair(scope, {
        dialer: { onStream: undefined },
        acceptor: { maxStreams: 2, onStream: (stream) => held.push(stream) },
      });
      // The dialer has no onStream: the acceptor's stream is reset.
      const refused = acceptor.openStream();
      await assert.rejects(within(refused.read(), 3000, "refusal"), (error: unknown) => {
        assert.ok(error instanceof StreamResetError);
        assert.match(error.message, /stream 1 reset by peer: this side does not accept streams/);
        return true;
      });
      const a = dialer.openStream(), b = dialer.openStream(), c = dialer.openStream();
      await assert.rejects(
        within(c.read(), 3000, "refusal"),
        /reset by peer: too many streams \(limit 2\)/,
      );
      await waitFor(() => held.length === 2, 3000, "two streams accepted");
      assert.deepEqual(held.map((s) => s.id), [a.id, b.id]);
      assert.equal(acceptor.openStreams, 2);
      // Once one finishes, a new one is accepted again.
      a.reset("done");
      await waitFor(() => acceptor.openStreams === 1, 3000, "reset reached the acceptor");
      const d = dialer.openStream();
      await waitFor(() => held.length === 3, 3000, "third stream accepted");
      assert.equal(held[2].id, d.id);
      assert.equal(dialer.isClosed || acceptor.isClosed, false);
    }),
  );
});

describe("session flow control", () => {
  test(
    "a consumer that does not read stalls only its own stream, at one window",
    scoped(async (scope) => {
      const window = 64 * 1024;
      const stalled: Stream[] = [];
      const { dialer, acceptor } = await readyPair(scope, {
        dialer: { window },
        acceptor: {
          window,
          onStream: (stream) => stream.meta.stall ? stalled.push(stream) : echoStream(stream),
        },
      });
      const data = pseudoRandomBytes(1024 * 1024, 21);
      const slow = dialer.openStream({ stall: true });
      const writing = guard(slow.write(data));
      await waitFor(
        () => stalled.length === 1 && stalled[0].buffered === window,
        3000,
        "one window buffered",
      );
      const receiver = stalled[0];
      const max = sampleMax(() => receiver.buffered);
      try {
        assert.equal(await settlesWithin(writing, 200), false, "write() must wait for credit");
        assert.equal(receiver.buffered, window, "nothing beyond the window arrived");
        assert.equal(dialer.stats().bytesSent, window);

        // Another stream on the same session keeps flowing meanwhile.
        const other = dialer.openStream();
        const otherData = pseudoRandomBytes(1024 * 1024, 22);
        assertSameBytes(
          await within(roundTrip(other, otherData), 5000, "other stream"),
          otherData,
          "other stream",
        );
        assert.equal(receiver.buffered, window, "still exactly one window");
        assert.equal(await settlesWithin(writing, 0), false, "still waiting");

        // Now read: everything arrives, byte-exact.
        const [got] = await within(
          Promise.all([readAll(receiver), writing.then(() => slow.closeWrite())]),
          5000,
          "stalled stream drains",
        );
        assertSameBytes(got, data, "stalled stream");
      } finally {
        const peak = max.stop();
        assert.ok(peak <= window, `buffered peaked at ${peak} bytes, the window is ${window}`);
      }
      assert.equal(dialer.isClosed || acceptor.isClosed, false);
    }),
  );

  test(
    "a stream whose reader keeps up grows its window from the shared budget and returns it at the end",
    scoped(async (scope) => {
      const window = 4 * 1024 * 1024;
      const budget = new WindowBudget(64 * 1024 * 1024);
      const received: Promise<Uint8Array>[] = [];
      const { dialer, acceptor } = await readyPair(scope, {
        transport: tcp(),
        acceptor: {
          window,
          windowBudget: budget,
          onStream: (stream) => void received.push(readAll(stream).finally(() => stream.closeWrite())),
        },
      });
      const peerHello = await dialer.ready;
      assert.equal(peerHello.window, INITIAL_WINDOW, "HELLO announces the initial window, not the largest");
      const data = pseudoRandomBytes(16 * 1024 * 1024, 23);
      const stream = dialer.openStream();
      await within(writeAll(stream, data, 512 * 1024), 10_000, "write 16 MiB");
      await waitFor(() => received.length === 1, 3000, "stream accepted");
      assert.equal(
        budget.available,
        budget.size - (window - INITIAL_WINDOW),
        "the window grew to the session's window, out of the budget",
      );
      await stream.closeWrite();
      assertSameBytes(await within(received[0], 5000, "read all"), data, "grown stream");
      await waitFor(() => acceptor.stats().openStreams === 0, 3000, "stream released");
      assert.equal(budget.available, budget.size, "growth returned");
    }),
  );

  test(
    "streams whose readers stall hold at most their initial windows plus the shared budget",
    scoped(async (scope) => {
      const budget = new WindowBudget(1024 * 1024);
      const readers: Stream[] = [];
      const { dialer } = await readyPair(scope, {
        transport: tcp(),
        acceptor: { windowBudget: budget, onStream: (stream) => void readers.push(stream) },
      });
      const count = 6;
      const first = 2 * 1024 * 1024;
      const data = Array.from({ length: count }, (_, i) => pseudoRandomBytes(8 * 1024 * 1024, 30 + i));
      const streams = data.map(() => dialer.openStream());
      const writing = streams.map((stream, i) => guard(writeAll(stream, data[i], 256 * 1024)));
      await waitFor(() => readers.length === count, 3000, "streams accepted");
      // Each reader keeps up for its first 2 MiB (so windows grow while the budget lasts), then stops.
      const heads = await within(
        Promise.all(readers.map((reader) => readExactly(reader, first))),
        10_000,
        "first 2 MiB of each stream",
      );
      await delay(300);
      const held = () => readers.reduce((sum, reader) => sum + reader.buffered, 0);
      const limit = count * INITIAL_WINDOW + budget.size;
      const max = sampleMax(held);
      await delay(300);
      const peak = max.stop();
      assert.ok(peak <= limit, `stalled readers hold ${peak} bytes, more than ${limit}`);
      assert.ok(budget.available < INITIAL_WINDOW, "the growth budget was used");
      assert.equal(await settlesWithin(Promise.race(writing), 0), false, "writers wait for credit");
      // Reading again: every byte arrives, in order.
      streams.forEach((stream, i) => void writing[i].then(() => stream.closeWrite()));
      const tails = await within(Promise.all(readers.map((reader) => readAll(reader))), 10_000, "the rest");
      for (let i = 0; i < count; i++) {
        assertSameBytes(concat([heads[i], tails[i]]), data[i], `stream ${i}`);
      }
    }),
  );

  test(
    "a queued piece small for its read buffer is a view while the pieces budget has room, a copy past it",
    scoped(async (scope) => {
      const held: Stream[] = [];
      const { session, peer } = await rawPair(scope, { side: "acceptor", onStream: (stream) => held.push(stream) });
      await rawHandshake(session, peer);
      let nextId = 2;
      /**
       * One write, so all payloads arrive in one read buffer of about 1 MB:
       * 40 small ones, then four of 250,000 bytes (each under half of it too).
       * The budget (32 MiB) has room for about 32 such pieces.
       */
      const batch = async () => {
        const from = held.length;
        const small = Array.from({ length: 40 }, (_, i) => pseudoRandomBytes(1000, 24 + i));
        const frames = small.flatMap((payload) => {
          const id = (nextId += 2);
          return [encodeFrame(FrameType.CONNECT, id), encodeFrame(FrameType.TRAFFIC, id, payload)];
        });
        for (let i = 0; i < 4; i++) {
          const id = (nextId += 2);
          frames.push(encodeFrame(FrameType.CONNECT, id), encodeFrame(FrameType.TRAFFIC, id, new Uint8Array(250_000)));
        }
        await peer.send(...frames);
        await waitFor(() => held.length === from + 44 && held[from + 43].buffered === 250_000, 3000, "all queued");
        return { streams: held.slice(from, from + 40), small };
      };
      /** Reads each stream's payload; how many of them were views (the rest are copies). */
      const readViews = async ({ streams, small }: { streams: Stream[]; small: Uint8Array[] }) => {
        const views: boolean[] = [];
        for (const [i, stream] of streams.entries()) {
          const chunk = (await stream.read())!;
          assertSameBytes(chunk, small[i], `payload ${i}`);
          views.push(chunk.buffer.byteLength > chunk.length);
        }
        const count = views.filter(Boolean).length;
        assert.deepEqual(views, views.map((_, i) => i < count), "views first, then copies once the budget is used");
        return count;
      };

      const first = await readViews(await batch());
      assert.ok(first > 0 && first < 40, `${first} of 40 pieces were views; expected some, not all`);
      // Read pieces gave their share back: the next batch gets as many views.
      assert.equal(await readViews(await batch()), first, "the budget came back once the pieces were read");
      // So do pieces of streams closed unread.
      await batch();
      for (const stream of held) stream.close();
      assert.equal(await readViews(await batch()), first, "the budget came back once their streams closed");
    }),
  );

  test(
    "reading by callback, a session takes thousands of queued chunks in order without recursing once per chunk",
    scoped(async (scope) => {
      const conns = await connPair(scope, memoryTransport());
      const lender = new QueueingLender(conns.acceptor, 17);
      const held: Stream[] = [];
      const session = scope.session(lender, { side: "acceptor", onStream: (stream) => held.push(stream) });
      const peer = new RawPeer(conns.dialer);
      await rawHandshake(session, peer);
      const count = 30_000;
      const frames: Uint8Array[] = [encodeFrame(FrameType.CONNECT, 2)];
      for (let i = 0; i < count; i++) frames.push(encodeFrame(FrameType.TRAFFIC, 2, new Uint8Array([i & 0xff])));
      lender.hold();
      await peer.send(...frames);
      // 16-byte CONNECT plus 17-byte TRAFFIC frames: one chunk per frame, more or less.
      await waitFor(() => lender.queued >= count, 3000, "all queued");
      lender.release();
      await waitFor(() => held.length === 1 && held[0].buffered === count, 3000, "every byte delivered");
      const chunks: Uint8Array[] = [];
      for (let n = 0; n < count;) {
        const chunk = (await held[0].read())!;
        chunks.push(chunk);
        n += chunk.length;
      }
      const bytes = concat(chunks);
      for (let i = 0; i < count; i++) {
        if (bytes[i] !== (i & 0xff)) assert.fail(`byte ${i} out of order`);
      }
      assert.equal(session.isClosed, false);
    }),
  );

  test(
    "credit granted by WINDOW is exact: a full window is fine, one byte more is an error",
    scoped(async (scope) => {
      const held: Stream[] = [];
      const { session, peer } = await rawPair(scope, {
        side: "acceptor",
        window: 1000,
        onStream: (stream) => held.push(stream),
      });
      await rawHandshake(session, peer);
      await peer.send(
        encodeFrame(FrameType.CONNECT, 2),
        encodeFrame(FrameType.TRAFFIC, 2, new Uint8Array(1000)),
      );
      await waitFor(() => held.length === 1 && held[0].buffered === 1000, 3000, "first window");
      assert.equal(peer.ofType(FrameType.WINDOW).length, 0, "no credit before the consumer reads");
      assert.equal((await held[0].read())!.length, 1000);
      const grant = await peer.expect("WINDOW", (f) => f.type === FrameType.WINDOW);
      assert.equal(grant.streamId, 2);
      assert.equal(new DataView(grant.payload.buffer).getUint32(0), 1000);
      // Exactly the granted credit, in two frames: accepted.
      await peer.send(
        encodeFrame(FrameType.TRAFFIC, 2, new Uint8Array(600)),
        encodeFrame(FrameType.TRAFFIC, 2, new Uint8Array(400)),
      );
      await waitFor(() => held[0].buffered === 1000, 3000, "second window");
      assert.equal(session.isClosed, false);
      // One byte beyond it: the session ends.
      await peer.send(encodeFrame(FrameType.TRAFFIC, 2, new Uint8Array(1)));
      const reason = await within(session.closed, 3000, "window exceeded");
      assert.match(
        reason,
        /^protocol error \(window-exceeded\): peer sent 1 bytes on stream 2 with only 0 bytes/,
      );
    }),
  );
});

describe("session resets", () => {
  test(
    "reset reaches the peer as StreamResetError with the reason; other streams go on",
    scoped(async (scope) => {
      const accepted = new Map<string, Stream>();
      const { dialer, acceptor } = await readyPair(scope, {
        acceptor: {
          onStream: (stream) => {
            accepted.set(String(stream.meta.name), stream);
            if (stream.meta.name === "other") echoStream(stream);
          },
        },
      });
      const doomed = dialer.openStream({ name: "doomed" });
      const other = dialer.openStream({ name: "other" });
      const otherData = pseudoRandomBytes(500_000, 31);
      const otherTrip = guard(roundTrip(other, otherData, 10_000));
      await waitFor(() => accepted.has("doomed"), 3000, "doomed accepted");
      const remote = accepted.get("doomed")!;
      // Bytes sent before the reset stay readable; then the read fails.
      await remote.write(encoder.encode("last words"));
      // A write blocked on credit fails too: twice the dialer's default window.
      const blocked = guard(remote.write(new Uint8Array(2 * SESSION_DEFAULTS.window)));
      await doomed.write(encoder.encode("never read"));
      await waitFor(
        () => doomed.buffered > 0 && remote.buffered > 0,
        3000,
        "data before the reset",
      );
      remote.reset("x marks the spot");
      // The resetting side drops what it had not read.
      assert.equal(remote.buffered, 0);
      await assert.rejects(blocked, StreamResetError, "pending write on the resetting side");
      await assert.rejects(remote.read(), /stream 2 reset locally: x marks the spot/);
      await assert.rejects(remote.write(new Uint8Array(1)), StreamResetError);

      assert.equal(decoder.decode((await doomed.read())!.subarray(0, 10)), "last words");
      // Drain what arrived before the reset, then the reset shows.
      const error = await within(readUntilError(doomed), 3000, "reset reaches the peer");
      assert.ok(error instanceof StreamResetError, `expected StreamResetError, got ${error}`);
      assert.ok(error instanceof ConnectionClosedError, "a reset is a closed connection too");
      assert.match(error.message, /x marks the spot/);
      assert.match(error.message, /^stream 2 reset by peer: /);
      await assert.rejects(doomed.write(new Uint8Array(1)), StreamResetError);
      await within(doomed.closed, 1000, "doomed closed");

      assertSameBytes(await within(otherTrip, 5000, "other stream"), otherData, "other stream");
      assert.equal(dialer.isClosed || acceptor.isClosed, false);
    }),
  );

  test(
    "a stream reset while its writer waits for credit fails that write",
    scoped(async (scope) => {
      const held: Stream[] = [];
      const { dialer } = await readyPair(scope, {
        acceptor: { window: 16 * 1024, onStream: (stream) => held.push(stream) },
      });
      const stream = dialer.openStream();
      const writing = guard(stream.write(new Uint8Array(100_000)));
      await waitFor(() => held.length === 1 && held[0].buffered === 16 * 1024, 3000, "window full");
      held[0].reset("no thanks");
      await assert.rejects(within(writing, 3000, "write fails"), /reset by peer: no thanks/);
    }),
  );

  test(
    "closing a session fails open streams on both sides",
    scoped(async (scope) => {
      const held: Stream[] = [];
      const { dialer, acceptor } = await readyPair(scope, {
        acceptor: { onStream: (s) => held.push(s) },
      });
      const stream = dialer.openStream();
      await waitFor(() => held.length === 1, 3000, "accepted");
      const pending = guard(held[0].read());
      dialer.close("shutting down");
      await assert.rejects(stream.read(), /session closed: shutting down/);
      await assert.rejects(within(pending, 3000, "peer stream fails"), ConnectionClosedError);
      assert.equal(await within(dialer.closed, 1000, "dialer closed"), "shutting down");
      assert.equal(
        await within(acceptor.closed, 3000, "acceptor closed"),
        "peer closed the connection",
      );
      assert.equal(acceptor.closeError instanceof ProtocolError, false);
    }),
  );
});

describe("session go-away", () => {
  test(
    "goAway refuses new streams on both sides, lets open streams finish, then both close",
    scoped(async (scope) => {
      const { dialer, acceptor } = await readyPair(scope, { acceptor: { window: 64 * 1024 } });
      const stream = dialer.openStream();
      const data = pseudoRandomBytes(2 * 1024 * 1024, 41);
      // Half the data before the go-away, half after.
      const half = data.length / 2;
      const reading = guard(readAll(stream));
      await stream.write(data.subarray(0, half));
      acceptor.goAway("maintenance");
      assert.equal(acceptor.acceptingStreams, false);
      assert.throws(() => acceptor.openStream(), /going away/);
      await waitFor(() => !dialer.acceptingStreams, 3000, "dialer saw GOAWAY");
      assert.throws(() => dialer.openStream(), /Cannot open stream: session is going away/);
      assert.equal(
        dialer.isClosed || acceptor.isClosed,
        false,
        "open streams keep the sessions up",
      );
      await stream.write(data.subarray(half));
      await stream.closeWrite();
      assertSameBytes(await within(reading, 5000, "echo"), data, "stream finished after GOAWAY");
      const [dialerReason, acceptorReason] = await within(
        Promise.all([dialer.closed, acceptor.closed]),
        3000,
        "both close",
      );
      assert.equal(acceptor.closeError, null);
      assert.equal(dialer.closeError, null);
      assert.match(acceptorReason, /maintenance/);
      assert.match(dialerReason, /peer going away: maintenance/);
    }),
  );

  test(
    "goAway without open streams closes both sessions at once, naming the reason",
    scoped(async (scope) => {
      const { dialer, acceptor } = await readyPair(scope);
      dialer.goAway("bye for now");
      const [dialerReason, acceptorReason] = await within(
        Promise.all([dialer.closed, acceptor.closed]),
        3000,
        "both close",
      );
      assert.equal(dialerReason, "bye for now");
      assert.equal(acceptorReason, "peer going away: bye for now");
    }),
  );

  test(
    "a CONNECT that crosses our GOAWAY is refused with a reset",
    scoped(async (scope) => {
      const held: Stream[] = [];
      const { session, peer } = await rawPair(scope, {
        side: "acceptor",
        onStream: (s) => held.push(s),
      });
      await rawHandshake(session, peer);
      await peer.send(encodeFrame(FrameType.CONNECT, 2));
      await waitFor(() => held.length === 1, 3000, "stream 2 accepted");
      session.goAway("maintenance");
      const goAway = await peer.expect("GOAWAY", (f) => f.type === FrameType.GOAWAY);
      assert.equal(goAway.streamId, 0);
      assert.equal(decoder.decode(goAway.payload), "maintenance");
      await peer.send(encodeFrame(FrameType.CONNECT, 4));
      const refusal = await peer.expect(
        "DISCONNECT 4",
        (f) => f.type === FrameType.DISCONNECT && f.streamId === 4,
      );
      assert.equal(decoder.decode(refusal.payload), "going away");
      assert.equal(held.length, 1);
      assert.equal(session.isClosed, false);
      // Stream 2 finishes; the session waits for the peer's GOAWAY, since
      // until then another CONNECT could be on the wire; then it closes.
      await held[0].closeWrite();
      await peer.send(encodeFrame(FrameType.FIN, 2));
      await delay(50);
      assert.equal(session.isClosed, false);
      await peer.send(encodeFrame(FrameType.GOAWAY, 0, new TextEncoder().encode("ok")));
      assert.equal(await within(session.closed, 3000, "drained"), "maintenance");
      await waitFor(() => peer.ended, 3000, "connection closed");
    }),
  );
});

describe("session heartbeat", () => {
  test(
    "a silent peer is declared dead after heartbeatTimeout",
    scoped(async (scope) => {
      const { session, peer } = await rawPair(scope, {
        side: "acceptor",
        heartbeatInterval: 25,
        heartbeatTimeout: 200,
      });
      await rawHandshake(session, peer);
      const since = Date.now();
      const reason = await within(session.closed, 3000, "heartbeat timeout");
      const elapsed = Date.now() - since;
      assert.match(reason, /heartbeat timeout/);
      assert.match(reason, /^peer silent for \d+ms/);
      assert.ok(elapsed >= 150, `closed after only ${elapsed} ms`);
      const pings = peer.ofType(FrameType.PING);
      assert.ok(pings.length >= 2, `expected PINGs, got ${pings.length}`);
      for (const ping of pings) {
        assert.equal(ping.streamId, 0);
        assert.equal(ping.payload.length, 8);
      }
      await waitFor(() => peer.ended, 3000, "connection closed");
    }),
  );

  test(
    "a peer that answers PINGs stays connected past heartbeatTimeout",
    scoped(async (scope) => {
      const { session, peer } = await rawPair(scope, {
        side: "dialer",
        heartbeatInterval: 20,
        heartbeatTimeout: 250,
      });
      peer.autoPong = true;
      await peer.expect("HELLO", (f) => f.type === FrameType.HELLO);
      await rawHandshake(session, peer);
      await new Promise((resolve) => setTimeout(resolve, 600));
      assert.equal(session.isClosed, false, `closed: ${session.closeReason}`);
      assert.ok(peer.ofType(FrameType.PING).length >= 5);
      const rtt = session.stats().rttMs;
      assert.ok(rtt !== null && rtt >= 0 && rtt < 1000, `rtt ${rtt}`);
    }),
  );

  test(
    "two live sessions keep each other alive and measure the round-trip time",
    scoped(async (scope) => {
      const heartbeat = { heartbeatInterval: 20, heartbeatTimeout: 250 };
      const { dialer, acceptor } = await readyPair(scope, {
        dialer: heartbeat,
        acceptor: heartbeat,
      });
      assert.equal(dialer.stats().rttMs, null);
      await waitFor(
        () => dialer.stats().rttMs !== null && acceptor.stats().rttMs !== null,
        3000,
        "rtt measured",
      );
      await new Promise((resolve) => setTimeout(resolve, 400));
      for (const session of [dialer, acceptor]) {
        assert.equal(session.isClosed, false, `closed: ${session.closeReason}`);
        const rtt = session.stats().rttMs!;
        assert.ok(rtt >= 0 && rtt < 1000, `rtt ${rtt}`);
      }
    }),
  );

  test(
    "an interval longer than the timeout keeps a live peer and still catches a silent one",
    scoped(async (scope) => {
      // A live peer is quiet for a whole interval between PONGs; that is no timeout.
      const heartbeat = { heartbeatInterval: 60, heartbeatTimeout: 25 };
      const { dialer, acceptor } = await readyPair(scope, {
        dialer: heartbeat,
        acceptor: heartbeat,
      });
      const { session, peer } = await rawPair(scope, { side: "acceptor", ...heartbeat });
      await rawHandshake(session, peer);
      const reason = await within(session.closed, 3000, "silent peer declared dead");
      assert.match(reason, /heartbeat timeout/);
      assert.ok(peer.ofType(FrameType.PING).length >= 1);
      await new Promise((resolve) => setTimeout(resolve, 400));
      for (const live of [dialer, acceptor]) {
        assert.equal(live.isClosed, false, `live session closed: ${live.closeReason}`);
        assert.notEqual(live.stats().rttMs, null);
      }
    }),
  );
});

describe("session heartbeat, shared timer", () => {
  test(
    "sessions on one interval share a timer: one that ends leaves the others pinging",
    scoped(async (scope) => {
      const heartbeat = { heartbeatInterval: 20, heartbeatTimeout: 100 };
      const silent = await rawPair(scope, { side: "acceptor", ...heartbeat });
      const live = await rawPair(scope, { side: "acceptor", ...heartbeat });
      live.peer.autoPong = true;
      await rawHandshake(silent.session, silent.peer);
      await rawHandshake(live.session, live.peer);
      assert.match(await within(silent.session.closed, 3000, "silent peer declared dead"), /heartbeat timeout/);
      const before = live.peer.ofType(FrameType.PING).length;
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(live.session.isClosed, false, `closed: ${live.session.closeReason}`);
      const after = live.peer.ofType(FrameType.PING).length;
      assert.ok(after - before >= 5, `PINGs after the other session ended: ${after - before}`);
      live.session.close("done");
    }),
  );
});

interface BadCase {
  name: string;
  /** Which side the session under test plays; the raw peer plays the other. */
  side?: "dialer" | "acceptor";
  /** Complete the handshake before sending `frames`. */
  handshake: boolean;
  options?: SideOptions;
  frames: Uint8Array[];
  code: ProtocolErrorCode;
  reason: RegExp;
}

const TRAFFIC = FrameType.TRAFFIC;
const badCases: BadCase[] = [
  {
    name: "garbage bytes (an HTTP request)",
    handshake: false,
    frames: [encoder.encode("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")],
    code: "bad-version",
    reason: /peer sent protocol version 1195725856, this build speaks 2/,
  },
  {
    name: "garbage bytes after the handshake",
    handshake: true,
    frames: [pseudoRandomBytes(100, 77)],
    code: "bad-version",
    reason: /peer sent protocol version \d+/,
  },
  {
    name: "version 1 (the O3SR gem)",
    handshake: false,
    frames: [encodeFrame(FrameType.CONNECT, 1, EMPTY, 1)],
    code: "bad-version",
    reason: /version 1 .*O3SR Ruby gem/,
  },
  {
    name: "version 0",
    handshake: true,
    frames: [encodeFrame(FrameType.PING, 0, new Uint8Array(8), 0)],
    code: "bad-version",
    reason: /protocol version 0,/,
  },
  {
    name: "version 99",
    handshake: false,
    frames: [encodeFrame(FrameType.HELLO, 0, json({ window: 10 }), 99)],
    code: "bad-version",
    reason: /protocol version 99,/,
  },
  {
    name: "unknown frame type",
    handshake: true,
    frames: [encodeFrame(42, 0)],
    code: "unknown-frame-type",
    reason: /unknown frame type 42 on stream 0/,
  },
  {
    name: "oversize length (header only)",
    handshake: true,
    frames: [bareHeader(TRAFFIC, 2, MAX_PAYLOAD + 1)],
    code: "oversize-frame",
    reason: new RegExp(`frame of ${MAX_PAYLOAD + 1} bytes, the limit is ${MAX_PAYLOAD}`),
  },
  {
    name: "length above a configured maxPayload",
    handshake: true,
    options: { maxPayload: 1000 },
    frames: [encodeFrame(FrameType.CONNECT, 2), encodeFrame(TRAFFIC, 2, new Uint8Array(1001))],
    code: "oversize-frame",
    reason: /frame of 1001 bytes, the limit is 1000/,
  },
  {
    name: "TRAFFIC for a stream that never existed",
    handshake: true,
    frames: [encodeFrame(TRAFFIC, 2, new Uint8Array(5))],
    code: "unknown-stream",
    reason: /TRAFFIC for stream 2, which was never opened/,
  },
  {
    name: "WINDOW for a stream of ours that never existed",
    handshake: true,
    frames: [encodeFrame(FrameType.WINDOW, 1, uint32(100))],
    code: "unknown-stream",
    reason: /WINDOW for stream 1, which was never opened/,
  },
  {
    name: "FIN for a stream id above the last opened one",
    handshake: true,
    frames: [encodeFrame(FrameType.CONNECT, 2), encodeFrame(FrameType.FIN, 4)],
    code: "unknown-stream",
    reason: /FIN for stream 4, which was never opened/,
  },
  {
    name: "DISCONNECT for a stream that never existed",
    handshake: true,
    frames: [encodeFrame(FrameType.DISCONNECT, 0xffff_ffff)],
    code: "unknown-stream",
    reason: /DISCONNECT for stream 4294967295/,
  },
  {
    name: "data beyond the window in one frame",
    handshake: true,
    options: { window: 1024 },
    frames: [encodeFrame(FrameType.CONNECT, 2), encodeFrame(TRAFFIC, 2, new Uint8Array(1025))],
    code: "window-exceeded",
    reason: /1025 bytes on stream 2 with only 1024 bytes of window left/,
  },
  {
    name: "data beyond the window over several frames",
    handshake: true,
    options: { window: 1024 },
    frames: [
      encodeFrame(FrameType.CONNECT, 2),
      encodeFrame(TRAFFIC, 2, new Uint8Array(1000)),
      encodeFrame(TRAFFIC, 2, new Uint8Array(24)),
      encodeFrame(TRAFFIC, 2, new Uint8Array(1)),
    ],
    code: "window-exceeded",
    // Frames of one stream read together are counted together.
    reason: /(?:^|\D)(?:1 bytes on stream 2 with only 0|1025 bytes on stream 2 with only 1024) bytes of window left/,
  },
  {
    name: "a second HELLO",
    handshake: true,
    frames: [encodeFrame(FrameType.HELLO, 0, json({ window: 1000 }))],
    code: "handshake",
    reason: /second HELLO/,
  },
  {
    name: "a CONNECT before the handshake",
    handshake: false,
    frames: [encodeFrame(FrameType.CONNECT, 2)],
    code: "handshake",
    reason: /CONNECT before the handshake completed/,
  },
  {
    name: "TRAFFIC before the handshake",
    handshake: false,
    frames: [encodeFrame(TRAFFIC, 2, new Uint8Array(3))],
    code: "handshake",
    reason: /TRAFFIC before the handshake completed/,
  },
  {
    name: "a HELLO that is not JSON",
    handshake: false,
    frames: [encodeFrame(FrameType.HELLO, 0, encoder.encode("{window: 1"))],
    code: "handshake",
    reason: /HELLO that is not JSON$/,
  },
  {
    name: "a HELLO that is a JSON array",
    handshake: false,
    frames: [encodeFrame(FrameType.HELLO, 0, json([1, 2]))],
    code: "handshake",
    reason: /HELLO that is not a JSON object/,
  },
  {
    name: "a HELLO without a window",
    handshake: false,
    frames: [encodeFrame(FrameType.HELLO, 0, json({ role: "relay" }))],
    code: "handshake",
    reason: /HELLO with window undefined; expected 1-2147483647/,
  },
  {
    name: "a HELLO with a window too large",
    handshake: false,
    frames: [encodeFrame(FrameType.HELLO, 0, json({ window: MAX_WINDOW + 1 }))],
    code: "handshake",
    reason: /HELLO with window 2147483648/,
  },
  {
    name: "a HELLO on a stream",
    handshake: false,
    frames: [encodeFrame(FrameType.HELLO, 5, json({ window: 1000 }))],
    code: "bad-frame",
    reason: /HELLO on stream 5; it belongs on stream 0/,
  },
  {
    name: "TRAFFIC on stream 0",
    handshake: true,
    frames: [encodeFrame(TRAFFIC, 0, new Uint8Array(1))],
    code: "bad-frame",
    reason: /TRAFFIC on stream 0$/,
  },
  {
    // A CONNECT on one of our ids acknowledges our stream; for one never opened it is an error.
    name: "CONNECT with an odd id from the dialer",
    handshake: true,
    frames: [encodeFrame(FrameType.CONNECT, 3)],
    code: "unknown-stream",
    reason: /peer sent CONNECT for stream 3, which was never opened/,
  },
  {
    name: "CONNECT with an even id from the acceptor",
    side: "dialer",
    handshake: true,
    frames: [encodeFrame(FrameType.CONNECT, 2)],
    code: "unknown-stream",
    reason: /peer sent CONNECT for stream 2, which was never opened/,
  },
  {
    name: "CONNECT with a decreasing id",
    handshake: true,
    frames: [encodeFrame(FrameType.CONNECT, 4), encodeFrame(FrameType.CONNECT, 2)],
    code: "bad-frame",
    reason: /opened stream 2 after 4; ids must grow/,
  },
  {
    name: "CONNECT reusing an id",
    side: "dialer",
    handshake: true,
    frames: [encodeFrame(FrameType.CONNECT, 1), encodeFrame(FrameType.CONNECT, 1)],
    code: "bad-frame",
    reason: /opened stream 1 after 1; ids must grow/,
  },
  {
    name: "CONNECT with meta that is not JSON",
    handshake: true,
    frames: [encodeFrame(FrameType.CONNECT, 2, encoder.encode("{oops"))],
    code: "bad-frame",
    reason: /CONNECT for stream 2 with a payload that is not JSON$/,
  },
  {
    name: "CONNECT with meta that is not an object",
    handshake: true,
    frames: [encodeFrame(FrameType.CONNECT, 2, json("text"))],
    code: "bad-frame",
    reason: /not a JSON object/,
  },
  {
    name: "a WINDOW frame of the wrong size",
    handshake: true,
    frames: [
      encodeFrame(FrameType.CONNECT, 2),
      encodeFrame(FrameType.WINDOW, 2, new Uint8Array(3)),
    ],
    code: "bad-frame",
    reason: /WINDOW frame of 3 bytes; it must be 4/,
  },
  {
    name: "a WINDOW increment of 0",
    handshake: true,
    frames: [encodeFrame(FrameType.CONNECT, 2), encodeFrame(FrameType.WINDOW, 2, uint32(0))],
    code: "bad-frame",
    reason: /window update of 0 on stream 2/,
  },
  {
    name: "a WINDOW increment beyond 2^31-1 of credit",
    handshake: true,
    frames: [
      encodeFrame(FrameType.CONNECT, 2),
      encodeFrame(FrameType.WINDOW, 2, uint32(MAX_WINDOW)),
    ],
    code: "bad-frame",
    reason: /window update of 2147483647 on stream 2 \(credit was 1048576\)/,
  },
  {
    name: "a second FIN",
    handshake: true,
    frames: [
      encodeFrame(FrameType.CONNECT, 2),
      encodeFrame(FrameType.FIN, 2),
      encodeFrame(FrameType.FIN, 2),
    ],
    code: "bad-frame",
    reason: /second FIN on stream 2/,
  },
  {
    name: "TRAFFIC after FIN",
    handshake: true,
    frames: [
      encodeFrame(FrameType.CONNECT, 2),
      encodeFrame(FrameType.FIN, 2),
      encodeFrame(TRAFFIC, 2, new Uint8Array(1)),
    ],
    code: "bad-frame",
    reason: /TRAFFIC on stream 2 after its FIN/,
  },
];

describe("session bad input from a raw peer", () => {
  for (const bad of badCases) {
    const side = bad.side ?? "acceptor";
    test(
      `${bad.name} (session as ${side}) ends that session only`,
      scoped(async (scope) => {
        const transport = memoryTransport();
        // A healthy session on the same transport, busy while the other one fails.
        const healthy = await readyPair(scope, { transport });
        const healthyData = pseudoRandomBytes(300_000, 5);
        const healthyTrip = guard(roundTrip(healthy.dialer.openStream(), healthyData, 20_000));

        const held: Stream[] = [];
        const { session, peer } = await rawPair(
          scope,
          { ...bad.options, side, onStream: (stream) => held.push(stream) },
          transport,
        );
        if (bad.handshake) {
          if (side === "dialer") await peer.expect("HELLO", (f) => f.type === FrameType.HELLO);
          await rawHandshake(session, peer);
        }
        const sentBefore = peer.frames.length;
        await peer.send(...bad.frames);
        const reason = await within(session.closed, 3000, "session closes");
        assert.ok(reason.startsWith(`protocol error (${bad.code}): `), `reason: ${reason}`);
        assert.match(reason, bad.reason);
        assert.ok(session.closeError instanceof ProtocolError, `closeError: ${session.closeError}`);
        assert.equal(session.closeError.code, bad.code);
        assert.equal(session.closeReason, reason);
        assert.equal(session.isClosed, true);
        if (!bad.handshake) await assert.rejects(session.ready);
        for (const stream of held) {
          const error = await readUntilError(stream);
          assert.ok(
            error instanceof ConnectionClosedError,
            `stream ${stream.id} ended with ${error}`,
          );
          assert.match(error.message, /^session closed: protocol error/);
        }

        // The peer was told why, in a GOAWAY on stream 0, before the connection closed.
        await waitFor(() => peer.ended, 3000, "connection closed");
        const last = peer.frames[peer.frames.length - 1];
        assert.ok(peer.frames.length > sentBefore, "no GOAWAY");
        assert.equal(last.type, FrameType.GOAWAY);
        assert.equal(last.streamId, 0);
        assert.equal(decoder.decode(last.payload), `protocol error: ${session.closeError.message}`);

        assertSameBytes(
          await within(healthyTrip, 5000, "healthy session"),
          healthyData,
          "healthy session",
        );
        assert.equal(healthy.dialer.isClosed || healthy.acceptor.isClosed, false);
      }),
    );
  }

  test(
    "the GOAWAY sent on a protocol error is the last thing on the wire",
    scoped(async (scope) => {
      const { session, peer } = await rawPair(scope, { side: "acceptor" });
      await rawHandshake(session, peer);
      await peer.send(encodeFrame(7, 9, new Uint8Array(8)), encodeFrame(1234, 0));
      await within(session.closed, 3000, "session closes");
      await waitFor(() => peer.ended, 3000, "connection closed");
      assert.equal(peer.endError, null, `the connection ended with an error: ${peer.endError}`);
      assert.deepEqual(
        peer.frames.map((f) => [f.type, f.streamId]),
        [[FrameType.HELLO, 0], [FrameType.GOAWAY, 0]],
      );
      assert.equal(
        decoder.decode(peer.frames[1].payload),
        "protocol error: peer sent PING on stream 9; it belongs on stream 0",
      );
      // Only the first violation counts.
      assert.equal(
        session.closeReason,
        "protocol error (bad-frame): peer sent PING on stream 9; it belongs on stream 0",
      );
    }),
  );

  test(
    "frames for recently closed streams are ignored, not an error",
    scoped(async (scope) => {
      const accepted: Stream[] = [];
      const { session, peer } = await rawPair(scope, {
        side: "acceptor",
        window: 1024,
        onStream: (stream) => {
          accepted.push(stream);
          if (stream.id === 2) stream.reset("nope");
          if (stream.id === 4) stream.closeWrite();
        },
      });
      await rawHandshake(session, peer);
      // Stream 2: reset by the session at once.
      await peer.send(encodeFrame(FrameType.CONNECT, 2));
      await peer.expect("DISCONNECT 2", (f) => f.type === FrameType.DISCONNECT && f.streamId === 2);
      // Stream 4: finished both ways.
      await peer.send(encodeFrame(FrameType.CONNECT, 4), encodeFrame(FrameType.FIN, 4));
      await waitFor(() => accepted.length === 2 && !accepted[1].open, 3000, "stream 4 finished");
      // Stream 1: opened by the session, then reset by it.
      const own = session.openStream();
      assert.equal(own.id, 1);
      await peer.expect("CONNECT 1", (f) => f.type === FrameType.CONNECT && f.streamId === 1);
      own.reset("changed my mind");
      await peer.expect("DISCONNECT 1", (f) => f.type === FrameType.DISCONNECT && f.streamId === 1);
      assert.equal(session.openStreams, 0);

      const late = [2, 4, 1].flatMap((id) => [
        encodeFrame(TRAFFIC, id, new Uint8Array(5000)), // even beyond the old window
        encodeFrame(FrameType.WINDOW, id, uint32(100)),
        encodeFrame(FrameType.FIN, id),
        encodeFrame(FrameType.FIN, id),
        encodeFrame(FrameType.DISCONNECT, id, encoder.encode("late")),
      ]);
      const ping = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
      await peer.send(...late, encodeFrame(FrameType.PING, 0, ping));
      // The PONG proves the late frames before it were processed.
      const pong = await peer.expect("PONG", (f) => f.type === FrameType.PONG);
      assert.deepEqual([...pong.payload], [...ping]);
      assert.equal(session.isClosed, false, `closed: ${session.closeReason}`);
      assert.equal(session.closeError, null);
      // And the session still works.
      await peer.send(encodeFrame(FrameType.CONNECT, 6, json({ after: true })));
      await waitFor(() => accepted.length === 3, 3000, "stream 6 accepted");
      assert.deepEqual(accepted[2].meta, { after: true });
      assert.equal(accepted[2].id, 6);
    }),
  );

  test(
    "a frame for a never-opened id is still an error after others closed",
    scoped(async (scope) => {
      const { session, peer } = await rawPair(scope, {
        side: "acceptor",
        onStream: (s) => s.reset(),
      });
      await rawHandshake(session, peer);
      await peer.send(encodeFrame(FrameType.CONNECT, 2));
      await peer.expect("DISCONNECT 2", (f) => f.type === FrameType.DISCONNECT);
      // Ours are odd and none was opened; theirs go up to 2.
      await peer.send(encodeFrame(TRAFFIC, 3, new Uint8Array(1)));
      assert.match(
        await within(session.closed, 3000, "closed"),
        /unknown-stream.*stream 3, which was never opened/,
      );
    }),
  );
});

describe("session over real TCP", () => {
  test(
    `many streams, flow control and go-away over ${runtime} TCP`,
    scoped(async (scope) => {
      const { dialer, acceptor } = await readyPair(scope, {
        transport: tcp(),
        dialer: { window: 256 * 1024 },
        acceptor: { window: 256 * 1024 },
      });
      assert.equal(dialer.remoteAddr.port, acceptor.localAddr.port);
      const sizes = [0, 1, 16, 1000, 65_536, 300_000, 4 * 1024 * 1024];
      for (let i = 0; i < 40; i++) sizes.push((i * 7_919) % 100_000);
      const results = await within(
        Promise.all(sizes.map(async (size, i) => {
          const stream = i % 2 === 0 ? dialer.openStream() : acceptor.openStream();
          const data = pseudoRandomBytes(size, 500 + i);
          return { data, got: await roundTrip(stream, data, 64 * 1024) };
        })),
        20_000,
        "streams over TCP",
      );
      for (const [i, { data, got }] of results.entries()) {
        assertSameBytes(got, data, `stream #${i}`);
      }
      acceptor.goAway("done");
      const reasons = await within(
        Promise.all([dialer.closed, acceptor.closed]),
        5000,
        "both close",
      );
      assert.deepEqual(reasons, ["peer going away: done", "done"]);
    }),
  );

  test(
    `a raw ${runtime} TCP peer speaking version 1 is refused with a GOAWAY`,
    scoped(async (scope) => {
      const { session, peer } = await rawPair(scope, { side: "acceptor" }, tcp());
      await peer.send(encodeFrame(FrameType.CONNECT, 1, EMPTY, 1));
      assert.match(await within(session.closed, 3000, "closed"), /bad-version.*O3SR Ruby gem/);
      await waitFor(() => peer.ended, 3000, "connection closed");
      assert.equal(peer.frames.length, 1);
      assert.equal(peer.frames[0].type, FrameType.GOAWAY);
      assert.match(
        decoder.decode(peer.frames[0].payload),
        /^protocol error: peer sent protocol version 1/,
      );
    }),
  );
});
