/**
 * Regenerates the parts of README.md that come from the code, so they cannot
 * drift: the configuration reference (from `OPTIONS`) and the help text.
 * `npm run docs` rewrites README.md; `tests/docs_test.ts` fails when it is stale.
 *
 * @module
 */

import { readFileSync, writeFileSync } from "node:fs";
import { displayDefault, fullHelp } from "../src/cli.ts";
import { OPTIONS } from "../src/config.ts";

const README = new URL("../README.md", import.meta.url);

/** The configuration reference as a Markdown table. */
export function configReference(): string {
  const rows = OPTIONS.map((option) => {
    const values = option.values ? ` (${option.values.map((v) => `\`${v}\``).join(", ")})` : "";
    return [
      `\`${option.key}\``,
      `\`--${option.flag}\``,
      option.roles.join(", "),
      `\`${displayDefault(option)}\``,
      option.help + values,
    ];
  });
  return markdownTable(["key", "flag", "role", "default", "meaning"], [
    [
      "`mode`",
      "`matcher`, `relay`, `--matcher`, `--client`",
      "both",
      "none",
      "which role to run; `client` means relay, as in O3SR",
    ],
    ...rows,
  ]);
}

/** A Markdown table padded the way `deno fmt` pads it, so formatting leaves it alone. */
function markdownTable(header: string[], rows: string[][]): string {
  const widths = header.map((cell, i) => Math.max(cell.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => `| ${cells.map((cell, i) => cell.padEnd(widths[i])).join(" | ")} |`;
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

/** README text with every generated section replaced by its current content. */
export function renderReadme(text: string): string {
  return replaceBetween(
    replaceBetween(text, "reference", configReference()),
    "help",
    "```text\n$ o3sr --help\n" + fullHelp() + "\n```",
  );
}

function replaceBetween(text: string, name: string, content: string): string {
  const start = `<!-- generated:${name} -->`;
  const end = `<!-- /generated:${name} -->`;
  const from = text.indexOf(start);
  const to = text.indexOf(end);
  if (from < 0 || to < from) throw new Error(`README.md lacks the ${start} … ${end} markers`);
  return text.slice(0, from + start.length) + "\n\n" + content + "\n\n" + text.slice(to);
}

if (import.meta.main) {
  const before = readFileSync(README, "utf8");
  const after = renderReadme(before);
  writeFileSync(README, after);
  console.log(before === after ? "README.md is up to date" : "README.md updated");
}
