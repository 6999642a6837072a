import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import process from "node:process";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { renderReadme } from "../tools/docs.ts";
import { VERSION } from "../src/version.ts";

const root = new URL("../", import.meta.url);

test("README's generated reference and help match the code (run `npm run docs` to update)", () => {
  const readme = readFileSync(new URL("README.md", root), "utf8");
  assert.equal(readme, renderReadme(readme));
});

test("package.json, deno.json and src/version.ts carry one version", () => {
  const pkg = JSON.parse(readFileSync(new URL("package.json", root), "utf8"));
  const deno = JSON.parse(readFileSync(new URL("deno.json", root), "utf8"));
  assert.equal(pkg.version, VERSION);
  assert.equal(deno.version, VERSION);
});

test("every export of mod.ts is documented (deno doc --lint), so the package publishes cleanly to JSR", () => {
  const deno = "Deno" in globalThis ? process.execPath : new URL("node_modules/.bin/deno", root).pathname;
  const result = spawnSync(deno, ["doc", "--lint", "mod.ts"], { cwd: new URL(".", root).pathname, encoding: "utf8" });
  assert.equal(result.status, 0, result.stderr);
});
