/**
 * Small promise helpers for timeouts and cancellable pauses.
 *
 * @module
 */

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
