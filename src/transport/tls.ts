/**
 * TLS helpers shared by the adapters: option checks, certificate pinning and
 * error messages that say what to do. No runtime is named here; the adapters
 * run the handshakes.
 *
 * What each runtime does:
 *
 * - Bun (`bun.ts`): `Bun.listen({ tls })` / `Bun.connect({ tls })`. The
 *   server hands out a connection from Bun's `handshake` event and drops those
 *   that fail or time out; the client checks the server in that event (CA and
 *   name, or the pin via `getPeerCertificate().raw`).
 * - Deno (`deno.ts` + `node_tls.ts`): `node:tls` over Deno's TCP
 *   connections, because Deno's own TLS cannot close a connection whose
 *   handshake never completes, only adds a `ca` to its default roots, and
 *   never shows the peer's certificate.
 * - Both: handshakes run in the background with a timeout
 *   (`handshakeTimeout`, 10 s), so one silent peer never blocks `accept()`;
 *   a failed handshake only drops that connection (and is reported to
 *   `onHandshakeError`). Half-close works over TLS: `closeWrite()` sends
 *   close_notify and FIN, and the peer reads the end of the stream while data
 *   still flows the other way.
 *
 * @module
 */

import type { Addr, TlsConnectOptions, TlsListenOptions } from "./types.ts";
import { formatAddr } from "./types.ts";

let nodeTlsModule: Promise<unknown> | undefined;

/**
 * `node:tls`, imported on first use: loading it up front costs every process
 * 5-7 MiB, TLS or not.
 */
export function importNodeTls<T>(): Promise<T> {
  return (nodeTlsModule ??= import("node:tls")) as Promise<T>;
}

/** Handshake limit when the options give none. */
export const DEFAULT_HANDSHAKE_TIMEOUT = 10_000;

/** How a client verifies the server, resolved from {@linkcode TlsConnectOptions}. */
export type TlsVerification =
  | { mode: "default"; serverName: string }
  | { mode: "ca"; serverName: string; ca: string }
  | { mode: "fingerprint"; serverName: string; fingerprint: string }
  | { mode: "insecure"; serverName: string };

/**
 * Checks client TLS options and says how to verify the server.
 *
 * @param options the `tls` connect options
 * @param hostname the host dialed, the default server name
 * @throws {Error} naming the bad option when options conflict or a value is malformed
 */
export function tlsVerification(options: TlsConnectOptions, hostname: string): TlsVerification {
  const serverName = options.serverName || hostname;
  const given = [
    options.ca !== undefined ? "ca" : "",
    options.fingerprint !== undefined ? "fingerprint" : "",
    options.insecure ? "insecure" : "",
  ].filter(Boolean);
  if (given.length > 1) {
    throw new Error(
      `TLS options ${given.join(" and ")} exclude each other; give only one of ca, fingerprint or insecure`,
    );
  }
  if (options.fingerprint !== undefined) {
    return { mode: "fingerprint", serverName, fingerprint: normalizeFingerprint(options.fingerprint) };
  }
  if (options.ca !== undefined) {
    if (!options.ca.includes("-----BEGIN CERTIFICATE-----")) {
      throw new Error("TLS option ca is not a PEM certificate: expected text with -----BEGIN CERTIFICATE-----");
    }
    return { mode: "ca", serverName, ca: options.ca };
  }
  return options.insecure ? { mode: "insecure", serverName } : { mode: "default", serverName };
}

/**
 * Normalizes a certificate pin to 64 lowercase hex digits.
 *
 * @param pin `sha256:AB:CD:…`, `sha256:abcd…` or bare hex
 * @throws {Error} when it is not a SHA-256 fingerprint
 */
export function normalizeFingerprint(pin: string): string {
  const hex = pin.trim().replace(/^sha256:/i, "").replace(/:/g, "").toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new Error(
      `TLS fingerprint ${JSON.stringify(pin)} is not a SHA-256 fingerprint: expected "sha256:" and 64 hex digits, ` +
        `such as the output of: openssl x509 -in cert.pem -noout -fingerprint -sha256`,
    );
  }
  return hex;
}

/**
 * The pin of a DER-encoded certificate: `sha256:` and 64 lowercase hex digits.
 *
 * @param der the certificate as DER bytes
 */
