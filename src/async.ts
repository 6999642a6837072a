/**
 * Small promise helpers: timeouts, cancellable pauses, promises made on demand.
 *
 * @module
 */

/**
 * A promise that is already resolved, shared: a hot path that returns it
 * instead of `Promise.resolve()` makes no promise per call. Safe to share,
 * since a settled promise never changes.
 */
export const RESOLVED: Promise<void> = Promise.resolve();

/**
 * Reports `error` as uncaught, from a microtask: for a loop over many items
 * (writers to flush, sessions to ping) that must go on past one that throws.
 */
export function reportLater(error: unknown): void {
  queueMicrotask(() => {
    throw error;
  });
}

/** Resolves when `promise` settles or after `ms`, whichever comes first. */
export function waitUntil(promise: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    promise.finally(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Resolves with `promise`'s value, or rejects with `message` after `ms`.
 * The timer never outlives the race; a value that arrives too late goes to
 * `dispose` (such as a connection to close).
 */
export function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  message: string,
  dispose?: (late: T) => void,
): Promise<T> {
  let timedOut = false;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      timedOut = true;
      reject(new Error(message));
    }, ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        if (timedOut) dispose?.(value);
        resolve(value);
      },
      (error) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/** Resolves after `ms`, or at once when `cancel` resolves. */
export function sleep(ms: number, cancel?: Promise<unknown>): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    cancel?.finally(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Settled with no value, or settled after its promise was made (which then holds the value): shared. */
const SETTLED = { value: undefined };

/**
 * A promise made only if someone asks for it, settled from outside. Most
 * connections and streams end without anyone awaiting their end (or their
 * acceptance), and an idle one holding an unused promise pays for it and
 * its resolving functions.
 */
export class Deferred<T> {
  readonly #quiet: boolean;
  #settled: { value: T } | { error: Error } | null = null;
  #promise: Promise<T> | null = null;
  #resolve: ((value: T) => void) | null = null;
  #reject: ((error: Error) => void) | null = null;

  /** @param quiet whether a rejection nobody handles goes unreported (it is reported some other way) */
  constructor(quiet = false) {
    this.#quiet = quiet;
  }

  /** The promise, made on first use; it settles as {@linkcode resolve} or {@linkcode reject} did or will. */
  get promise(): Promise<T> {
    if (this.#promise !== null) return this.#promise;
    const settled = this.#settled;
    if (settled === null) {
      this.#promise = new Promise<T>((resolve, reject) => {
        this.#resolve = resolve;
        this.#reject = reject;
      });
    } else {
      this.#promise = "error" in settled ? Promise.reject(settled.error) : Promise.resolve(settled.value);
    }
    if (this.#quiet) this.#promise.catch(() => {});
    return this.#promise;
  }

  /** Whether it was resolved or rejected. */
  get settled(): boolean {
    return this.#settled !== null;
  }

  /** Resolves with `value`, unless settled already. */
  resolve(value: T): void {
    if (this.#settled !== null) return;
    // An object per settled deferred only where a promise made later needs the value.
    this.#settled = this.#promise !== null || value === undefined ? SETTLED as { value: T } : { value };
    this.#resolve?.(value);
    this.#resolve = this.#reject = null;
  }

  /** Rejects with `error`, unless settled already. */
  reject(error: Error): void {
    if (this.#settled !== null) return;
    this.#settled = { error };
    this.#reject?.(error);
    this.#resolve = this.#reject = null;
  }
}

/**
 * A {@linkcode Deferred} for an end that may have come already: resolved at
 * once if `ended`. For `closed` getters that make theirs on first use, since
 * most connections and streams end without anyone asking.
 */
export function endSignal(ended: boolean): Deferred<void> {
  const deferred = new Deferred<void>();
  if (ended) deferred.resolve();
  return deferred;
}
