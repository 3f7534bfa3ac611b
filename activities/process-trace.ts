/**
 * An optional per-image trace: one JSON line per image an attempt processed, appended to a local
 * file. The chaos drill reads it to count images processed more than once. It is off unless
 * SKYNEWT_TRACE_FILE is set, because it costs a synchronous write per image.
 */
import { appendFileSync } from 'node:fs';

export interface TraceEntry {
  batchId: string;
  shard: number;
  attempt: number;
  /** Position of the image in the batch listing. */
  index: number;
  host: string;
  /** Wall time spent on the image, in milliseconds. */
  ms: number;
  /** When the image finished, in epoch milliseconds. */
  at: number;
}

export type ProcessTrace = (entry: Omit<TraceEntry, 'at'>) => void;

export function createProcessTrace(file: string | undefined): ProcessTrace | undefined {
  if (!file) return undefined;
  return (entry) => appendFileSync(file, JSON.stringify({ ...entry, at: Date.now() }) + '\n');
}
