/**
 * What a read finds at once, and handing it to its reader: a promise or a
 * pair of callbacks. Shared by the receive queues of connections
 * (`inbound.ts`) and of multiplexed streams.
 *
 * @module
 */

/** Nothing to read yet: the reader waits. */
export const WAIT: unique symbol = Symbol("wait");

/** What a read finds at once: a chunk, the end (`null`), the failure, or {@linkcode WAIT}. */
export type ReadNow = Uint8Array | null | Error | typeof WAIT;

/** Calls back with `now` unless it is {@linkcode WAIT}; false then, and the reader waits. */
export function callBack(
  now: ReadNow,
  onChunk: (chunk: Uint8Array | null) => void,
  onError: (error: Error) => void,
): boolean {
  if (now === WAIT) return false;
  if (now instanceof Error) onError(now);
  else onChunk(now);
  return true;
}

/** `now`, which is not {@linkcode WAIT}, as a settled promise. */
export function settled(now: Exclude<ReadNow, typeof WAIT>): Promise<Uint8Array | null> {
  return now instanceof Error ? Promise.reject(now) : Promise.resolve(now);
}
