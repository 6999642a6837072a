/**
 * The bench's load tool, run as its own Bun process (`bun bench/load.ts CMD`)
 * so the load never shares an event loop with the matcher or relay measured.
 *
 * `serve` is the destination: one port, the client's first byte picks the
 * mode: `U` sink (counts bytes, answers the count in ASCII at the client's
 * FIN), `D` source (writes until the client goes away), anything else echo.
 * The other commands are clients; each prints one JSON line on stdout and
 * exits. Every command is bounded by a deadline.
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { bun, type BunSocket } from "./bun_api.ts";

const Bun = bun();
const HOST = "127.0.0.1";
/** Large writes keep per-call overhead out of the throughput figures. */
const CHUNK = 256 * 1024;
/** Writes per turn before yielding, so one busy socket cannot starve the others. */
const WRITES_PER_TURN = 16;
const MODE_UPLOAD = 0x55; // "U"
const MODE_DOWNLOAD = 0x44; // "D"

const payload = new Uint8Array(CHUNK).fill(0x61);
/**
 * Varying bytes for echoes that are checked: an echo carrying another
 * connection's bytes, or stale memory, shows up as a mismatch.
 */
const pattern = Uint8Array.from({ length: CHUNK + 256 }, (_, i) => (i * 7 + (i >> 8)) & 0xff);
/** Checked echoes whose bytes came back different, long streams included. */
let echoMismatches = 0;

/** `size` bytes of {@linkcode pattern} from a random offset, not starting with a mode byte. */
function patternSlice(size: number): Uint8Array {
  let at = Math.floor(Math.random() * 256);
  while (pattern[at] === MODE_UPLOAD || pattern[at] === MODE_DOWNLOAD) at++;
  return pattern.subarray(at, at + size);
}

/** Seconds since an arbitrary start, monotonic. */
function now(): number {
  return Bun.nanoseconds() / 1e9;
}

function fail(message: string): never {
  console.error(`load: ${message}`);
  process.exit(1);
}

/** Exits when the orchestrator goes away (our stdin closes) or asks us to. */
function onStdinClose(action: () => void): void {
  process.stdin.on("data", () => action());
  process.stdin.on("end", () => action());
  process.stdin.resume();
}

// ---- Pumping: write a constant payload as fast as the socket takes it ----

interface Pump {
  /** Bytes the kernel took. */
  sent: number;
  /** Where in `payload` a partial write stopped. */
  offset: number;
  stopped: boolean;
  waitingDrain: boolean;
}

function newPump(): Pump {
  return { sent: 0, offset: 0, stopped: false, waitingDrain: false };
}

/** Writes until the socket is full (then `drain` calls again) or a turn's budget is spent. */
function pump<T>(socket: BunSocket<T>, state: Pump): void {
  state.waitingDrain = false;
  for (let i = 0; i < WRITES_PER_TURN; i++) {
    if (state.stopped) return;
    const chunk = state.offset === 0 ? payload : payload.subarray(state.offset);
    const written = socket.write(chunk);
    if (written < 0) {
      state.stopped = true;
      return;
    }
    state.sent += written;
    state.offset = (state.offset + written) % CHUNK;
    if (written < chunk.length) {
      state.waitingDrain = true;
      return;
    }
  }
  setImmediate(() => {
    if (!state.waitingDrain) pump(socket, state);
  });
}

/** The `drain` side of {@linkcode pump}: continues only a pump that is waiting for it. */
function resume<T>(socket: BunSocket<T>, state: Pump): void {
  if (state.waitingDrain) pump(socket, state);
}

// ---- serve ----

interface ServerConn {
  mode: number;
  received: number;
  pump: Pump;
  /** Echo bytes the socket has not taken yet. */
  backlog: Uint8Array[];
  endAfterBacklog: boolean;
}

function echo(socket: BunSocket<ServerConn>, data: Uint8Array): void {
  const state = socket.data;
  if (state.backlog.length > 0) {
    state.backlog.push(data.slice()); // Bun reuses `data` after we return.
    return;
  }
  const written = socket.write(data);
  if (written >= 0 && written < data.length) state.backlog.push(data.slice(written));
}

function flushBacklog(socket: BunSocket<ServerConn>): void {
  const state = socket.data;
  while (state.backlog.length > 0) {
    const chunk = state.backlog[0];
    const written = socket.write(chunk);
    if (written < 0) return void (state.backlog = []);
    if (written < chunk.length) return void (state.backlog[0] = chunk.subarray(written));
    state.backlog.shift();
  }
  if (state.endAfterBacklog) socket.end();
}

