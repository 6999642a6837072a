/**
 * How much receive window streams get. A stream starts with a small window and
 * doubles it, up to the session's `window`, each time it grants credit while
 * its reader keeps up. The growth comes out of a budget shared by every session
 * in the process, so many streams whose readers stall cannot make it buffer
 * gigabytes: each holds its initial window, and the grown ones together hold
 * at most the budget.
 *
 * @module
 */

/** Credit a new stream starts with (announced in HELLO), unless the session's window is smaller. */
export const INITIAL_WINDOW = 256 * 1024;

/** Default size of {@linkcode sharedWindowBudget}: room for 16 streams at a 4 MiB window. */
export const DEFAULT_WINDOW_BUDGET = 64 * 1024 * 1024;

/** Bytes of receive window that streams may grow by beyond their initial window. */
export class WindowBudget {
  /** The budget's size in bytes. */
  readonly size: number;
  #left: number;

  /** @param size bytes the streams sharing this budget may grow by, together */
  constructor(size: number) {
    if (!Number.isInteger(size) || size < 0) {
      throw new RangeError(`Cannot make a window budget of ${size} bytes: it must be a whole number >= 0`);
    }
    this.size = size;
    this.#left = size;
  }

  /** Bytes still available. */
  get available(): number {
    return this.#left;
  }

  /** Takes `bytes` if that many are left; returns whether it did. */
  take(bytes: number): boolean {
    if (bytes > this.#left) return false;
    this.#left -= bytes;
    return true;
  }

  /** Returns `bytes` taken earlier. */
  give(bytes: number): void {
    this.#left = Math.min(this.size, this.#left + bytes);
  }
}

/** The budget sessions share unless given their own. */
export const sharedWindowBudget: WindowBudget = new WindowBudget(DEFAULT_WINDOW_BUDGET);