export async function fingerprintOf(der: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", der as Uint8Array<ArrayBuffer>));
  return `sha256:${Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/**
 * The pin of the first certificate in PEM text, as a server operator would
 * publish it for clients' `fingerprint` option.
 *
 * @param pem one or more PEM certificates; the first is the leaf
 * @throws {Error} when there is no PEM certificate in the text
 */
export function fingerprintOfPem(pem: string): Promise<string> {
  const match = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/.exec(pem);
  if (!match) throw new Error("no PEM certificate found: expected text with -----BEGIN CERTIFICATE-----");
  const binary = atob(match[1].replace(/\s+/g, ""));
  const der = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) der[i] = binary.charCodeAt(i);
  return fingerprintOf(der);
}

/**
 * Checks a server's leaf certificate against a pin.
 *
 * @param der the peer's certificate as DER bytes, or nothing if it sent none
 * @param pin normalized pin (see {@linkcode normalizeFingerprint})
 * @param peer for the message
 * @throws {Error} saying which fingerprint was seen when it does not match
 */
export async function checkFingerprint(der: Uint8Array | undefined, pin: string, peer: string): Promise<void> {
  if (!der || der.length === 0) {
    throw new Error(`TLS server ${peer} sent no certificate to check against the pinned fingerprint`);
  }
  const seen = await fingerprintOf(der);
  if (seen !== `sha256:${pin}`) {
    throw new Error(
      `TLS server ${peer} presented certificate ${seen}, not the pinned sha256:${pin}; refusing it. ` +
        `If the server's certificate was replaced on purpose, update the pinned fingerprint.`,
    );
  }
}

/**
 * Turns a runtime's handshake failure into one line that says what was wrong
 * and what to do.
 *
 * @param error what the runtime threw
 * @param peer the server dialed
 * @param verification how the server was being verified
 */
export function tlsClientError(error: unknown, peer: Addr | string, verification: TlsVerification): Error {
  const where = typeof peer === "string" ? peer : formatAddr(peer);
  const message = (error instanceof Error ? error.message : String(error)).replace(/\.$/, "");
  if (/pinned/.test(message)) return new Error(message);
  let hint = "";
  if (/issuer|self[- ]signed|verify|unknown ?ca|UnknownIssuer|certificate chain/i.test(message)) {
    hint = verification.mode === "ca"
      ? " Is the server's certificate signed by the CA given in ca?"
      : " Give the CA that signed the server's certificate (ca), or pin the certificate (fingerprint).";
  } else if (/altname|hostname|NotValidForName|not valid for|does not match/i.test(message)) {
    hint = ` The certificate does not name ${
      JSON.stringify(verification.serverName)
    }; dial a name it holds or set serverName.`;
  } else if (/expired|not yet valid|Expired|NotValidYet/i.test(message)) {
    hint = " Check the certificate's validity dates and this machine's clock.";
  }
  return new Error(`TLS handshake with ${where} failed: ${message}.${hint}`);
}

/**
 * Checks a TLS listener's certificate and key before the runtime sees them,
 * whose own messages rarely say which one is wrong.
 *
 * @throws {Error} naming what is missing
 */
export function checkListenTls(tls: TlsListenOptions): void {
  if (typeof tls.cert !== "string" || !tls.cert.includes("-----BEGIN CERTIFICATE-----")) {
    throw new Error("TLS cert is not a PEM certificate chain: expected text with -----BEGIN CERTIFICATE-----");
  }
  if (
    typeof tls.key !== "string" || !/-----BEGIN ((RSA|EC) )?PRIVATE KEY-----/.test(tls.key) || /ENCRYPTED/.test(tls.key)
  ) {
    throw new Error(
      "TLS key is not an unencrypted PEM private key: expected text with -----BEGIN PRIVATE KEY----- " +
        "(or RSA/EC PRIVATE KEY); decrypt an encrypted key with: openssl pkey -in key.pem -out plain.pem",
    );
  }
}

/** The error for a handshake that took too long. */
export function handshakeTimeoutError(what: string, peer: Addr | string, ms: number): Error {
  const where = typeof peer === "string" ? peer : formatAddr(peer);
  return new Error(`${what} handshake with ${where} did not complete within ${ms} ms`);
}
