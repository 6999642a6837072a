/**
 * Counters and gauges in the Prometheus text format, without a dependency.
 *
 * @module
 */

type Labels = Record<string, string>;

interface Family {
  name: string;
  help: string;
  type: "counter" | "gauge";
  read(): Array<[Labels, number]>;
}

/** A monotonically increasing count, optionally split by labels. */
export class Counter {
  readonly #values = new Map<string, [Labels, number]>();

  /** Adds `by` (default 1) for the given labels. */
  inc(labels: Labels = {}, by = 1): void {
    const key = JSON.stringify(labels);
    const entry = this.#values.get(key);
    if (entry) entry[1] += by;
    else this.#values.set(key, [labels, by]);
  }

  /** The count for the given labels. */
  get(labels: Labels = {}): number {
    return this.#values.get(JSON.stringify(labels))?.[1] ?? 0;
  }

  /** Every labelled value. */
  values(): Array<[Labels, number]> {
    return [...this.#values.values()];
  }
}

/** A set of metrics rendered together. */
export class Registry {
  readonly #families: Family[] = [];

  /** Registers and returns a counter named `o3sr_<name>`. */
  counter(name: string, help: string): Counter {
    const counter = new Counter();
    this.#families.push({ name: `o3sr_${name}`, help, type: "counter", read: () => counter.values() });
    return counter;
  }

  /** Registers a gauge named `o3sr_<name>` whose value is read at render time. */
  gauge(name: string, help: string, read: () => number | Array<[Labels, number]>): void {
    this.#families.push({
      name: `o3sr_${name}`,
      help,
      type: "gauge",
      read: () => {
        const value = read();
        return typeof value === "number" ? [[{}, value]] : value;
      },
    });
  }

  /** All metrics in the Prometheus text exposition format (version 0.0.4). */
  render(): string {
    const lines: string[] = [];
    for (const family of this.#families) {
      lines.push(`# HELP ${family.name} ${family.help}`, `# TYPE ${family.name} ${family.type}`);
      const values = family.read();
      if (values.length === 0 && family.type === "counter") values.push([{}, 0]);
      for (const [labels, value] of values) lines.push(`${family.name}${formatLabels(labels)} ${value}`);
    }
    return lines.join("\n") + "\n";
  }
}

function formatLabels(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return "";
  const escape = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
  return `{${entries.map(([k, v]) => `${k}="${escape(v)}"`).join(",")}}`;
}
