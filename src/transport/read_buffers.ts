/**
 * Read buffers for a connection whose runtime reads into memory it is given
 * (Deno). Reads land one after another in a buffer and each chunk is a view of
 * it; once every chunk of a buffer came back (lent by `Conn.readBorrowed` and
 * given back), the buffer is read into again. Allocating a fresh megabyte per
 * read costs a Deno forwarder about 30% of its throughput.
 *
 * @module
 */

/**
 * Largest read, and the size of the buffers bulk reads share. Each read is a
 * Deno op with a cost of its own, so bulk data goes in reads this large
 * (against 256 KiB: about 15% more single-stream upload). 1 MiB reads move no
 * more and hold more memory.
 */
export const MAX_READ = 512 * 1024;
/** Reads at least this large land in buffers of {@linkcode MAX_READ} bytes. */
const BULK_READ = 64 * 1024;
/**
 * Free full-size buffers, shared by the process's connections so that one
 * gone quiet holds none: chunks come back out of order and in bursts, so one
 * spare per connection would often be taken already.
 */
const freeBuffers: Uint8Array[] = [];
const MAX_FREE_BUFFERS = 16;

/** One buffer reads land in, one after another. */
interface Slab {
  readonly bytes: Uint8Array;
  used: number;
  /** Chunks read into it that are queued or lent. */
  out: number;
  /** Whether a chunk of it is the reader's for good: then it is never read into again. */
  kept: boolean;
}

/**
 * An earlier buffer with chunks still out. Held weakly: a chunk that is never
 * given back (its reader failed) must not keep its buffer alive here.
 */
interface Older {
  readonly memory: WeakRef<ArrayBufferLike>;
  out: number;
  kept: boolean;
}

/**
 * Chunks lent and not given back yet, by every connection's buffers: one set
 * for the process, since a set per connection cost each idle one that lent a
 * chunk about 140 bytes.
 */
const lent = new WeakSet<Uint8Array>();

const EMPTY: Slab = { bytes: new Uint8Array(0), used: 0, out: 0, kept: true };

/** The read buffers of one connection. */
export class ReadBuffers {
  #current: Slab = EMPTY;
  #older: Older[] | null = null;

  /**
   * Memory for the next read of up to `size` bytes: the rest of the current
   * buffer, a free one, or a new one. A bulk read may get less than `size`:
   * the rest of a full-size buffer, if at least {@linkcode BULK_READ}, so
   * that reads land back to back and queued chunks can join up (see
   * {@linkcode ReadBuffers.joined}).
   */
  room(size: number): Uint8Array {
    let slab = this.#current;
    if (slab.out === 0 && !slab.kept && slab.bytes.length >= size) slab.used = 0;
    const rest = slab.bytes.length - slab.used;
    if (size >= BULK_READ && rest >= BULK_READ && slab.bytes.length === MAX_READ) size = Math.min(size, rest);
    if (rest < size) {
      // Only full-size buffers are ever read into again, so only they are
      // followed once reads move on; a small one is left to its chunks.
      if (slab.bytes.length === MAX_READ) {
        if (slab.out > 0) this.#moveOn(slab);
        else this.#retire(slab.bytes.buffer, slab.kept);
      }
      const length = size >= BULK_READ ? MAX_READ : size;
      const bytes = (length === MAX_READ ? freeBuffers.pop() : undefined) ?? new Uint8Array(length);
      slab = this.#current = { bytes, used: 0, out: 0, kept: false };
    }
    // The whole buffer as it is (an idle connection's read): its pending read then holds no view besides.
    if (slab.used === 0 && size === slab.bytes.length) return slab.bytes;
    return slab.bytes.subarray(slab.used, slab.used + size);
  }

  /** The read into the last {@linkcode room} got `n` bytes: the chunk they are, now out. */
  filled(n: number): Uint8Array {
    const slab = this.#current;
    const chunk = slab.bytes.subarray(slab.used, slab.used + n);
    slab.used += n;
    slab.out++;
    return chunk;
  }

  /**
   * The chunk of the last {@linkcode filled} became part of the chunk read
   * just before it, which is still queued: the two are out as one.
   */
  joined(): void {
    this.#current.out--;
  }

  /** `chunk` is its reader's for good: its buffer is never read into again. */
  keep(chunk: Uint8Array): void {
    this.#settle(chunk, true);
  }

  /** `chunk` is lent: its memory stays untouched until {@linkcode giveBack}. */
  lend(chunk: Uint8Array): void {
    lent.add(chunk);
  }

  /** A lent chunk came back (anything else is ignored, so is a second give-back). */
  giveBack(chunk: Uint8Array): void {
    if (lent.delete(chunk)) this.#settle(chunk, false);
  }

  /** One chunk is no longer out: its buffer is free once none is. */
  #settle(chunk: Uint8Array, kept: boolean): void {
    const current = this.#current;
    if (chunk.buffer === current.bytes.buffer) {
      current.out--;
      current.kept ||= kept;
      return;
    }
    const older = this.#older;
    if (older === null) return;
    let at = 0;
    while (at < older.length && older[at].memory.deref() !== chunk.buffer) at++;
    if (at === older.length) return;
    const entry = older[at];
    entry.kept ||= kept;
    if (--entry.out > 0) return;
    older.splice(at, 1);
    const memory = entry.memory.deref();
    if (memory !== undefined) this.#retire(memory, entry.kept);
  }

  /** Reads move on to another buffer while chunks of `slab` are still out. */
  #moveOn(slab: Slab): void {
    const older = this.#older ??= [];
    // Forget buffers the collector took: their chunks will never come back.
    if (older.length >= 8) this.#older = older.filter((entry) => entry.memory.deref() !== undefined);
    this.#older.push({ memory: new WeakRef(slab.bytes.buffer), out: slab.out, kept: slab.kept });
  }

  /** A buffer is no longer read into and none of its chunks is out. */
  #retire(memory: ArrayBufferLike, kept: boolean): void {
    if (!kept && memory.byteLength === MAX_READ && freeBuffers.length < MAX_FREE_BUFFERS) {
      freeBuffers.push(new Uint8Array(memory));
    }
  }
}