function serve(port: number): void {
  const server = Bun.listen<ServerConn>({
    hostname: HOST,
    port,
    allowHalfOpen: true, // the sink answers after the client's FIN
    socket: {
      binaryType: "uint8array",
      open(socket) {
        socket.data = { mode: 0, received: 0, pump: newPump(), backlog: [], endAfterBacklog: false };
        socket.setNoDelay(true);
      },
      data(socket, data) {
        const state = socket.data;
        if (state.mode === 0) {
          state.mode = data[0] === MODE_UPLOAD || data[0] === MODE_DOWNLOAD ? data[0] : 1;
          if (state.mode === MODE_UPLOAD) state.received += data.length - 1;
          else if (state.mode === MODE_DOWNLOAD) pump(socket, state.pump);
          else echo(socket, data);
          return;
        }
        if (state.mode === MODE_UPLOAD) state.received += data.length;
        else if (state.mode !== MODE_DOWNLOAD) echo(socket, data);
      },
      drain(socket) {
        const state = socket.data;
        if (state.mode === MODE_DOWNLOAD) resume(socket, state.pump);
        else flushBacklog(socket);
      },
      end(socket) {
        const state = socket.data;
        state.pump.stopped = true;
        if (state.mode === MODE_UPLOAD) {
          socket.write(new TextEncoder().encode(`${state.received}\n`));
          socket.end();
        } else if (state.backlog.length > 0) {
          state.endAfterBacklog = true;
        } else {
          socket.end();
        }
      },
      close(socket) {
        if (socket.data) socket.data.pump.stopped = true;
      },
      error(socket) {
        if (socket.data) socket.data.pump.stopped = true;
      },
    },
  });
  console.log(JSON.stringify({ port: server.port }));
  const stop = () => {
    server.stop(true);
    process.exit(0);
  };
  onStdinClose(stop);
  process.on("SIGTERM", stop);
}

// ---- upload / download ----

/** One throughput run: bytes per stream over the same window. */
export interface ThroughputResult {
  streams: number;
  /** Bytes that reached the far end, per stream. */
  bytes: number[];
  seconds: number;
  gbps: number;
  /** Filled in by the orchestrator: CPU seconds of each forwarder process during the run. */
  forwarderCpu?: Array<number | null>;
}

interface UploadConn {
  pump: Pump;
  reply: string;
  done: (count: number | null) => void;
}

async function upload(port: number, streams: number, seconds: number): Promise<ThroughputResult> {
  const conns = await Promise.all(Array.from({ length: streams }, () => {
    const state: UploadConn = { pump: newPump(), reply: "", done: () => {} };
    return Bun.connect<UploadConn>({
      hostname: HOST,
      port,
      allowHalfOpen: true,
      data: state,
      socket: {
        binaryType: "uint8array",
        open: (socket) => void socket.setNoDelay(true),
        data: (socket, data) => void (socket.data.reply += new TextDecoder().decode(data)),
        drain: (socket) => resume(socket, socket.data.pump),
        end: (socket) => socket.data.done(parseInt(socket.data.reply, 10)),
        close: (socket) => socket.data.done(parseInt(socket.data.reply, 10)),
        error: (socket) => socket.data.done(null),
      },
    });
  }));
  const replies = conns.map((socket) => new Promise<number | null>((resolve) => socket.data.done = resolve));
  const ackTimes: number[] = [];
  const counted = replies.map((reply) => reply.then((count) => (ackTimes.push(now()), count)));
  const started = now();
  for (const socket of conns) {
    // The mode byte leads the first write; the sink does not count it.
    const first = payload.slice();
    first[0] = MODE_UPLOAD;
    const written = socket.write(first);
    socket.data.pump.offset = Math.max(0, written) % CHUNK;
    if (written === CHUNK) pump(socket, socket.data.pump);
    else socket.data.pump.waitingDrain = true;
  }
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  for (const socket of conns) {
    socket.data.pump.stopped = true;
    socket.shutdown(); // FIN after what the kernel took: the sink answers its count
  }
  const counts = await withDeadline(Promise.all(counted), 60, "upload: no byte count from the sink");
  if (counts.some((count) => count === null || Number.isNaN(count))) fail("upload: a stream failed");
  const elapsed = Math.max(...ackTimes) - started;
  for (const socket of conns) socket.end();
  const bytes = counts as number[];
  return { streams, bytes, seconds: elapsed, gbps: gbps(bytes, elapsed) };
}

interface DownloadConn {
  received: number;
  /** Reset, or closed before the window ended: the source never stops on its own. */
  failed: boolean;
  measured: boolean;
}

