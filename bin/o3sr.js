#!/usr/bin/env node
// The `o3sr` command of the npm package (`npx o3sr`, `bunx o3sr`): starts the
// CLI bundled for Node by `npm run build:npm`. Node cannot run o3sr's
// TypeScript sources, hence the bundle; Bun runs the same bundle.

import { existsSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";

const bundle = new URL("../dist/npm/o3sr.mjs", import.meta.url);

// The bundle is built, not committed: a git checkout has none until it is built.
if (!existsSync(fileURLToPath(bundle))) {
  console.error(
    `o3sr: ${fileURLToPath(bundle)} is missing: run \`npm run build:npm\` in the o3sr checkout ` +
      "(the published npm package ships it)",
  );
  process.exit(1);
}

// The bundle uses APIs from Node 20 (such as socket.resetAndDestroy); say so
// instead of failing somewhere inside it. Bun and Deno report a recent Node.
const major = Number(process.versions.node.split(".")[0]);
if (major < 20) {
  console.error(
    `o3sr: needs Node.js 20 or newer, this is ${process.version}; ` +
      "upgrade Node, or run it with `bunx o3sr`, or use a release binary",
  );
  process.exit(1);
}

await import(bundle.href);
