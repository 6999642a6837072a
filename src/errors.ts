/**
 * Errors shared across o3sr, and helpers to report any thrown value.
 *
 * @module
 */

/**
 * Bad command-line input or configuration: the CLI prints the message on one
 * line and exits with code 2.
 */
export class UsageError extends Error {
  /** @param message what was wrong and how to fix it */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The message of any thrown value. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Any thrown value as an `Error`. */
export function toError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