async function download(port: number, streams: number, seconds: number): Promise<ThroughputResult> {
  const conns = await Promise.all(Array.from({ length: streams }, () =>
    Bun.connect<DownloadConn>({
      hostname: HOST,
      port,
      data: { received: 0, failed: false, measured: false },
      socket: {
        binaryType: "uint8array",
        open: (socket) => void socket.setNoDelay(true),
        data: (socket, data) => void (socket.data.received += data.length),
        error: (socket) => void (socket.data.failed = true),
        close: (socket) => void (socket.data.failed ||= !socket.data.measured),
      },
    })));
  const started = now();
  for (const socket of conns) socket.write(new Uint8Array([MODE_DOWNLOAD]));
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  // Snapshot before closing: the window is the same for every stream.
  const elapsed = now() - started;
  const bytes = conns.map((socket) => socket.data.received);
  if (conns.some((socket) => socket.data.failed)) fail("download: a stream failed or ended early");
  for (const socket of conns) socket.data.measured = true;
  for (const socket of conns) socket.terminate();
  return { streams, bytes, seconds: elapsed, gbps: gbps(bytes, elapsed) };
}

function gbps(bytes: number[], seconds: number): number {
  return bytes.reduce((a, b) => a + b, 0) * 8 / seconds / 1e9;
}

// ---- latency ----

