/**
 * Builds o3sr's standalone binaries into `dist/`:
 *
 * - Bun:  `dist/o3sr-<os>-<arch>[.exe]`      (`bun build --compile`, cross-compiles anywhere)
 * - Deno: `dist/o3sr-deno-<os>-<arch>[.exe]` (`deno compile`, needs its `denort` runtime)
 * - `dist/SHA256SUMS` for every binary built, in `sha256sum` format.
 *
 * Each run first removes the binaries of earlier runs from `dist/`.
 *
 * Runs under Bun (`npm run compile`, i.e. `bun compile.ts`) and under Deno
 * (`deno run -A compile.ts`), so it uses only web APIs and `node:` modules.
 * Run with `--help` for the options.
 *
 * @module
 */

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { DENO_V8_FLAGS } from "./src/deno_flags.ts";

/** A platform o3sr ships a binary for, with the names each compiler knows it by. */
export interface Target {
  /** Our name, used in file names and `--target`: `<os>-<arch>`. */
  name: string;
  /** Bun's `--target`. */
  bun: string;
  /** Deno's `--target` (a Rust target triple). */
  deno: string;
  /** Whether binaries for it end in `.exe`. */
  exe: boolean;
}

/** Every platform o3sr ships binaries for. */
export const TARGETS: readonly Target[] = [
  { name: "linux-x64", bun: "bun-linux-x64", deno: "x86_64-unknown-linux-gnu", exe: false },
  { name: "linux-arm64", bun: "bun-linux-arm64", deno: "aarch64-unknown-linux-gnu", exe: false },
  { name: "darwin-x64", bun: "bun-darwin-x64", deno: "x86_64-apple-darwin", exe: false },
  { name: "darwin-arm64", bun: "bun-darwin-arm64", deno: "aarch64-apple-darwin", exe: false },
  { name: "windows-x64", bun: "bun-windows-x64", deno: "x86_64-pc-windows-msvc", exe: true },
];

/** What to build, as parsed from the command line. */
export interface Options {
  /** Platforms to build for. @default all of {@linkcode TARGETS} */
  targets: Target[];
  /** Build the Bun binaries. @default true */
  bun: boolean;
  /** Build the Deno binaries. @default true */
  deno: boolean;
  /** Fail (exit 1) instead of skipping Deno binaries that cannot be built. @default false */
  requireDeno: boolean;
  /** Print usage and exit. @default false */
  help: boolean;
}

/** A bad command line; `main` prints it and exits with status 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

const USAGE = `Usage: bun compile.ts [options]      (or: deno run -A compile.ts [options])

Builds o3sr's standalone binaries into dist/, plus dist/SHA256SUMS.

Options:
  --target <os-arch>  Build only this platform; repeat for several. One of:
                      ${TARGETS.map((t) => t.name).join(", ")}
  --bun-only          Build only the Bun binaries (dist/o3sr-<os>-<arch>)
  --deno-only         Build only the Deno binaries (dist/o3sr-deno-<os>-<arch>)
  --require-deno      Exit 1 if a Deno binary cannot be built (default: skip it)
  -h, --help          Show this help

Deno binaries need deno's denort runtime, which deno compile downloads per target.
Offline, set DENORT_BIN=/path/to/denort to build the host platform's Deno binary.`;

/**
 * Parses compile.ts's command line.
 *
 * @param argv The arguments after the script name.
 * @returns The build options.
 * @throws {UsageError} On an unknown option, an unknown target or a contradiction.
 */
export function parseArgs(argv: readonly string[]): Options {
  const options: Options = { targets: [], bun: true, deno: true, requireDeno: false, help: false };
  let bunOnly = false;
  let denoOnly = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--target" || arg.startsWith("--target=")) {
      const value = arg === "--target" ? argv[++i] : arg.slice("--target=".length);
      options.targets.push(findTarget(value));
    } else if (arg === "--bun-only") bunOnly = true;
    else if (arg === "--deno-only") denoOnly = true;
    else if (arg === "--require-deno") options.requireDeno = true;
    else if (arg === "-h" || arg === "--help") options.help = true;
    else throw new UsageError(`unknown option '${arg}'`);
  }
  if (bunOnly && denoOnly) throw new UsageError("--bun-only and --deno-only exclude each other");
  if (bunOnly && options.requireDeno) {
    throw new UsageError("--require-deno makes no sense with --bun-only");
  }
  options.bun = !denoOnly;
  options.deno = !bunOnly;
  if (options.targets.length === 0) options.targets = [...TARGETS];
  options.targets = [...new Set(options.targets)]; // `--target x --target x` builds x once
  return options;
}

function findTarget(name: string | undefined): Target {
  if (name === undefined || name === "") {
    throw new UsageError("--target needs a value such as linux-x64");
  }
  const target = TARGETS.find((t) => t.name === name);
  if (!target) {
    throw new UsageError(
      `unknown target '${name}'; expected one of ${TARGETS.map((t) => t.name).join(", ")}`,
    );
  }
  return target;
}

