/**
 * Token authentication by challenge and response. The matcher sends a fresh
 * random nonce; the relay answers HMAC-SHA256(token, nonce ‖ context). The
 * token never crosses the wire, an answer is worthless for any other nonce,
 * and the check is WebCrypto's constant-time HMAC verification.
 *
 * @module
 */

import type { NamedToken } from "./config.ts";

/** What an answer is bound to, besides the nonce: the protocol and the kind of connection. */
export const AUTH_CONTEXT = "o3sr/auth/v1/session";

const encoder = new TextEncoder();

/** A fresh 32-byte nonce, base64-encoded. */
export function newNonce(): string {
  return toBase64(crypto.getRandomValues(new Uint8Array(32)));
}

/**
 * Answers a challenge.
 *
 * @param token the shared secret
 * @param nonce the matcher's nonce, as sent
 * @param context what the answer is for
 * @returns base64 HMAC-SHA256(token, nonce ‖ context)
 */
export async function answerChallenge(token: string, nonce: string, context = AUTH_CONTEXT): Promise<string> {
  const key = await hmacKey(token, ["sign"]);
  const mac = await crypto.subtle.sign("HMAC", key, message(nonce, context));
  return toBase64(new Uint8Array(mac));
}

/** Checks answers against a set of named tokens. */
export class TokenVerifier {
  readonly #keys: Promise<Array<{ name: string; key: CryptoKey }>>;

  /** @param tokens the accepted tokens; their names appear in logs, the tokens never do */
  constructor(tokens: readonly NamedToken[]) {
    this.#keys = Promise.all(tokens.map(async ({ name, token }) => ({ name, key: await hmacKey(token, ["verify"]) })));
  }

  /**
   * Finds the token an answer was made with.
   *
   * @returns the token's name, or null when no token matches
   */
  async verify(nonce: string, answer: unknown, context = AUTH_CONTEXT): Promise<string | null> {
    if (typeof answer !== "string") return null;
    const mac = fromBase64(answer);
    if (mac === null || mac.length !== 32) return null;
    const data = message(nonce, context);
    let match: string | null = null;
    for (const { name, key } of await this.#keys) {
      // Try every token, so the time taken does not tell which one matched.
      if (await crypto.subtle.verify("HMAC", key, mac as Uint8Array<ArrayBuffer>, data)) match ??= name;
    }
    return match;
  }
}

function hmacKey(token: string, usages: KeyUsage[]): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", encoder.encode(token), { name: "HMAC", hash: "SHA-256" }, false, usages);
}

function message(nonce: string, context: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(`${nonce}\n${context}`);
}

function toBase64(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

function fromBase64(text: string): Uint8Array | null {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}
