/**
 * `o3sr init` and `o3sr config check`: a commented example config generated
 * from the option table, and the effective settings printed back.
 *
 * @module
 */

import { camelCase, OPTIONS, type OptionSpec, type Role, type Settings } from "./config.ts";
import { formatBytes, formatDuration } from "./log.ts";

/** The example config `o3sr init` writes: every option, commented out, with its default and help. */
export function exampleConfig(): string {
  const section = (title: string, options: OptionSpec[]) =>
    [
      `# --- ${title} ---`,
      ...options.map((option) => `# ${option.key}: ${yamlValue(option, option.default)}    # ${option.help}`),
    ]
      .join("\n");
  const only = (role: Role) => OPTIONS.filter((o) => o.roles.length === 1 && o.roles[0] === role);
  return [
    "# o3sr configuration (YAML). Flags override what is set here; `o3sr --help` lists them.",
    "# o3sr reads, first found: --config FILE, $O3SR_CONFIG, ~/.config/o3sr/config.yml, ~/.o3sr.yml.",
    "# Uncomment what you need. Check the result with `o3sr config check FILE`.",
    "",
    "# Which role `o3sr` runs with no command: matcher (public host) or relay (behind NAT).",
    "# mode: relay",
    "",
    section("matcher", only("matcher")),
    "",
    section("relay", only("relay")),
    "",
    "# Named services, on a relay (destination) and/or a matcher (client port):",
    "# services:",
    "#   web:",
    "#     dest_host: 127.0.0.1     # relay: where web's streams go",
    "#     dest_port: 3000",
    "#     client_port: 8080        # matcher: where users reach web",
    "",
    "# Tokens on a matcher, one per relay or team:",
    "# tokens:",
    "#   - name: office",
    "#     token: a-long-random-secret",
    "",
    section("both roles", OPTIONS.filter((o) => o.roles.length > 1 && o.key !== "services")),
    "",
  ].join("\n");
}

/** The effective settings as YAML, marking which differ from the defaults. */
export function describeSettings(path: string, mode: Role | "demo" | null, settings: Settings): string {
  const roles: Role[] = mode === "matcher" || mode === "relay" ? [mode] : ["matcher", "relay"];
  const lines = [
    `# ${path} is valid. Effective settings${mode ? ` for a ${mode}` : ""} (flags and file over defaults):`,
  ];
  lines.push(`mode: ${settings.mode ?? "(none: give a command)"}`);
  for (const option of OPTIONS) {
    if (!option.roles.some((role) => roles.includes(role))) continue;
    const value = (settings as unknown as Record<string, unknown>)[camelCase(option.key)];
    const changed = JSON.stringify(value) !== JSON.stringify(option.default);
    lines.push(
      `${option.key}: ${option.secret && value ? "(set, not shown)" : yamlValue(option, value)}${
        changed ? "" : "    # default"
      }`,
    );
  }
  return lines.join("\n");
}

function yamlValue(option: OptionSpec, value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (option.type === "duration" && typeof value === "number") return value === 0 ? "0" : formatDuration(value);
  if (option.type === "size" && typeof value === "number") return formatBytes(value);
  if (option.type === "tokens" && Array.isArray(value)) {
    return JSON.stringify(value.map((t) => ({ name: t.name, token: "(not shown)" })));
  }
  if (option.type === "services" && Array.isArray(value)) {
    const snake = (entry: Record<string, unknown>) =>
      Object.fromEntries(Object.entries(entry).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), v]));
    return JSON.stringify(value.map(snake));
  }
  if (Array.isArray(value) || typeof value === "object") return JSON.stringify(value);
  return String(value);
}
