import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { describe, test } from "node:test";
import { fingerprintOfPem, normalizeFingerprint } from "../src/transport/tls.ts";
import type { Addr, Conn, TlsConnectOptions, TlsListenOptions } from "../src/transport/types.ts";
import { conformance } from "./_conformance.ts";
import { testCerts, withOptions, withTls } from "./_certs.ts";
import { delay, echo, readAll, runtime, serve, settlesWithin, tcp, waitFor, writeAll } from "./_helpers.ts";

const certs = testCerts();
const signed: TlsListenOptions = { cert: certs.serverCert, key: certs.serverKey };
const selfSigned: TlsListenOptions = { cert: certs.selfSignedCert, key: certs.selfSignedKey };
const text = (s: string) => new TextEncoder().encode(s);

conformance(
  `tls (${runtime}), verified by ca`,
  () => withTls(tcp(), signed, { ca: certs.caCert, serverName: "localhost" }),
);
conformance(
  `tls (${runtime}), pinned fingerprint`,
  () => withTls(tcp(), selfSigned, { fingerprint: certs.selfSignedFingerprint }),
);

/** Dials a TLS echo server presenting `listen` with the client options `connect`; resolves with what came back. */
async function roundTrip(listen: TlsListenOptions, connect: TlsConnectOptions): Promise<string> {
  const server = await serve(withTls(tcp(), listen, {}), echo);
  try {
    const conn = await tcp().connect({ hostname: "127.0.0.1", port: server.port, tls: connect });
    await writeAll(conn, text("over tls"));
    const reply = new TextDecoder().decode(await readAll(conn));
    conn.close();
    return reply;
  } finally {
    server.close();
  }
}

describe(`tls (${runtime}): verifying the server`, () => {
  test("a server certificate from the given CA is trusted, by IP address and by name", async () => {
    assert.equal(await roundTrip(signed, { ca: certs.caCert }), "over tls");
    assert.equal(await roundTrip(signed, { ca: certs.caCert, serverName: "localhost" }), "over tls");
  });

  test("a certificate from another CA is refused", async () => {
    await assert.rejects(
      roundTrip(signed, { ca: certs.otherCaCert, serverName: "localhost" }),
      /TLS handshake with 127\.0\.0\.1:\d+ failed: .*signed by the CA given in ca/,
    );
  });

  test("a certificate that does not name the server is refused", async () => {
    await assert.rejects(
      roundTrip(signed, { ca: certs.caCert, serverName: "example.com" }),
      /TLS handshake with 127\.0\.0\.1:\d+ failed/,
    );
  });

  test("the default CA store does not trust a private CA", async () => {
    await assert.rejects(roundTrip(signed, {}), /TLS handshake with 127\.0\.0\.1:\d+ failed/);
    await assert.rejects(roundTrip(signed, { serverName: "localhost" }), /TLS handshake with 127\.0\.0\.1:\d+ failed/);
  });

  test("the default CA store is used: a CA added to it is trusted (child process)", async () => {
    // The runtime reads extra CAs from the environment at start, so only a child process can show this.
    const server = await serve(withTls(tcp(), signed, {}), echo);
    const dir = mkdtempSync(join(tmpdir(), "o3sr-tls-"));
    try {
      writeFileSync(join(dir, "ca.pem"), certs.caCert);
      const adapter = new URL(`../src/transport/${runtime}.ts`, import.meta.url).href;
      writeFileSync(
        join(dir, "client.ts"),
        `import { ${runtime}Transport } from ${JSON.stringify(adapter)};
const conn = await ${runtime}Transport().connect({ hostname: "127.0.0.1", port: ${server.port}, tls: {} });
await conn.write(new TextEncoder().encode("default store"));
await conn.closeWrite();
let out = "";
for (let c = await conn.read(); c !== null; c = await conn.read()) out += new TextDecoder().decode(c);
conn.close();
console.log(out);
`,
      );
      const args = runtime === "deno" ? ["run", "-A", join(dir, "client.ts")] : [join(dir, "client.ts")];
      const env = { ...process.env, DENO_CERT: join(dir, "ca.pem"), NODE_EXTRA_CA_CERTS: join(dir, "ca.pem") };
      const stdout = await new Promise<string>((resolve, reject) => {
        execFile(process.execPath, args, { env, timeout: 15_000 }, (error, stdout, stderr) => {
          if (error) reject(new Error(`client failed: ${error.message}\n${stderr}`));
          else resolve(String(stdout));
        });
      });
      assert.equal(stdout.trim(), "default store");
    } finally {
      rmSync(dir, { recursive: true, force: true });
      server.close();
    }
  });

  test("a pinned fingerprint accepts a self-signed certificate, however the pin is spelled", async () => {
    const hex = certs.selfSignedFingerprint.slice("sha256:".length);
    const colons = `SHA256:${hex.toUpperCase().match(/../g)!.join(":")}`;
    assert.equal(await roundTrip(selfSigned, { fingerprint: colons }), "over tls");
    assert.equal(await roundTrip(selfSigned, { fingerprint: hex }), "over tls");
    // The pin alone decides: the server's name and CA do not matter.
    assert.equal(
      await roundTrip(signed, { fingerprint: certs.serverFingerprint, serverName: "elsewhere.invalid" }),
      "over tls",
    );
  });

  test("a wrong fingerprint is refused, naming the certificate seen", async () => {
    // Fresh server names: Deno resumes sessions by name, and this process's
    // servers share ticket keys, so a resumed session would show the
    // certificate of an earlier server.
    await assert.rejects(
      roundTrip(selfSigned, { fingerprint: certs.serverFingerprint, serverName: "wrong-pin-1.invalid" }),
      (error: Error) => error.message.includes(certs.selfSignedFingerprint) && /not the pinned/.test(error.message),
    );
    // Even a certificate the CA vouches for is refused when the pin does not match it.
    await assert.rejects(
      roundTrip(signed, { fingerprint: certs.selfSignedFingerprint, serverName: "wrong-pin-2.invalid" }),
      /not the pinned/,
    );
  });

  test("insecure accepts any certificate", async () => {
    assert.equal(await roundTrip(selfSigned, { insecure: true }), "over tls");
    assert.equal(await roundTrip(signed, { insecure: true, serverName: "example.com" }), "over tls");
  });

  test("conflicting or malformed options are refused with a message saying which", async () => {
    const server = await serve(withTls(tcp(), signed, {}), echo);
    const dial = (tls: TlsConnectOptions) => tcp().connect({ hostname: "127.0.0.1", port: server.port, tls });
    await assert.rejects(
      dial({ ca: certs.caCert, fingerprint: certs.serverFingerprint }),
      /ca and fingerprint exclude each other/,
    );
    await assert.rejects(dial({ fingerprint: "sha256:1234" }), /not a SHA-256 fingerprint/);
    await assert.rejects(dial({ ca: "not a certificate" }), /ca is not a PEM certificate/);
    server.close();
    await assert.rejects(
      tcp().listen({ hostname: "127.0.0.1", port: 0, tls: { cert: "x", key: certs.serverKey } }),
      /TLS cert is not a PEM/,
    );
    await assert.rejects(
      tcp().listen({ hostname: "127.0.0.1", port: 0, tls: { cert: certs.serverCert, key: "x" } }),
      /TLS key is not/,
    );
    await assert.rejects(
      tcp().listen({ hostname: "127.0.0.1", port: 0, tls: { cert: certs.selfSignedCert, key: certs.serverKey } }),
      /TLS cert and key were refused: .*Check that the key belongs to the certificate/,
    );
  });

  test("fingerprints match openssl's", async () => {
    assert.equal(await fingerprintOfPem(certs.selfSignedCert), certs.selfSignedFingerprint);
    assert.equal(await fingerprintOfPem(certs.serverCert + certs.caCert), certs.serverFingerprint);
    assert.equal(normalizeFingerprint(certs.serverFingerprint.toUpperCase()), certs.serverFingerprint.slice(7));
  });
});

