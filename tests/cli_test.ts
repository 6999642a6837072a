/**
 * The CLI and config handling, run in-process against a stand-in platform:
 * flags, files, precedence and every kind of bad input.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { runCli } from "../src/cli.ts";
import { OPTIONS, parseDuration, parseSize } from "../src/config.ts";
import type { Platform } from "../src/platform.ts";
import { memoryTransport } from "../src/transport/memory.ts";
import { VERSION } from "../src/version.ts";
import { waitFor } from "./_helpers.ts";

interface FakeRun {
  code: Promise<number>;
  out: string[];
  err: string[];
  signal(name?: string): void;
  platform: Platform;
}

function fakeRun(
  args: string[],
  setup: { env?: Record<string, string>; files?: Record<string, string | Error>; home?: string } = {},
): FakeRun {
  const out: string[] = [];
  const err: string[] = [];
  const handlers: Array<(signal: string) => void> = [];
  const platform: Platform = {
    transport: memoryTransport(),
    runtime: { name: "test", version: "1.0", target: "linux-x64" },
    env: (name) => setup.env?.[name],
    homeDir: () => setup.home ?? "/home/user",
    readTextFile: (path) => {
      const file = setup.files?.[path];
      if (file instanceof Error) return Promise.reject(file);
      return Promise.resolve(file ?? null);
    },
    stdout: (line) => out.push(line),
    stderr: (line) => err.push(line),
    onShutdownSignal: (h) => handlers.push(h),
    writeTextFile: (path, text, { overwrite }) => {
      setup.files ??= {};
      if (path in setup.files && !overwrite) {
        return Promise.reject(Object.assign(new Error("exists"), { code: "EEXIST" }));
      }
      setup.files[path] = text;
      return Promise.resolve();
    },
    exit: (code) => {
      throw new Error(`exit(${code})`);
    },
  };
  const code = runCli(args, platform);
  return { code, out, err, platform, signal: (name = "SIGTERM") => handlers.forEach((h) => h(name)) };
}

async function expectUsageError(args: string[], pattern: RegExp, setup?: Parameters<typeof fakeRun>[1]) {
  const run = fakeRun(args, setup);
  assert.equal(await run.code, 2, `exit code for ${args.join(" ")}`);
  assert.equal(run.err.length, 1, `one line of error, got: ${run.err.join("\n")}`);
  assert.match(run.err[0], /^o3sr: /);
  assert.match(run.err[0], pattern);
  assert.doesNotMatch(run.err[0], /\n/, "one line, no stack trace");
}

describe("cli: information", () => {
  test("--version and -v print version, runtime and target", async () => {
    for (const flag of ["--version", "-v", "version"]) {
      const run = fakeRun([flag]);
      assert.equal(await run.code, 0);
      assert.deepEqual(run.out, [`o3sr ${VERSION} (test 1.0, linux-x64)`]);
    }
  });

  test("--help lists every flag with its default; per-command help narrows it", async () => {
    const run = fakeRun(["--help"]);
    assert.equal(await run.code, 0);
    const help = run.out.join("\n");
    for (const option of OPTIONS) assert.match(help, new RegExp(`--${option.flag} `), option.flag);
    assert.match(help, /--relay-port PORT\s+port relays dial in to \(default 6543\)/);
    const relayHelp = fakeRun(["relay", "-h"]);
    assert.equal(await relayHelp.code, 0);
    assert.doesNotMatch(relayHelp.out.join("\n"), /--client-port/);
    assert.match(relayHelp.out.join("\n"), /--dest-port/);
  });

  test("no arguments and no config: a short friendly usage, exit 0", async () => {
    const run = fakeRun([]);
    assert.equal(await run.code, 0);
    const text = run.out.join("\n");
    assert.match(text, /o3sr matcher/);
    assert.match(text, /o3sr relay/);
    assert.match(text, /o3sr demo/);
    assert.ok(text.split("\n").length < 15, "short");
  });
});

describe("cli: bad input is one clear line and exit code 2", () => {
  test("unknown flag, with a suggestion", () =>
    expectUsageError(["matcher", "--relay-prot", "5"], /unknown flag --relay-prot \(did you mean --relay-port\?\)/));
  test("flag without its value", () => expectUsageError(["matcher", "--relay-port"], /--relay-port needs a value/));
  test("port out of range", () =>
    expectUsageError(["matcher", "--relay-port", "70000"], /--relay-port must be a port number 0-65535, got "70000"/));
  test("port that is not a number", () =>
    expectUsageError(["relay", "--dest-port", "http"], /--dest-port must be a port number 1-65535/));
  test("dest port 0 is not a destination", () =>
    expectUsageError(["relay", "--dest-port", "0"], /--dest-port must be a port number 1-65535/));
  test("unknown command, with a suggestion", () =>
    expectUsageError(["macther"], /unknown command "macther" \(did you mean "matcher"\?\)/));
  test("bad enum", () =>
    expectUsageError(
      ["matcher", "--balance", "fastest"],
      /--balance must be one of random, round-robin, least-streams/,
    ));
  test("bad duration", () => expectUsageError(["matcher", "--relay-wait", "soon"], /--relay-wait must be a duration/));
  test("flag of the other role", () =>
    expectUsageError(
      ["relay", "--client-port", "9000"],
      /--client-port is a matcher option; it does nothing for a relay/,
    ));
  test("both legacy roles", () => expectUsageError(["--matcher", "--client"], /exclude each other/));
  test("a stray argument", () => expectUsageError(["matcher", "extra"], /unexpected argument "extra"/));
  test("flags but no role", () => expectUsageError(["--relay-port", "7000"], /no command given/));

  test("config: unknown key, with a suggestion", () =>
    expectUsageError(
      ["matcher", "--config", "/c.yml"],
      /config \/c.yml: unknown key "relay_prot" \(did you mean "relay_port"\?\)/,
      {
        files: { "/c.yml": "relay_prot: 7000\n" },
      },
    ));
  test("config: wrong type", () =>
    expectUsageError(
      ["matcher", "--config", "/c.yml"],
      /config \/c.yml: client_port must be a port number 0-65535, got "six"/,
      {
        files: { "/c.yml": "client_port: six\n" },
      },
    ));
  test("config: port out of range", () =>
    expectUsageError(
      ["matcher", "--config", "/c.yml"],
      /config \/c.yml: relay_port must be a port number 0-65535, got 99999/,
      {
        files: { "/c.yml": "relay_port: 99999\n" },
      },
    ));
  test("config: not a mapping", () =>
    expectUsageError(["matcher", "--config", "/c.yml"], /config \/c.yml: must be a mapping/, {
      files: { "/c.yml": "- a\n- b\n" },
    }));
  test("config: YAML syntax error", () =>
    expectUsageError(["matcher", "--config", "/c.yml"], /config \/c.yml: not valid YAML/, {
      files: { "/c.yml": "relay_port: [1,\n" },
    }));
  test("config: bad mode", () =>
    expectUsageError(["--config", "/c.yml"], /config \/c.yml: mode must be "matcher" or "relay"/, {
      files: { "/c.yml": "mode: hub\n" },
    }));
  test("config: named file missing", () =>
    expectUsageError(
      ["matcher", "--config", "/nope.yml"],
      /cannot read config \/nope.yml \(named by --config\): no such file/,
    ));
  test("config: O3SR_CONFIG names a missing file", () =>
    expectUsageError(["matcher"], /cannot read config \/env.yml \(named by O3SR_CONFIG\)/, {
      env: { O3SR_CONFIG: "/env.yml" },
    }));
  test("config: unreadable file", () =>
    expectUsageError(["matcher"], /cannot read config \/home\/user\/.o3sr.yml: permission denied/, {
      files: { "/home/user/.o3sr.yml": new Error("permission denied") },
    }));
});

describe("cli: init and config check", () => {
  test("init writes a commented example; it never overwrites without --force", async () => {
    const files: Record<string, string> = {};
    const run = fakeRun(["init"], { files, env: { XDG_CONFIG_HOME: "/xdg" } });
    assert.equal(await run.code, 0);
    assert.match(run.out[0], /^wrote \/xdg\/o3sr\/config.yml/);
    assert.match(files["/xdg/o3sr/config.yml"], /^# relay_port: 6543 +# port relays dial in to$/m);
    const again = fakeRun(["init", "/xdg/o3sr/config.yml"], { files });
    assert.equal(await again.code, 2);
    assert.match(again.err[0], /it exists; add --force to replace it/);
    const forced = fakeRun(["init", "/xdg/o3sr/config.yml", "--force"], { files });
    assert.equal(await forced.code, 0);
  });

  test("the example config, with every setting uncommented, passes config check", async () => {
    const files: Record<string, string> = {};
    assert.equal(await fakeRun(["init", "/c.yml"], { files }).code, 0);
    const uncommented = files["/c.yml"].split("\n")
      .filter((line) => /^# [a-z_]+: /.test(line) && !/^# (mode|services|tokens):/.test(line))
      .map((line) => line.slice(2))
      .join("\n");
    files["/all.yml"] = uncommented;
    const check = fakeRun(["config", "check", "/all.yml"], { files });
    assert.equal(await check.code, 0, check.err.join("\n"));
    assert.match(check.out[0], /^# \/all.yml is valid/);
    assert.ok(uncommented.split("\n").length >= 30, "every option is in the example");
  });

  test("config check prints effective settings, hides secrets, and fails with one line on errors", async () => {
    const files = {
      "/r.yml":
        "mode: relay\nmatcher_host: hub.example.com\ntoken: do-not-print-me\nservices:\n  - web=127.0.0.1:3000\n",
      "/bad.yml": "mode: relay\nservices:\n  - web=8080\n",
    };
    const good = fakeRun(["config", "check", "/r.yml"], { files });
    assert.equal(await good.code, 0);
    const text = good.out.join("\n");
    assert.match(text, /^matcher_host: hub.example.com$/m);
    assert.match(text, /^connections: 2 +# default$/m);
    assert.match(text, /^token: \(set, not shown\)$/m);
    assert.match(text, /"dest_host":"127.0.0.1"/);
    assert.ok(!text.includes("do-not-print-me"));
    await expectUsageError(["config", "check", "/bad.yml"], /service "web" has no destination for a relay/, { files });
    await expectUsageError(["config", "check"], /needs the file to check/);
  });
});

describe("cli: security settings", () => {
  test("bad CIDR", () =>
    expectUsageError(
      ["matcher", "--client-allow", "10.0.0.0/33"],
      /--client-allow: "10.0.0.0\/33" is not an address range/,
    ));
  test("certificate without key", () =>
    expectUsageError(["matcher", "--tls-cert", "/c.pem"], /--tls-cert and --tls-key go together/));
  test("malformed fingerprint", () =>
    expectUsageError(["relay", "--tls-fingerprint", "md5:abc"], /--tls-fingerprint must be sha256: and 64 hex digits/));
  test("matcher URL that is not ws(s)", () =>
    expectUsageError(
      ["relay", "--matcher-url", "http://hub:80/"],
      /--matcher-url must look like ws:\/\/host:port\/path/,
    ));
  test("relay token given twice", () =>
    expectUsageError(
      ["relay", "--token", "aaaaaaaaaaaaaaaa", "--token", "bbbbbbbbbbbbbbbb"],
      /--token was given 2 times/,
    ));
  test("config: token entry without a token", () =>
    expectUsageError(["matcher", "--config", "/c.yml"], /tokens\[0\] must be a token string or a \{name, token\} map/, {
      files: { "/c.yml": "tokens:\n  - name: ops\n" },
    }));
  test("config: a secret is not echoed back in errors", async () => {
    const run = fakeRun(["relay", "--config", "/c.yml"], { files: { "/c.yml": "token: ''\n" } });
    assert.equal(await run.code, 2);
    assert.match(run.err[0], /config \/c.yml: token must be a non-empty string$/);
  });

  test("matcher tokens from flags and file; relay token from O3SR_TOKEN", async () => {
    const files = {
      "/m.yml": "tokens:\n  - name: team-a\n    token: aaaaaaaaaaaaaaaaaaaa\n  - bbbbbbbbbbbbbbbbbbbb\n",
    };
    const run = fakeRun(["matcher", "--config", "/m.yml", "--relay-port", "7601", "--client-port", "7602"], { files });
    await waitFor(() => run.err.some((line) => line.includes("matcher listening")));
    assert.match(run.err.join("\n"), /auth="2 token\(s\)"/);
    const relay = runCli(["relay", "--matcher-port", "7601", "--matcher-host", "127.0.0.1"], {
      ...run.platform,
      env: (name) => name === "O3SR_TOKEN" ? "bbbbbbbbbbbbbbbbbbbb" : undefined,
    });
    await waitFor(() => run.err.some((line) => line.includes("relay connected") && line.includes("token=token-2")));
    assert.ok(!run.err.join("\n").includes("bbbbbbbbbbbbbbbbbbbb"), "the token is never logged");
    run.signal();
    assert.equal(await run.code, 0);
    assert.equal(await relay, 0);
  });
});

describe("cli: running roles", () => {
  test("matcher from flags serves until SIGTERM, then exits 0", async () => {
    const run = fakeRun(["matcher", "--relay-port", "7001", "--client-port", "7002", "--log-format", "json"]);
    await waitFor(() => run.err.some((line) => line.includes("matcher listening")));
    const line = JSON.parse(run.err.find((l) => l.includes("matcher listening"))!);
    assert.equal(line.level, "info");
    assert.equal(line.relay_port, "0.0.0.0:7001");
    assert.equal(line.client_port, "0.0.0.0:7002");
    run.signal("SIGTERM");
    assert.equal(await run.code, 0);
    assert.ok(run.err.some((l) => l.includes("matcher stopped")));
  });

  test("O3SR spelling: --matcher / --client, and mode from the XDG config file", async () => {
    const files = { "/xdg/o3sr/config.yml": "mode: matcher\nrelay_port: 7101\nclient_port: 7102\n" };
    const run = fakeRun([], { env: { XDG_CONFIG_HOME: "/xdg" }, files });
    await waitFor(() => run.err.some((line) => line.includes("matcher listening")));
    assert.match(run.err.join("\n"), /relay_port=0.0.0.0:7101/);
    run.signal();
    assert.equal(await run.code, 0);

    const legacy = fakeRun(["--client", "--matcher-port", "7201", "--reconnect-max", "200ms"]);
    await waitFor(() => legacy.err.some((line) => line.includes("relay starting")));
    assert.match(legacy.err.join("\n"), /matcher=localhost:7201/);
    legacy.signal();
    assert.equal(await legacy.code, 0);
  });

  test("precedence: flags over file; XDG file over ~/.o3sr.yml", async () => {
    const files = {
      "/home/user/.config/o3sr/config.yml": "relay_port: 7301\nclient_port: 7302\n",
      "/home/user/.o3sr.yml": "relay_port: 9999\nclient_port: 9998\n",
    };
    const run = fakeRun(["matcher", "--client-port", "7303"], { files });
    await waitFor(() => run.err.some((line) => line.includes("matcher listening")));
    const text = run.err.join("\n");
    assert.match(text, /relay_port=0.0.0.0:7301/);
    assert.match(text, /client_port=0.0.0.0:7303/);
    run.signal();
    assert.equal(await run.code, 0);
  });

  test("~/.o3sr.yml is read when there is no XDG file", async () => {
    const run = fakeRun(["matcher"], { files: { "/home/user/.o3sr.yml": "relay_port: 7401\nclient_port: 7402\n" } });
    await waitFor(() => run.err.some((line) => line.includes("matcher listening")));
    assert.match(run.err.join("\n"), /relay_port=0.0.0.0:7401/);
    run.signal();
    assert.equal(await run.code, 0);
  });

  test("a port in use: exit code 1 with a message naming the port and the flag", async () => {
    const first = fakeRun(["matcher", "--relay-port", "7501", "--client-port", "7502"]);
    await waitFor(() => first.err.some((line) => line.includes("matcher listening")));
    const second = runCli(["matcher", "--relay-port", "7501", "--client-port", "7503"], first.platform);
    assert.equal(await second, 1);
    const message = first.err.at(-1)!;
    assert.match(message, /cannot listen on 0.0.0.0:7501 for the relay port: .*in use.*--relay-port/);
    first.signal();
    assert.equal(await first.code, 0);
  });
});

describe("config values", () => {
  test("durations and sizes", () => {
    assert.equal(parseDuration("500ms"), 500);
    assert.equal(parseDuration("10s"), 10_000);
    assert.equal(parseDuration("2m"), 120_000);
    assert.equal(parseDuration(1.5), 1500);
    assert.equal(parseDuration("3"), 3000);
    assert.equal(parseDuration("-1s"), null);
    assert.equal(parseDuration("fast"), null);
    assert.equal(parseSize("64KiB"), 65536);
    assert.equal(parseSize("1MiB"), 1048576);
    assert.equal(parseSize("1m"), 1048576);
    assert.equal(parseSize(4096), 4096);
    assert.equal(parseSize("1.5MiB"), null);
  });
});
