/**
 * Small statistics and number formatting for the bench.
 *
 * @module
 */

/** The median; the mean of the two middle values for an even count. NaN when empty. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Each part's fraction of the sum: [min, max]. */
export function shareRange(parts: readonly number[]): [number, number] {
  const total = parts.reduce((a, b) => a + b, 0);
  if (total === 0) return [0, 0];
  return [Math.min(...parts) / total, Math.max(...parts) / total];
}

/** A number with `digits` significant digits at most, and thousands separators for big ones. */
export function formatNumber(value: number, digits = 3): string {
  if (!Number.isFinite(value)) return "n/a";
  if (Math.abs(value) >= 10 ** digits) return Math.round(value).toLocaleString("en-US");
  return Number(value.toPrecision(digits)).toString();
}

/** A ratio as `0.36x`. */
export function formatRatio(value: number): string {
  return Number.isFinite(value) ? `${value.toFixed(2)}x` : "";
}

/** A fraction as a percentage with one decimal. */
export function formatPercent(fraction: number): string {
  return `${(fraction * 100).toFixed(1)}%`;
}

/** Renders rows as an aligned text table; the first row is the header. */
export function renderTable(rows: readonly (readonly string[])[]): string {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => (row[column] ?? "").length)));
  const line = (row: readonly string[]) => row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [line(rows[0]), rule, ...rows.slice(1).map(line)].join("\n");
}
