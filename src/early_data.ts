/**
 * What a client sends before its relay has accepted the stream. The matcher
 * forwards it at once instead of waiting for the acceptance, saving a round
 * trip per connection, and keeps a copy: if the relay refuses the stream
 * (its destination is unreachable), the bytes are sent again on the next
 * relay tried, so failover still loses nothing.
 *
 * @module
 */

import type { Stream } from "./protocol/stream.ts";
import type { Conn } from "./transport/types.ts";

/** Bytes kept for a replay at most; past this the client waits for the acceptance. */
export const EARLY_DATA_LIMIT = 64 * 1024;

type ReadOutcome = { chunk: Uint8Array | null } | { error: unknown };

/** The client's bytes sent ahead of a stream's acceptance, kept for a replay. */
export class EarlyData {
  readonly #client: Conn;
  readonly #limit: number;
  #chunks: Uint8Array[] = [];
  #bytes = 0;
  #ended = false;
  /** The client read under way, until its outcome is used or it is handed over. */
  #pending: Promise<Uint8Array | null> | null = null;
  #outcome: ReadOutcome | null = null;
  /** Wakes `send()` once the read completes or the stream is answered. */
  #wake: (() => void) | null = null;

  /**
   * @param client the client connection; only this reads from it until the stream is accepted
   * @param limit bytes kept at most
   */
  constructor(client: Conn, limit = EARLY_DATA_LIMIT) {
    this.#client = client;
    this.#limit = limit;
  }

  /** Bytes of the client's sent so far (and kept). */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Replays what was kept onto `stream`, then forwards what the client sends
   * until the peer accepts or refuses it.
   *
   * @returns null once the stream is accepted, or the error it was refused with
   * @throws the client connection's error, if reading it fails
   */
  async send(stream: Stream): Promise<Error | null> {
    const refusal = stream.accepted.then(() => null, (error: Error) => error);
    let answered = false;
    refusal.then(() => {
      answered = true;
      this.#wake?.();
    });
    try {
      for (const chunk of this.#chunks) await stream.write(chunk);
      if (this.#ended) await stream.closeWrite();
      while (!this.#ended && this.#bytes < this.#limit) {
        if (this.#pending === null) this.#read();
        if (!answered && this.#outcome === null) await new Promise<void>((resolve) => this.#wake = resolve);
        this.#wake = null;
        if (answered) return await refusal;
        const outcome = this.#outcome!;
        this.#outcome = null;
        this.#pending = null;
        if ("error" in outcome) throw outcome.error;
        if (outcome.chunk === null) {
          this.#ended = true;
          await stream.closeWrite();
        } else {
          this.#chunks.push(outcome.chunk);
          this.#bytes += outcome.chunk.length;
          await stream.write(outcome.chunk);
        }
      }
    } catch (error) {
      // A stream that failed while sending was refused: its answer says why.
      if (!stream.open) return await refusal;
      throw error;
    }
    return await refusal;
  }

  /**
   * After the acceptance: the client read still under way, whose result is
   * the next chunk to copy (none if no read is pending). The kept bytes are
   * dropped, since no replay can be needed any more.
   */
  takePendingRead(): Promise<Uint8Array | null> | undefined {
    this.#chunks = [];
    const pending = this.#pending;
    const outcome = this.#outcome;
    this.#pending = null;
    this.#outcome = null;
    if (outcome !== null) return "error" in outcome ? Promise.reject(outcome.error) : Promise.resolve(outcome.chunk);
    if (pending === null) return this.#ended ? Promise.resolve(null) : undefined;
    // Handed over as it is: #read's handlers on it keep a failure from going unhandled.
    return pending;
  }

  #read(): void {
    this.#pending = this.#client.read();
    this.#pending.then(this.#onChunk, this.#onError);
  }

  // Bound once: an idle client's read holds these, not a chain of wrappers.
  readonly #onChunk = (chunk: Uint8Array | null): void => this.#settle({ chunk });
  readonly #onError = (error: unknown): void => this.#settle({ error });

  #settle(outcome: ReadOutcome): void {
    // Handed over already: the pipe has it.
    if (this.#pending === null) return;
    this.#outcome = outcome;
    this.#wake?.();
  }
}
