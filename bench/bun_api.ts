/**
 * The slice of Bun's API the load tool uses, declared here so `deno check`
 * passes without global bun-types (the project does not rely on them).
 *
 * @module
 */

/** A TCP socket from `Bun.listen` / `Bun.connect`; `data` is our per-socket state. */
export interface BunSocket<T> {
  data: T;
  /** Bytes the kernel took; fewer than asked means wait for `drain`, -1 when closed. */
  write(data: Uint8Array): number;
  /** Sends FIN; reading goes on. */
  shutdown(halfClose?: boolean): void;
  /** Flushes and closes. */
  end(): void;
  /** Closes at once (reset). */
  terminate(): void;
  setNoDelay(noDelay?: boolean): boolean;
  /** Stops reading until `resume()`. */
  pause(): void;
  resume(): void;
}

/** Socket event handlers. Bun reuses the `data` buffer after the call returns. */
export interface BunSocketHandlers<T> {
  binaryType?: "uint8array";
  open?(socket: BunSocket<T>): void;
  data?(socket: BunSocket<T>, data: Uint8Array): void;
  drain?(socket: BunSocket<T>): void;
  end?(socket: BunSocket<T>): void;
  close?(socket: BunSocket<T>, error?: Error): void;
  error?(socket: BunSocket<T>, error: Error): void;
  connectError?(socket: BunSocket<T>, error: Error): void;
}

/** A listening TCP server. */
export interface BunServer {
  readonly port: number;
  stop(closeActive?: boolean): void;
}

/** The `Bun` namespace, as far as the load tool needs it. */
export interface BunApi {
  listen<T>(options: {
    hostname: string;
    port: number;
    allowHalfOpen?: boolean;
    socket: BunSocketHandlers<T>;
  }): BunServer;
  connect<T>(options: {
    hostname: string;
    port: number;
    allowHalfOpen?: boolean;
    data?: T;
    socket: BunSocketHandlers<T>;
  }): Promise<BunSocket<T>>;
  /** Monotonic nanoseconds since process start. */
  nanoseconds(): number;
}

/** The global `Bun`; throws a clear error when run under another runtime. */
export function bun(): BunApi {
  const api = (globalThis as unknown as { Bun?: BunApi }).Bun;
  if (!api) throw new Error("bench/load.ts needs Bun: run it as `bun bench/load.ts ...`");
  return api;
}
