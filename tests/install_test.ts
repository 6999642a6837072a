/**
 * install.sh against a fake release: a directory (served as file:// or over
 * loopback HTTP) of shell scripts standing in for the binaries, with a
 * correct SHA256SUMS. Fake `uname`, `id` and `curl` first on PATH simulate
 * other platforms and record URLs; a PATH without a tool simulates its
 * absence. Runs under sh and, if present, bash. Skipped on Windows, which
 * install.sh does not serve.
 */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import process from "node:process";
import { after, describe, test } from "node:test";
import { repoRoot } from "./_helpers.ts";

const windows = process.platform === "win32";
const script = join(repoRoot, "install.sh");
const shells = ["sh", "bash"].filter((shell) => onPath(shell) !== null);
const VERSION_LINE = "o3sr 9.9.9 (fake";

/** An executable named `name` on PATH, or null. */
function onPath(name: string, path = process.env.PATH ?? ""): string | null {
  for (const dir of path.split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

/** This file's temporary directory; made, and removed after, in the describe block below. */
let root = "";
let dirs = 0;

/** A fresh directory under this file's temporary root. */
function freshDir(name: string): string {
  const dir = join(root, `${name}-${++dirs}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Writes an executable shell script. */
function writeScript(path: string, body: string): void {
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
}

/**
 * A fake release: every asset install.sh may pick, each printing which one
 * it is for --version, and SHA256SUMS listing them all.
 */
function fakeRelease(): string {
  const dir = freshDir("release");
  let sums = "";
  for (const flavor of ["", "deno-"]) {
    for (const target of ["linux-x64", "linux-arm64", "darwin-x64", "darwin-arm64"]) {
      const asset = `o3sr-${flavor}${target}`;
      writeScript(join(dir, asset), `echo "${VERSION_LINE} ${asset})"`);
      sums += `${createHash("sha256").update(readFileSync(join(dir, asset))).digest("hex")}  ${asset}\n`;
    }
  }
  writeFileSync(join(dir, "SHA256SUMS"), sums);
  return dir;
}

/** A directory of stand-in commands: `uname` reporting `system`/`machine`, `id` reporting a non-root user. */
function fakeTools(system: string, machine: string): string {
  const dir = freshDir("bin");
  writeScript(join(dir, "uname"), `case "$1" in -m) echo ${machine} ;; *) echo ${system} ;; esac`);
  writeScript(join(dir, "id"), "echo 1000");
  return dir;
}

/** A directory linking every command on PATH except `missing`: a PATH without those tools. */
function pathWithout(...missing: string[]): string {
  const dir = freshDir("path");
  for (const from of (process.env.PATH ?? "").split(delimiter)) {
    if (!from || !existsSync(from)) continue;
    for (const name of readdirSync(from)) {
      if (missing.includes(name) || existsSync(join(dir, name))) continue;
      try {
        symlinkSync(join(from, name), join(dir, name));
      } catch {
        // A name that cannot be linked is not one install.sh uses.
      }
    }
  }
  return dir;
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

interface RunOptions {
  shell?: string;
  /** Directories put first on PATH. */
  first?: string[];
  /** Replaces PATH (before `first`). */
  path?: string;
  env?: Record<string, string | undefined>;
}

/** Runs install.sh (asynchronously, so an HTTP server in this process can answer it). */
function install(args: string[], options: RunOptions = {}): Promise<Run> {
  const path = [...(options.first ?? []), options.path ?? process.env.PATH ?? ""].join(delimiter);
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries({ ...process.env, HOME: freshDir("home"), ...options.env, PATH: path })) {
    if (value !== undefined) env[key] = value;
  }
  const shell = onPath(options.shell ?? "sh")!;
  return new Promise((resolve, reject) => {
    const child = spawn(shell, [script, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (data) => stdout += data);
    child.stderr.on("data", (data) => stderr += data);
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

/** Asserts a failure: exit status 1 and one line on stderr matching `pattern`. */
function assertFails(result: Run, pattern: RegExp): void {
  assert.equal(result.status, 1, `expected exit 1; stdout:\n${result.stdout}\nstderr:\n${result.stderr}`);
  assert.match(result.stderr, pattern);
  assert.equal(result.stderr.trim().split("\n").length, 1, `one line on stderr, got:\n${result.stderr}`);
}

/** Whether `dir` holds anything (a half-installed file, a staged copy). */
function isEmpty(dir: string): boolean {
  return !existsSync(dir) || readdirSync(dir).length === 0;
}

describe(
  "install.sh",
  { skip: windows && "install.sh serves Linux and macOS; Windows users download the .exe" },
  () => {
    // In the block, not at the top level: Deno does not always run a top-level after().
    if (!windows) root = mkdtempSync(join(tmpdir(), "o3sr-install-"));
    after(() => {
      if (root) rmSync(root, { recursive: true, force: true });
    });
    const release = windows ? "" : fakeRelease();
    const fileUrl = `file://${release}`;
    const linuxX64 = windows ? "" : fakeTools("Linux", "x86_64");

    for (const shell of shells) {
      test(`${shell}: installs the verified binary for the platform and prints its version`, async () => {
        const prefix = join(freshDir("prefix"), "bin");
        const result = await install(["--prefix", prefix], {
          shell,
          first: [linuxX64],
          env: { O3SR_BASE_URL: fileUrl },
        });
        assert.equal(result.status, 0, result.stderr);
        const installed = join(prefix, "o3sr");
        assert.deepEqual(readFileSync(installed), readFileSync(join(release, "o3sr-linux-x64")));
        assert.ok((statSync(installed).mode & 0o111) === 0o111, "executable by everyone");
        assert.match(
          result.stdout,
          new RegExp(`installed ${installed}: ${VERSION_LINE.replace(/[().]/g, "\\$&")} o3sr-linux-x64\\)`),
        );
        assert.deepEqual(readdirSync(prefix), ["o3sr"], "no staged copy left behind");
      });
    }

    test("reinstalling replaces the binary", async () => {
      const prefix = freshDir("prefix");
      writeFileSync(join(prefix, "o3sr"), "an older o3sr");
      const result = await install(["--prefix", prefix], { first: [linuxX64], env: { O3SR_BASE_URL: fileUrl } });
      assert.equal(result.status, 0, result.stderr);
      assert.deepEqual(readFileSync(join(prefix, "o3sr")), readFileSync(join(release, "o3sr-linux-x64")));
    });

    test("detects this machine's platform with the real uname", async () => {
      const os = { linux: "linux", darwin: "darwin" }[process.platform as string];
      const arch = { x64: "x64", arm64: "arm64" }[process.arch as string];
      if (!os || !arch) return; // No release binary for this host: the unsupported cases below cover it.
      const prefix = freshDir("prefix");
      const result = await install(["--prefix", prefix, "--base-url", fileUrl]);
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stdout, new RegExp(` o3sr-${os}-${arch}\\)`));
    });

    for (
      const [system, machine, asset] of [
        ["Linux", "aarch64", "o3sr-linux-arm64"],
        ["Linux", "amd64", "o3sr-linux-x64"],
        ["Darwin", "arm64", "o3sr-darwin-arm64"],
      ]
    ) {
      test(`uname ${system} ${machine} picks ${asset}`, async () => {
        const prefix = freshDir("prefix");
        const result = await install(["--prefix", prefix, "--base-url", fileUrl], {
          first: [fakeTools(system, machine)],
        });
        assert.equal(result.status, 0, result.stderr);
        assert.match(result.stdout, new RegExp(` ${asset}\\)`));
      });
    }

    test("--deno picks the o3sr-deno-* asset", async () => {
      const prefix = freshDir("prefix");
      const result = await install(["--deno", "--prefix", prefix], {
        first: [linuxX64],
        env: { O3SR_BASE_URL: fileUrl },
      });
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stdout, / o3sr-deno-linux-x64\)/);
      assert.deepEqual(readFileSync(join(prefix, "o3sr")), readFileSync(join(release, "o3sr-deno-linux-x64")));
    });

    test("a tampered asset fails the checksum and nothing is installed", async () => {
      const tampered = freshDir("tampered");
      for (const name of readdirSync(release)) writeFileSync(join(tampered, name), readFileSync(join(release, name)));
      writeScript(join(tampered, "o3sr-linux-x64"), 'echo "o3sr 6.6.6 (evil)"');
      const prefix = join(freshDir("prefix"), "bin");
      const result = await install(["--prefix", prefix], {
        first: [linuxX64],
        env: { O3SR_BASE_URL: `file://${tampered}` },
      });
      assertFails(result, /checksum mismatch for o3sr-linux-x64: .*nothing was installed/);
      assert.ok(isEmpty(prefix), `nothing installed in ${prefix}`);
    });

    test("an asset missing from SHA256SUMS is refused", async () => {
      const unlisted = freshDir("unlisted");
      for (const name of readdirSync(release)) writeFileSync(join(unlisted, name), readFileSync(join(release, name)));
      writeFileSync(join(unlisted, "SHA256SUMS"), "");
      const prefix = freshDir("prefix");
      const result = await install(["--prefix", prefix, "--base-url", `file://${unlisted}`], { first: [linuxX64] });
      assertFails(result, /SHA256SUMS lists no o3sr-linux-x64/);
      assert.ok(isEmpty(prefix));
    });

    test("an unsupported CPU fails clearly", async () => {
      const prefix = freshDir("prefix");
      const result = await install(["--prefix", prefix, "--base-url", fileUrl], {
        first: [fakeTools("Linux", "riscv64")],
      });
      assertFails(result, /no o3sr release binary for the CPU riscv64 on Linux/);
      assert.ok(isEmpty(prefix));
    });

    test("an unsupported OS fails clearly; Windows is pointed at the .exe", async () => {
      const prefix = freshDir("prefix");
      const bsd = await install(["--prefix", prefix, "--base-url", fileUrl], {
        first: [fakeTools("FreeBSD", "amd64")],
      });
      assertFails(bsd, /no o3sr release binary for the OS FreeBSD/);
      const win = await install(["--prefix", prefix, "--base-url", fileUrl], {
        first: [fakeTools("MINGW64_NT-10.0-19045", "x86_64")],
      });
      assertFails(win, /on Windows, download o3sr-windows-x64\.exe/);
      assert.ok(isEmpty(prefix));
    });

    test("a failed download fails clearly", async () => {
      const prefix = freshDir("prefix");
      const missing = `file://${join(root, "no-such-release")}`;
      const result = await install(["--prefix", prefix, "--base-url", missing], { first: [linuxX64] });
      assertFails(result, /cannot download file:\/\/.*no-such-release\/SHA256SUMS/);
      assert.ok(isEmpty(prefix));
    });

    test("without sha256sum and shasum it refuses to install", async () => {
      const prefix = freshDir("prefix");
      const result = await install(["--prefix", prefix, "--base-url", fileUrl], {
        first: [linuxX64],
        path: pathWithout("sha256sum", "shasum"),
      });
      assertFails(result, /neither sha256sum nor shasum is installed/);
      assert.ok(isEmpty(prefix));
    });

    test(
      "falls back to shasum without sha256sum",
      { skip: !onPath("shasum") && "shasum is not installed" },
      async () => {
        const prefix = freshDir("prefix");
        const result = await install(["--prefix", prefix, "--base-url", fileUrl], {
          first: [linuxX64],
          path: pathWithout("sha256sum"),
        });
        assert.equal(result.status, 0, result.stderr);
        assert.ok(existsSync(join(prefix, "o3sr")));
      },
    );

    test("the default prefix is ~/.local/bin for a user", async () => {
      const home = freshDir("home");
      const result = await install([], { first: [linuxX64], env: { HOME: home, O3SR_BASE_URL: fileUrl } });
      assert.equal(result.status, 0, result.stderr);
      assert.ok(existsSync(join(home, ".local", "bin", "o3sr")));
    });

    describe("over HTTP", () => {
      /** Serves the fake release on loopback while `body` runs. */
      async function serving(body: (url: string) => Promise<void>): Promise<void> {
        const server = createServer((request, response) => {
          // Only /v9.9.9/<file>, like one release's download directory.
          const name = /^\/v9\.9\.9\/([\w.-]+)$/.exec(request.url ?? "")?.[1];
          const file = name === undefined ? "" : join(release, name);
          if (!file || !existsSync(file)) {
            response.writeHead(404).end("not found");
            return;
          }
          response.writeHead(200, { "content-type": "application/octet-stream" }).end(readFileSync(file));
        });
        await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
        try {
          await body(`http://127.0.0.1:${(server.address() as { port: number }).port}/v9.9.9`);
        } finally {
          await new Promise((resolve) => server.close(resolve));
        }
      }

      const tools = [
        ["curl", []],
        ["wget", ["curl"]],
      ] as const;
      for (const [tool, hide] of tools) {
        test(`downloads with ${tool}`, { skip: !onPath(tool) && `${tool} is not installed` }, async () => {
          await serving(async (url) => {
            const prefix = freshDir("prefix");
            const result = await install(["--prefix", prefix, "--base-url", url], {
              first: [linuxX64],
              path: hide.length ? pathWithout(...hide) : undefined,
            });
            assert.equal(result.status, 0, result.stderr);
            assert.match(result.stdout, / o3sr-linux-x64\)/);
          });
        });
      }

      for (const [tool, hide] of tools) {
        test(`a 404 fails clearly, with ${tool}`, { skip: !onPath(tool) && `${tool} is not installed` }, async () => {
          await serving(async (url) => {
            const prefix = freshDir("prefix");
            const result = await install(["--prefix", prefix, "--base-url", `${url}/nothing-here`], {
              first: [linuxX64],
              path: hide.length ? pathWithout(...hide) : undefined,
            });
            assertFails(
              result,
              /cannot download http:\/\/127\.0\.0\.1:\d+\/v9\.9\.9\/nothing-here\/SHA256SUMS \(.*404.*\)/,
            );
            assert.ok(isEmpty(prefix));
          });
        });
      }
    });

    test("downloads from the GitHub release: latest, or the one --version names", async () => {
      const repo = /^O3SR_REPO="([^"]+)"$/m.exec(readFileSync(script, "utf8"))?.[1];
      assert.ok(repo, "install.sh sets O3SR_REPO at the top");
      // A curl that records what it was asked for and fails, so nothing leaves this machine.
      const tools = fakeTools("Linux", "x86_64");
      const log = join(tools, "curl.log");
      writeScript(join(tools, "curl"), `for a in "$@"; do :; done; echo "$a" >> "${log}"; exit 22`);
      const prefix = freshDir("prefix");
      const env = { O3SR_BASE_URL: undefined };
      assertFails(await install(["--prefix", prefix], { first: [tools], env }), /cannot download/);
      assertFails(
        await install(["--prefix", prefix, "--version", "1.2.3"], { first: [tools], env }),
        /cannot download/,
      );
      assert.deepEqual(readFileSync(log, "utf8").trim().split("\n"), [
        `https://github.com/${repo}/releases/latest/download/SHA256SUMS`,
        `https://github.com/${repo}/releases/download/v1.2.3/SHA256SUMS`,
      ]);
    });

    test("--help prints the options; a bad option or version fails clearly", async () => {
      const help = await install(["--help"]);
      assert.equal(help.status, 0);
      for (const option of ["--prefix", "--version", "--deno", "--base-url", "O3SR_BASE_URL"]) {
        assert.ok(help.stdout.includes(option), `--help mentions ${option}`);
      }
      assertFails(await install(["--frobnicate"]), /unknown option --frobnicate/);
      assertFails(await install(["--prefix"]), /--prefix needs a value/);
      assertFails(await install(["--version", "latest"]), /--version latest is not a release tag such as v0\.1\.0/);
    });
  },
);