describe(`tls (${runtime}): handshakes never hold up the listener`, () => {
  async function tlsServer(handshakeTimeout: number) {
    const errors: Array<[Error, Addr]> = [];
    const transport = withOptions(tcp(), {
      tls: { ...signed, handshakeTimeout },
      onHandshakeError: (error, remote) => errors.push([error, remote]),
    }, {});
    const listener = await transport.listen({ hostname: "127.0.0.1", port: 0 });
    return { listener, errors, port: listener.addr.port };
  }

  test("a silent TCP peer does not block accept() of a good TLS client, and is dropped after handshakeTimeout", async () => {
    const { listener, errors, port } = await tlsServer(400);
    const silent = await tcp().connect({ hostname: "127.0.0.1", port });
    const silentPort = silent.localAddr.port;
    await delay(50);
    const accepted = listener.accept();
    const client = await tcp().connect({ hostname: "127.0.0.1", port, tls: { ca: certs.caCert } });
    assert.ok(await settlesWithin(accepted, 2000), "accept() waited for the silent peer");
    const conn = (await accepted)!;
    assert.equal(conn.remoteAddr.port, client.localAddr.port);
    await client.write(text("hi"));
    assert.deepEqual(await conn.read(), text("hi"));
    await waitFor(() => errors.length > 0, 3000, "the silent peer to be reported");
    assert.match(errors[0][0].message, /TLS handshake .* did not complete within 400 ms/);
    assert.equal(errors[0][1].port, silentPort);
    assert.equal(await silent.read().catch(() => null), null, "the silent peer was not dropped");
    silent.close();
    client.close();
    conn.close();
    listener.close();
  });

  test("a peer that does not speak TLS is dropped and reported; serving goes on", async () => {
    const { listener, errors, port } = await tlsServer(5000);
    const plain = await tcp().connect({ hostname: "127.0.0.1", port });
    await plain.write(text("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await waitFor(() => errors.length > 0, 3000, "the plain-text peer to be reported");
    assert.match(errors[0][0].message, /TLS/);
    const accepted = listener.accept();
    const client: Conn = await tcp().connect({ hostname: "127.0.0.1", port, tls: { ca: certs.caCert } });
    const conn = (await accepted)!;
    await conn.write(text("still serving"));
    assert.deepEqual(await client.read(), text("still serving"));
    plain.close();
    client.close();
    conn.close();
    listener.close();
  });
});
