/**
 * Relay selection: which of the connected relay sessions gets the next client.
 *
 * @module
 */

import type { Balance } from "./config.ts";

/** What a strategy needs to know about a candidate. */
export interface Candidate {
  /** Streams open on it now. */
  readonly openStreams: number;
}

/** Picks one candidate from a non-empty list. */
export type Picker<T extends Candidate> = (candidates: readonly T[]) => T;

/**
 * Creates a picker for a strategy:
 * - `random`: uniformly at random, as O3SR does;
 * - `round-robin`: each in turn;
 * - `least-streams`: the one with the fewest open streams (the earliest on ties).
 *
 * @param strategy the strategy name
 * @param random a source of numbers in [0, 1), for tests
 * @returns a function that picks from a non-empty list
 */
export function createPicker<T extends Candidate>(strategy: Balance, random: () => number = Math.random): Picker<T> {
  switch (strategy) {
    case "random":
      return (candidates) => candidates[Math.floor(random() * candidates.length)];
    case "round-robin": {
      let turn = 0;
      return (candidates) => candidates[turn++ % candidates.length];
    }
    case "least-streams":
      return (candidates) => candidates.reduce((best, c) => c.openStreams < best.openStreams ? c : best);
  }
}
