/** The o3sr version; `package.json` and `deno.json` carry the same (a test checks). */
export const VERSION = "0.1.0";
