/** Plain-text and JSON output for the CLI. */

/** An error caused by the command line; the CLI prints its message without a stack trace. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

/**
 * Prints rows as an aligned table, or as `key: value` blocks when `vertical` is set
 * (better for one wide record such as a model or a summary).
 */
export function printTable(rows: Array<Record<string, string | number>>, vertical = false): void {
  if (rows.length === 0) return;
  if (vertical) {
    for (const row of rows) {
      const width = Math.max(...Object.keys(row).map((key) => key.length));
      for (const [key, value] of Object.entries(row)) console.log(`  ${key.padEnd(width)}  ${value}`);
    }
    return;
  }
  const keys = Object.keys(rows[0]);
  const widths = keys.map((key) => Math.max(key.length, ...rows.map((row) => String(row[key] ?? '').length)));
  const line = (cells: string[]) => cells.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd();
  console.log(line(keys.map((key) => key.toUpperCase())));
  for (const row of rows) console.log(line(keys.map((key) => String(row[key] ?? ''))));
}

export function formatUsd(value: number): string {
  return value < 0.01 && value > 0 ? `$${value.toFixed(6)}` : `$${value.toFixed(2)}`;
}
