/**
 * Figures of a chaos drill, computed from the batch's outputs, its manifest (every shard
 * attempt with its capacity and cursors) and the workers' per-image trace (which images were
 * processed, by which attempt, and when).
 */
import { readFileSync } from 'node:fs';
import type { SkyNewtClient } from '../../client/skynewt-client';
import type { ShardAttempt, OutputRecord } from '../../activities/types';
import type { TraceEntry } from '../../activities/process-trace';
import type { ObjectStore } from '../../activities/storage/object-store';

export interface DrillEvent {
  kind: 'notice' | 'kill';
  host: string;
  /** Epoch milliseconds. */
  atMs: number;
}

export interface Spread {
  count: number;
  medianSeconds: number | null;
  maxSeconds: number | null;
}

export interface DrillReport {
  batchId: string;
  status: string;
  images: number;
  notices: number;
  kills: number;
  attempts: number;
  /** Output lines beyond the first for an input. */
  duplicates: number;
  /** Inputs with no output line. */
  missing: number;
  /** Inputs that some worker processed more than once. */
  processedMoreThanOnce: number;
  /** Images processed again because an attempt was drained after a notice. */
  redoneAfterNotice: number;
  /** Maximum number of images processed again after one SIGKILL. */
  redoneAfterKillMax: number;
  /** From a notice until the noticed worker process had exited. */
  noticeToExit: Spread;
  /** From a notice until the next attempt of each shard it interrupted started its first image. */
  noticeToResume: Spread;
  killToResume: Spread;
  /** Worker time spent on images whose results were discarded. */
  wastedWorkerSeconds: number;
  batchSeconds: number;
}

export interface ReportInput {
  client: SkyNewtClient;
  store: ObjectStore;
  batchId: string;
  events: DrillEvent[];
  /** When each worker process ended, in epoch milliseconds, by host. */
  exits: Map<string, number>;
  traceFile: string;
  images: number;
  shardSize: number;
}

function spread(values: number[]): Spread {
  if (values.length === 0) return { count: 0, medianSeconds: null, maxSeconds: null };
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  return { count: values.length, medianSeconds: round(median), maxSeconds: round(sorted[sorted.length - 1]) };
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

/** Returns the range of shard offsets whose results from this attempt were kept. */
function keptRange(attempt: ShardAttempt, shardImages: number): [number, number] {
  return [attempt.startCursor, attempt.outcome === 'completed' ? shardImages : attempt.endCursor];
}

export async function computeDrillReport(input: ReportInput): Promise<DrillReport> {
  const summary = await input.client.result(input.batchId);
  const manifest = await input.client.readManifest(summary.manifest);

  const outputs = new Map<number, number>();
  for (const shard of manifest.shards) {
    const body = (await input.store.get(shard.output)).body.toString('utf8').trim();
    for (const line of body.split('\n')) {
      const record = JSON.parse(line) as OutputRecord;
      outputs.set(record.index, (outputs.get(record.index) ?? 0) + 1);
    }
  }
  const duplicates = [...outputs.values()].reduce((sum, count) => sum + count - 1, 0);
  const missing = input.images - outputs.size;

  const attemptsByShard = new Map<number, ShardAttempt[]>();
  const imagesByShard = new Map<number, number>();
  for (const shard of manifest.shards) {
    attemptsByShard.set(shard.index, shard.attempts);
    imagesByShard.set(shard.index, shard.images);
  }
  for (const failed of manifest.failedShards) attemptsByShard.set(failed.shardIndex, failed.attempts);

  const trace = readFileSync(input.traceFile, 'utf8').trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as TraceEntry);
  const processed = new Map<number, number>();
  let redoneAfterNotice = 0;
  const redoneByKilledAttempt = new Map<string, number>();
  let wastedMs = 0;
  for (const entry of trace.filter((line) => line.batchId === input.batchId)) {
    processed.set(entry.index, (processed.get(entry.index) ?? 0) + 1);
    const attempt = attemptsByShard.get(entry.shard)?.find((candidate) => candidate.attempt === entry.attempt);
    if (!attempt) continue;
    const offset = entry.index - entry.shard * input.shardSize;
    const [start, end] = keptRange(attempt, imagesByShard.get(entry.shard) ?? 0);
    if (offset >= start && offset < end) continue;
    wastedMs += entry.ms;
    if (attempt.outcome === 'interrupted') redoneAfterNotice += 1;
    if (attempt.outcome === 'host-lost') {
      const key = `${entry.shard}/${entry.attempt}`;
      redoneByKilledAttempt.set(key, (redoneByKilledAttempt.get(key) ?? 0) + 1);
    }
  }

  // An attempt resumes when it starts its first image: the end of that image minus its duration.
  const starts = new Map<string, number>();
  for (const entry of trace) {
    const key = `${entry.shard}/${entry.attempt}`;
    starts.set(key, Math.min(starts.get(key) ?? Infinity, entry.at - entry.ms));
  }
  const noticeToResume: number[] = [];
  const killToResume: number[] = [];
  for (const event of input.events) {
    const outcome = event.kind === 'notice' ? 'interrupted' : 'host-lost';
    for (const [shard, attempts] of attemptsByShard) {
      for (const attempt of attempts) {
        if (attempt.outcome !== outcome || attempt.capacity?.host !== event.host) continue;
        const resumedAt = starts.get(`${shard}/${attempt.attempt + 1}`);
        if (resumedAt !== undefined) (event.kind === 'notice' ? noticeToResume : killToResume).push((resumedAt - event.atMs) / 1000);
      }
    }
  }

  const attempts = [...attemptsByShard.values()].reduce((sum, list) => sum + list.length, 0);
  return {
    batchId: input.batchId,
    status: summary.status,
    images: input.images,
    notices: input.events.filter((event) => event.kind === 'notice').length,
    kills: input.events.filter((event) => event.kind === 'kill').length,
    attempts,
    duplicates,
    missing,
    processedMoreThanOnce: [...processed.values()].filter((count) => count > 1).length,
    redoneAfterNotice,
    redoneAfterKillMax: Math.max(0, ...redoneByKilledAttempt.values()),
    noticeToExit: spread(input.events.filter((event) => event.kind === 'notice' && input.exits.has(event.host)).map((event) => (input.exits.get(event.host)! - event.atMs) / 1000)),
    noticeToResume: spread(noticeToResume),
    killToResume: spread(killToResume),
    wastedWorkerSeconds: round(wastedMs / 1000),
    batchSeconds: round((Date.parse(summary.finishedAt) - Date.parse(summary.startedAt)) / 1000),
  };
}
