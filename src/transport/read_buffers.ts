/**
 * Read buffers for a connection whose runtime reads into memory it is given
 * (Deno). Reads land one after another in a buffer and each chunk is a view of
 * it; once every chunk of a buffer came back (lent by `Conn.readBorrowed` and
 * given back), the buffer is read into again. Allocating a fresh megabyte per
 * read costs a Deno forwarder about a quarter of its throughput.
 *
 * @module
 */

/**
 * Largest read, and the size of the buffers bulk reads share. Each read is a
 * Deno op with a cost of its own, so bulk data goes in reads this large
 * (against 256 KiB: about 15% more single-stream upload).
 */
export const MAX_READ = 1024 * 1024;
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

const EMPTY: Slab = { bytes: new Uint8Array(0), used: 0, out: 0, kept: true };

/** The read buffers of one connection. */
export class ReadBuffers {
  #current: Slab = EMPTY;
  /** Earlier buffers with chunks still out. */
  #older: Slab[] | null = null;
  /** Chunks lent and not given back yet. */
  #lent: Set<Uint8Array> | null = null;

  /** Free full-size buffers in the process. */
  static get free(): number {
    return freeBuffers.length;
  }

  /** Memory for the next read of up to `size` bytes: the rest of the current buffer, a free one, or a new one. */
  room(size: number): Uint8Array {
    let slab = this.#current;
    if (slab.out === 0 && !slab.kept && slab.bytes.length >= size) slab.used = 0;
    if (slab.bytes.length - slab.used < size) {
      if (slab.out > 0) (this.#older ??= []).push(slab);
      else this.#retire(slab);
      const length = size >= BULK_READ ? MAX_READ : size;
      const bytes = (length === MAX_READ ? freeBuffers.pop() : undefined) ?? new Uint8Array(length);
      slab = this.#current = { bytes, used: 0, out: 0, kept: false };
    }
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

  /** `chunk` is its reader's for good: its buffer is never read into again. */
  keep(chunk: Uint8Array): void {
    const slab = this.#find(chunk);
    if (slab === undefined) return;
    slab.kept = true;
    this.#settle(slab);
  }

  /** `chunk` is lent: its memory stays untouched until {@linkcode giveBack}. */
  lend(chunk: Uint8Array): void {
    (this.#lent ??= new Set()).add(chunk);
  }

  /** A lent chunk came back (anything else is ignored, so is a second give-back). */
  giveBack(chunk: Uint8Array): void {
    if (this.#lent?.delete(chunk) !== true) return;
    const slab = this.#find(chunk);
    if (slab !== undefined) this.#settle(slab);
  }

  #find(chunk: Uint8Array): Slab | undefined {
    if (chunk.buffer === this.#current.bytes.buffer) return this.#current;
    return this.#older?.find((slab) => slab.bytes.buffer === chunk.buffer);
  }

  /** One chunk of `slab` is no longer out. */
  #settle(slab: Slab): void {
    if (--slab.out > 0 || slab === this.#current) return;
    this.#older!.splice(this.#older!.indexOf(slab), 1);
    this.#retire(slab);
  }

  /** `slab` is no longer read into and none of its chunks is out. */
  #retire(slab: Slab): void {
    if (!slab.kept && slab.bytes.length === MAX_READ && freeBuffers.length < MAX_FREE_BUFFERS) {
      freeBuffers.push(slab.bytes);
    }
  }
}
