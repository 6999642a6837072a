/**
 * Throwaway certificates for the TLS tests, made with `openssl` at test time
 * (no private key is ever committed). The files live in a temporary directory
 * only while `openssl` writes them; the PEM text is kept in memory.
 */

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type {
  ConnectOptions,
  ListenOptions,
  TlsConnectOptions,
  TlsListenOptions,
  Transport,
} from "../src/transport/types.ts";

/** PEM text of everything the TLS tests need. */
export interface TestCerts {
  /** A CA that signed `serverCert`. */
  caCert: string;
  /** Leaf for `localhost` and `127.0.0.1`, signed by `caCert`. */
  serverCert: string;
  /** Key of `serverCert`. */
  serverKey: string;
  /** An unrelated CA: trusting it must refuse `serverCert`. */
  otherCaCert: string;
  /** A self-signed leaf that names neither `localhost` nor `127.0.0.1`: only a pin can accept it. */
  selfSignedCert: string;
  /** Key of `selfSignedCert`. */
  selfSignedKey: string;
  /** `sha256:HEX` of `selfSignedCert`, as `openssl x509 -fingerprint -sha256` prints it (colons removed). */
  selfSignedFingerprint: string;
  /** `sha256:HEX` of `serverCert`. */
  serverFingerprint: string;
}

let cached: TestCerts | undefined;

/** Makes the certificates on first use; later calls return the same ones. */
export function testCerts(): TestCerts {
  if (cached) return cached;
  const dir = mkdtempSync(join(tmpdir(), "o3sr-certs-"));
  const at = (name: string) => join(dir, name);
  const openssl = (...args: string[]) =>
    execFileSync("openssl", args, { stdio: ["ignore", "pipe", "pipe"] }).toString();
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  const caExt = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"];
  const fingerprint = (cert: string) => {
    const out = openssl("x509", "-in", at(cert), "-noout", "-fingerprint", "-sha256");
    return `sha256:${out.split("=")[1].trim().replace(/:/g, "").toLowerCase()}`;
  };
  const days = ["-days", "2"];
  const newCert = (name: string, subject: string, ...extensions: string[]) =>
    openssl(
      "req",
      "-x509",
      ...ec,
      "-keyout",
      at(`${name}.key`),
      "-out",
      at(`${name}.crt`),
      ...days,
      "-subj",
      subject,
      ...extensions,
    );
  try {
    newCert("ca", "/CN=o3sr test CA", ...caExt);
    newCert("other", "/CN=o3sr other CA", ...caExt);
    newCert("self", "/CN=o3sr pinned", "-addext", "subjectAltName=DNS:pinned.invalid");
    openssl("req", ...ec, "-keyout", at("server.key"), "-out", at("server.csr"), "-subj", "/CN=localhost");
    writeFileSync(
      at("server.ext"),
      "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n" +
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    const signedByCa = ["-CA", at("ca.crt"), "-CAkey", at("ca.key"), "-CAcreateserial"];
    openssl(
      "x509",
      "-req",
      "-in",
      at("server.csr"),
      ...signedByCa,
      "-out",
      at("server.crt"),
      ...days,
      "-extfile",
      at("server.ext"),
    );
    const read = (name: string) => readFileSync(at(name), "utf8");
    cached = {
      caCert: read("ca.crt"),
      serverCert: read("server.crt"),
      serverKey: read("server.key"),
      otherCaCert: read("other.crt"),
      selfSignedCert: read("self.crt"),
      selfSignedKey: read("self.key"),
      selfSignedFingerprint: fingerprint("self.crt"),
      serverFingerprint: fingerprint("server.crt"),
    };
    return cached;
  } catch (error) {
    const stderr = (error as { stderr?: Uint8Array }).stderr;
    throw new Error(
      `making test certificates with openssl failed (is openssl 3 installed?): ${
        stderr ? new TextDecoder().decode(stderr) : error
      }`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A transport that adds options to every `listen` and `connect` of `inner`,
 * so the conformance cases run unchanged over TLS (or anything optional).
 */
export function withOptions(
  inner: Transport,
  listen: Partial<ListenOptions>,
  connect: Partial<ConnectOptions>,
  name = inner.name,
): Transport {
  return {
    name,
    listen: (options) => inner.listen({ ...options, ...listen }),
    connect: (options) => inner.connect({ ...options, ...connect }),
  };
}

/** {@linkcode withOptions} for TLS: the server presents `listen`, the client verifies with `connect`. */
export function withTls(inner: Transport, listen: TlsListenOptions, connect: TlsConnectOptions): Transport {
  return withOptions(inner, { tls: listen }, { tls: connect }, `${inner.name}+tls`);
}