/** The repository root: compile.ts sits there, whatever the working directory. */
const ROOT = dirname(fileURLToPath(import.meta.url));
const DIST = join(ROOT, "dist");
const SUMS_FILE = "SHA256SUMS";

/**
 * How long one `deno compile` may take. A healthy one (type check plus a ~40 MB
 * denort download) takes seconds; this only stops a download that hangs.
 */
const DENO_COMPILE_TIMEOUT_MS = 90_000;

/** Deno's error output when it could not get its denort runtime. */
const DENORT_FAILURE = /Setting up base binary|denort/i;

/** One binary built. */
interface Artifact {
  file: string;
  bytes: number;
  seconds: number;
}

/** Outcome of a child process. */
interface RunResult {
  code: number | null;
  output: string;
  timedOut: boolean;
}

/** Runs a command in the repository root, capturing stdout and stderr together. */
function run(command: string, args: string[], timeoutMs = 0): Promise<RunResult> {
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: ROOT,
      env: { ...process.env, NO_COLOR: "1" }, // plain text, to match errors against
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    let timedOut = false;
    for (const stream of [child.stdout, child.stderr]) {
      stream?.setEncoding("utf8");
      stream?.on("data", (chunk: string) => (output += chunk));
    }
    const timer = timeoutMs > 0
      ? setTimeout(() => {
        timedOut = true;
        child.kill("SIGKILL");
      }, timeoutMs)
      : undefined;
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${command}: ${error.message}`));
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output, timedOut });
    });
  });
}

/**
 * The bun or deno executable: this process's own when it is that runtime, else
 * the one `npm ci` put in node_modules (where package.json pins its version).
 * The package paths are used rather than node_modules/.bin because on Windows
 * .bin holds only .cmd shims, which cannot be spawned without a shell.
 */
function tool(name: "bun" | "deno"): string {
  const running = "Bun" in globalThis ? "bun" : "Deno" in globalThis ? "deno" : "node";
  if (running === name) return process.execPath;
  const exe = process.platform === "win32" ? ".exe" : "";
  const installed = name === "bun"
    ? join(ROOT, "node_modules", "bun", "bin", "bun.exe") // named bun.exe on every OS
    : join(ROOT, "node_modules", "deno", `deno${exe}`);
  return existsSync(installed) ? installed : name;
}

/** The target this machine is, if o3sr ships one for it. */
function hostTarget(): Target | undefined {
  const os = process.platform === "win32" ? "windows" : process.platform;
  return TARGETS.find((t) => t.name === `${os}-${process.arch}`);
}

function outFile(target: Target, prefix: string): string {
  return join(DIST, `${prefix}${target.name}${target.exe ? ".exe" : ""}`);
}

function requireEntry(file: string): string {
  if (!existsSync(join(ROOT, file))) throw new Error(`${file} not found: nothing to compile`);
  return file;
}

function failure(what: string, result: RunResult): Error {
  const status = result.timedOut ? "timed out" : `exited with ${result.code}`;
  return new Error(`${what} ${status}:\n${result.output.trim()}`);
}

/** Records a freshly written binary and prints its line. */
function artifact(file: string, started: number): Artifact {
  const result = { file, bytes: statSync(file).size, seconds: (Date.now() - started) / 1000 };
  const name = relative(ROOT, file).padEnd(34);
  console.log(`  ${name} ${formatSize(result.bytes).padStart(10)}  ${result.seconds.toFixed(1)}s`);
  return result;
}

async function buildBun(target: Target, bun: string, entry: string): Promise<Artifact> {
  const started = Date.now();
  const file = outFile(target, "o3sr-");
  const args = [
    "build",
    "--compile",
    "--minify",
    `--target=${target.bun}`,
    entry,
    "--outfile",
    file,
  ];
  const result = await run(bun, args);
  if (result.code !== 0) throw failure(`bun build for ${target.name}`, result);
  return artifact(file, started);
}

/**
 * Packages that only build or test o3sr. `deno compile` embeds node_modules
 * whole (bun and deno themselves are 200 MB there), so these are excluded; the
 * runtime dependencies stay. The lockfile marks them `"dev": true`.
 */
function devPackageExcludes(): string[] {
  const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8"));
  const devPackages = Object.entries(lock.packages as Record<string, { dev?: boolean }>)
    .filter(([path, entry]) => path.startsWith("node_modules/") && entry.dev)
    .map(([path]) => path);
  // .bin's links point into the excluded packages and would drag them back in.
  return ["node_modules/.bin", ...devPackages].map((path) => `--exclude=${path}`);
}

/**
 * Builds one Deno binary.
 *
 * @returns The artifact, or the reason it could not be built for want of denort.
 * @throws {Error} On any other failure, such as a type error.
 */
async function buildDeno(
  target: Target,
  deno: string,
  entry: string,
  excludes: string[],
): Promise<Artifact | string> {
  const started = Date.now();
  const file = outFile(target, "o3sr-deno-");
  const permissions = ["--allow-net", "--allow-env", "--allow-read", "--allow-write"];
  const args = ["compile", ...permissions, DENO_V8_FLAGS, ...excludes, "--target", target.deno, "--output", file];
  const result = await run(deno, [...args, entry], DENO_COMPILE_TIMEOUT_MS);
  if (result.code === 0) return artifact(file, started);
  if (result.timedOut) return `deno compile timed out after ${DENO_COMPILE_TIMEOUT_MS / 1000}s`;
  if (DENORT_FAILURE.test(result.output)) return "deno compile could not fetch its denort runtime";
  throw failure(`deno compile for ${target.name}`, result);
}

/**
 * Builds the Deno binaries it can.
 *
 * @returns The binaries built, and a line saying what was skipped and why ("" if nothing).
 */
async function buildDenoTargets(targets: Target[]): Promise<[Artifact[], string]> {
  const built: Artifact[] = [];
  const denortBin = process.env.DENORT_BIN;
  const host = hostTarget();
  // Deno uses DENORT_BIN as the runtime whatever --target says, so it only fits the host.
  const buildable = denortBin ? targets.filter((t) => t === host) : targets;
  const skipped = targets.filter((t) => !buildable.includes(t)).map((t) => t.name);
  let why = skipped.length > 0 ? `DENORT_BIN only fits the host (${host?.name ?? "unknown"})` : "";

  const deno = tool("deno");
  const entry = buildable.length > 0 ? requireEntry("src/main_deno.ts") : "";
  const excludes = buildable.length > 0 ? devPackageExcludes() : [];
  for (const [i, target] of buildable.entries()) {
    const result = await buildDeno(target, deno, entry, excludes);
    if (typeof result !== "string") {
      built.push(result);
      continue;
    }
    // Offline, every other target fails the same way: don't try each of them.
    skipped.push(...buildable.slice(i).map((t) => t.name));
    why = denortBin ? `${result} (is DENORT_BIN=${denortBin} a denort binary?)` : `${result} (offline?)`;
    break;
  }
  if (skipped.length === 0) return [built, ""];
  const line = `skipped Deno builds for ${skipped.join(", ")}: ${why}`;
  if (denortBin) return [built, `${line}.`];
  const hint = `Set DENORT_BIN=/path/to/denort to build the ${host?.name ?? "host"} Deno binary, ` +
    "or build on a machine with internet (the release workflow does).";
  return [built, `${line}. ${hint}`];
}

/**
 * Empties dist/ of earlier builds, so that it holds exactly what this run built
 * and SHA256SUMS lists every binary beside it.
 */
function cleanDist(): void {
  mkdirSync(DIST, { recursive: true });
  for (const name of readdirSync(DIST)) {
    if (name.startsWith("o3sr-") || name === SUMS_FILE) rmSync(join(DIST, name), { force: true });
  }
}

/** Writes dist/SHA256SUMS, checkable with `cd dist && sha256sum -c SHA256SUMS`. */
function writeChecksums(artifacts: Artifact[]): string {
  const lines = artifacts.map(({ file }) => {
    const digest = createHash("sha256").update(readFileSync(file)).digest("hex");
    return `${digest}  ${relative(DIST, file)}\n`;
  });
  const sums = join(DIST, SUMS_FILE);
  writeFileSync(sums, lines.join(""));
  return sums;
}

function formatSize(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * Builds what the command line asks for.
 *
 * @param argv The arguments after the script name.
 * @returns The exit status: 0 built, 1 a build failed (or a Deno binary was
 *   required but skipped), 2 bad command line.
 */
export async function main(argv: readonly string[]): Promise<number> {
  let options: Options;
  try {
    options = parseArgs(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`compile.ts: ${error.message}. Run 'bun compile.ts --help' for usage.`);
    return 2;
  }
  if (options.help) {
    console.log(USAGE);
    return 0;
  }

  const started = Date.now();
  cleanDist();
  const artifacts: Artifact[] = [];
  let skipped = "";
  try {
    if (options.bun) {
      const bun = tool("bun");
      const entry = requireEntry("src/main_bun.ts");
      for (const target of options.targets) artifacts.push(await buildBun(target, bun, entry));
    }
    if (options.deno) {
      const [built, skipLine] = await buildDenoTargets(options.targets);
      artifacts.push(...built);
      skipped = skipLine;
    }
  } catch (error) {
    console.error(`compile.ts: ${error instanceof Error ? error.message : error}`);
    return 1;
  }

  if (skipped) console.log(skipped);
  const total = artifacts.reduce((sum, a) => sum + a.bytes, 0);
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  if (artifacts.length > 0) {
    const sums = relative(ROOT, writeChecksums(artifacts));
    const count = `${artifacts.length} binar${artifacts.length === 1 ? "y" : "ies"}`;
    console.log(`Built ${count} (${formatSize(total)}) in ${seconds}s; checksums in ${sums}.`);
  } else {
    console.log(`Built nothing in ${seconds}s.`);
  }
  if (skipped && options.requireDeno) {
    console.error("compile.ts: --require-deno was given, so a skipped Deno build is a failure.");
    return 1;
  }
  return 0;
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
