/**
 * The GitHub workflows: valid against GitHub's workflow schema (checked offline by
 * action-validator), and keeping the project's rules: every job has a timeout, CI runs
 * the suites of both runtimes, Deno and Bun come only from package.json, a `v*` tag
 * releases with notes from CHANGELOG.md, and `npm run o3sr:deno` runs Deno as the
 * compiled Deno binaries do.
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { DENO_V8_FLAGS } from "../src/deno_flags.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

interface Step {
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
}

interface Job {
  "timeout-minutes"?: unknown;
  permissions?: Record<string, string>;
  strategy?: { matrix?: { os?: string[] } };
  steps?: Step[];
}

interface Workflow {
  on: Record<string, { tags?: string[] } | null>;
  permissions?: Record<string, string>;
  jobs: Record<string, Job>;
}

const WORKFLOWS = ["ci.yml", "release.yml"];

function workflowPath(name: string): string {
  return join(".github", "workflows", name);
}

function load(name: string): Workflow {
  return parse(readFileSync(join(ROOT, workflowPath(name)), "utf8")) as Workflow;
}

/** Every shell command the workflow runs, one string. */
function commands(workflow: Workflow): string {
  return Object.values(workflow.jobs)
    .flatMap((job) => job.steps ?? [])
    .map((step) => step.run ?? "")
    .join("\n");
}

/** Runs node_modules/.bin/action-validator (a .cmd shim on Windows, which needs a shell). */
function validate(file: string) {
  const windows = process.platform === "win32";
  const bin = join("node_modules", ".bin", windows ? "action-validator.cmd" : "action-validator");
  return spawnSync(bin, [file], { cwd: ROOT, encoding: "utf8", shell: windows, timeout: 60_000 });
}

describe("GitHub workflows", () => {
  for (const name of WORKFLOWS) {
    test(`${name} passes action-validator`, () => {
      const result = validate(workflowPath(name));
      assert.equal(result.error, undefined, `cannot run action-validator: ${result.error}`);
      assert.equal(result.status, 0, `action-validator:\n${result.stdout}${result.stderr}`);
    });

    test(`${name}: every job has a timeout under 30 minutes`, () => {
      for (const [id, job] of Object.entries(load(name).jobs)) {
        const minutes = job["timeout-minutes"];
        assert.equal(typeof minutes, "number", `job '${id}' has no timeout-minutes`);
        assert.ok((minutes as number) < 30, `job '${id}' may run ${minutes} minutes`);
      }
    });

    test(`${name}: Deno and Bun come from package.json through npm ci`, () => {
      const workflow = load(name);
      const uses = Object.values(workflow.jobs).flatMap((job) => job.steps ?? [])
        .map((step) => step.uses ?? "");
      for (const action of uses) {
        assert.doesNotMatch(action, /setup-deno|setup-bun/, "a second place pinning a version");
      }
      if (/\bnpx |npm run /.test(commands(workflow))) {
        assert.match(commands(workflow), /\bnpm ci\b/);
      }
    });
  }

  test("ci.yml runs on pushes and pull requests", () => {
    const on = load("ci.yml").on;
    assert.ok("push" in on && "pull_request" in on, `triggers: ${Object.keys(on)}`);
  });

  test("ci.yml runs the Deno and the Bun suites on Linux, macOS and Windows", () => {
    const ci = load("ci.yml");
    const run = commands(ci);
    assert.match(run, /npm run test:deno/);
    assert.match(run, /npm run test:bun/);
    const testJob = Object.values(ci.jobs).find((job) =>
      (job.steps ?? []).some((step) => step.run?.includes("test:deno"))
    );
    assert.deepEqual(
      [...(testJob?.strategy?.matrix?.os ?? [])].sort(),
      ["macos-latest", "ubuntu-latest", "windows-latest"],
    );
  });

  test("ci.yml checks, lints, formats and compiles", () => {
    const run = commands(load("ci.yml"));
    for (const command of ["deno check", "deno lint", "deno fmt --check", "npm run compile"]) {
      assert.ok(run.includes(command), `no step runs '${command}'`);
    }
  });

  test("release.yml runs on v* tags only, may write releases and requires the Deno builds", () => {
    const release = load("release.yml");
    assert.deepEqual(Object.keys(release.on), ["push"]);
    assert.deepEqual(release.on.push?.tags, ["v*"]);
    const writers = Object.values(release.jobs).filter((job) => job.permissions?.contents === "write");
    assert.ok(
      writers.length > 0 || release.permissions?.contents === "write",
      "no permission to create a release",
    );
    const run = commands(release);
    assert.match(run, /npm run compile -- --require-deno/);
    assert.match(run, /SHA256SUMS/);
    assert.match(run, /CHANGELOG\.md/);
  });

  test("CHANGELOG.md has an Unreleased section and notes for the package.json version", () => {
    const changelog = readFileSync(join(ROOT, "CHANGELOG.md"), "utf8");
    const { version } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    assert.match(changelog, /^## \[Unreleased\]/m);
    // The release job publishes the lines under this heading; it fails if there are none.
    const section = changelog.split(/^## /m).find((s) => s.startsWith(`[${version}]`));
    assert.ok(section, `no '## [${version}]' section`);
    assert.match(section.split("\n").slice(1).join("\n"), /\S/, `'## [${version}]' is empty`);
  });

  test("npm run o3sr:deno runs Deno with the V8 flags the compiled Deno binaries get", () => {
    const { scripts } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    assert.ok(scripts["o3sr:deno"].split(" ").includes(DENO_V8_FLAGS), scripts["o3sr:deno"]);
  });
});