/** Round-trip times of sequential echoes on one connection. */
export interface LatencyResult {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

interface LatencyConn {
  got: number;
  done: boolean;
  onMessage: () => void;
}

async function latency(port: number, count: number, size: number): Promise<LatencyResult> {
  const message = new Uint8Array(size).fill(0x65); // "e": echo mode
  const socket = await Bun.connect<LatencyConn>({
    hostname: HOST,
    port,
    data: { got: 0, done: false, onMessage: () => {} },
    socket: {
      binaryType: "uint8array",
      open: (s) => void s.setNoDelay(true),
      data(s, data) {
        s.data.got += data.length;
        if (s.data.got >= size) {
          s.data.got -= size;
          s.data.onMessage();
        }
      },
      close: (s) => void (s.data.done || fail("latency: connection closed early")),
    },
  });
  // Enough warm-up for the forwarder's JIT too: the first thousand echoes through o3sr are slower.
  const warmup = Math.min(2000, count);
  const samples = new Float64Array(count);
  // Driven from the data callback: no promise per round trip in the timing.
  await withDeadline(
    new Promise<void>((resolve) => {
      let i = -warmup;
      let sent = 0;
      const send = () => {
        sent = Bun.nanoseconds();
        socket.write(message);
      };
      socket.data.onMessage = () => {
        if (i >= 0) samples[i] = (Bun.nanoseconds() - sent) / 1000;
        i++;
        if (i < count) send();
        else resolve();
      };
      send();
    }),
    120,
    "latency: echo stalled",
  );
  socket.data.done = true;
  socket.end();
  samples.sort();
  const at = (q: number) => samples[Math.min(count - 1, Math.floor(q * count))];
  const mean = samples.reduce((a, b) => a + b, 0) / count;
  return { count, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: samples[count - 1], mean };
}

// ---- setup ----

/** Sequential connect, 1-byte echo, close. */
export interface SetupResult {
  count: number;
  seconds: number;
  perSecond: number;
}

interface EchoConn {
  got: number;
  want: number;
  /** The bytes sent, when the echo is checked. */
  sent: Uint8Array | null;
  resolve: () => void;
  reject: (error: Error) => void;
}

/**
 * Connects, sends `size` bytes in echo mode and resolves with the socket once
 * they are back; with `check`, varying bytes, compared as they come back.
 */
function echoOnce(port: number, size: number, timeoutSeconds: number, check = false): Promise<BunSocket<EchoConn>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no echo within ${timeoutSeconds} s`)), timeoutSeconds * 1000);
    const state: EchoConn = {
      got: 0,
      want: size,
      sent: check ? patternSlice(size) : null,
      resolve: () => {},
      reject: (error) => {
        clearTimeout(timer);
        reject(error);
      },
    };
    Bun.connect<EchoConn>({
      hostname: HOST,
      port,
      data: state,
      socket: {
        binaryType: "uint8array",
        open(socket) {
          socket.setNoDelay(true);
          state.resolve = () => {
            clearTimeout(timer);
            resolve(socket);
          };
          socket.write(state.sent ?? (size === 1 ? ECHO_BYTE : payload.subarray(0, size)));
        },
        data(socket, data) {
          const sent = socket.data.sent;
          if (sent !== null && !data.every((byte, i) => byte === sent[socket.data.got + i])) {
            echoMismatches++;
            socket.data.reject(new Error("the echo differs from the bytes sent"));
            socket.terminate();
            return;
          }
          socket.data.got += data.length;
          if (socket.data.got === socket.data.want) socket.data.resolve();
        },
        close: (socket) => {
          if (socket.data.got < socket.data.want) socket.data.reject(new Error("closed before the echo"));
        },
        error: (socket, error) => socket.data.reject(error),
        connectError: (_socket, error) => state.reject(error),
      },
    }).catch((error) => state.reject(error));
  });
}

const ECHO_BYTE = new Uint8Array([0x65]);

async function setup(port: number, count: number): Promise<SetupResult> {
  // Untimed warm-up, as for latency: first connections pay for JIT and allocations.
  for (let i = 0; i < Math.min(200, count); i++) {
    const socket = await echoOnce(port, 1, 10).catch((error) => fail(`setup warm-up: ${error.message}`));
    socket.end();
  }
  const started = now();
  for (let i = 0; i < count; i++) {
    const socket = await echoOnce(port, 1, 10).catch((error) => fail(`setup: connection ${i}: ${error.message}`));
    socket.end();
  }
  const seconds = now() - started;
  return { count, seconds, perSecond: count / seconds };
}

// ---- idle ----

/** Opens `count` echoed connections and holds them until told to close. */
async function idle(port: number, count: number, concurrency: number): Promise<void> {
  const open: BunSocket<EchoConn>[] = [];
  const started = now();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      open.push(
        await echoOnce(port, 1, 30).catch((error) => fail(`idle: connection ${open.length}: ${error.message}`)),
      );
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  console.log(JSON.stringify({ open: open.length, seconds: now() - started }));
  onStdinClose(() => {
    for (const socket of open) socket.end();
    // Give the FINs a moment to leave before the process (and its sockets) go.
    setTimeout(() => process.exit(0), 200);
  });
}

// ---- churn (soak) ----

/** What a churn run did. */
export interface ChurnResult {
  shortConnections: number;
  errors: number;
  /** Error messages of the failed short connections, with counts. */
  errorKinds: Record<string, number>;
  /** Echoes, short or long, whose bytes came back different from those sent. */
  mismatches: number;
  longStreamBytes: number;
  seconds: number;
}

async function churn(port: number, seconds: number, long: number, concurrency: number): Promise<ChurnResult> {
  const deadline = now() + seconds;
  let shortConnections = 0;
  let errors = 0;
  let longStreamBytes = 0;
  const errorKinds: Record<string, number> = {};
  // Long streams: 16 KiB ping-pong for the whole run, every echo checked.
  const longs = await Promise.all(Array.from({ length: long }, () => echoOnce(port, 16 * 1024, 30, true)));
  for (const socket of longs) {
    socket.data.got = 0;
    socket.data.resolve = () => {
      longStreamBytes += socket.data.want;
      socket.data.got = 0;
      if (now() < deadline) socket.write(socket.data.sent!);
    };
    socket.write(socket.data.sent!);
  }
  const worker = async () => {
    while (now() < deadline) {
      try {
        const socket = await echoOnce(port, 1024, 10, true);
        socket.end();
        shortConnections++;
      } catch (error) {
        errors++;
        const message = (error as Error).message;
        errorKinds[message] = (errorKinds[message] ?? 0) + 1;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  for (const socket of longs) socket.end();
  return { shortConnections, errors, errorKinds, mismatches: echoMismatches, longStreamBytes, seconds };
}

// ---- main ----

function withDeadline<T>(promise: Promise<T>, seconds: number, message: string): Promise<T> {
  const timer = setTimeout(() => fail(message), seconds * 1000);
  return promise.finally(() => clearTimeout(timer));
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    args: process.argv.slice(2),
    allowPositionals: true,
    options: {
      port: { type: "string", default: "0" },
      streams: { type: "string", default: "1" },
      seconds: { type: "string", default: "2" },
      count: { type: "string", default: "1000" },
      size: { type: "string", default: "64" },
      concurrency: { type: "string", default: "64" },
      long: { type: "string", default: "4" },
    },
  });
  const port = Number(values.port);
  const streams = Number(values.streams);
  const seconds = Number(values.seconds);
  const count = Number(values.count);
  const print = (result: unknown) => {
    console.log(JSON.stringify(result));
    process.exit(0);
  };
  switch (positionals[0]) {
    case "serve":
      return serve(port);
    case "upload":
      return print(await upload(port, streams, seconds));
    case "download":
      return print(await download(port, streams, seconds));
    case "latency":
      return print(await latency(port, count, Number(values.size)));
    case "setup":
      return print(await setup(port, count));
    case "idle":
      return idle(port, count, Number(values.concurrency));
    case "churn":
      return print(await churn(port, seconds, Number(values.long), Number(values.concurrency)));
    default:
      fail(`unknown command ${positionals[0]}; use serve, upload, download, latency, setup, idle or churn`);
  }
}

if (import.meta.main) await main();
