/**
 * `skynewt cost BATCH`: what a finished batch cost, what its incomplete attempts cost, and what
 * the same work would have cost on demand, from its manifest alone.
 */
import type { Command } from 'commander';
import { loadOnDemandPrices, onDemandPrice, regionOfZone, type OnDemandPrices } from '../activities/pricing/on-demand';
import type { AttemptOutcome, ShardAttempt } from '../activities/types';
import type { BatchManifest } from '../activities/write-manifest';
import { readManifest } from '../client/skynewt-client';
import { loadConfig } from '../workers/config';
import { BatchFailedError, connectClient, explainBatchError, toInputUri } from './batch-commands';
import { formatUsd, printJson, printTable, UsageError } from './output';

/** Cost figures of one batch, in USD. */
export interface CostReport {
  batchId: string;
  images: number;
  imagesOk: number;
  /** Every attempt of every shard, including the shards that failed. */
  totalCostUsd: number;
  /** Total cost per 1,000 images of the batch listing; null for an empty batch. */
  costPer1000ImagesUsd: number | null;
  /** Cost of attempts that ended interrupted, host-lost or failed, and of every attempt of a failed shard. */
  wastedCostUsd: number;
  wastedByOutcome: Record<Exclude<AttemptOutcome, 'completed'>, number> & { failedShards: number };
  /** The same host-hours at on-demand list prices; null when no attempt has a price to scale. */
  onDemandCostUsd: number | null;
  /** Attempts left out of `onDemandCostUsd`: no capacity recorded, no list price, or no price paid. */
  attemptsWithoutOnDemandPrice: number;
  /**
   * Cost of hosts idling just before the batch's completed attempts (between shards, or after
   * start or pre-warm); null for manifests written before attempts recorded it.
   */
  idleCostUsd: number | null;
  byCapacity: Array<{ instanceType: string; lifecycle: string; attempts: number; costUsd: number; hostHours: number | null }>;
  notes: string[];
}

/** Attempts of a manifest with the shard they belong to, failed shards included. */
function allAttempts(manifest: BatchManifest): Array<{ attempt: ShardAttempt; shardFailed: boolean }> {
  return [
    ...manifest.shards.flatMap((shard) => shard.attempts.map((attempt) => ({ attempt, shardFailed: false }))),
    ...manifest.failedShards.flatMap((shard) => shard.attempts.map((attempt) => ({ attempt, shardFailed: true }))),
  ];
}

/**
 * Returns the host-hours an attempt was charged for: its cost ÷ the hourly rate recorded in its
 * capacity, which already divides by the shards sharing the host. Null without a rate.
 */
function hostHours(attempt: ShardAttempt): number | null {
  const rate = attempt.capacity?.hourlyRateUsd ?? 0;
  return rate > 0 ? attempt.costUsd / rate : null;
}

export function costReport(manifest: BatchManifest, prices: OnDemandPrices): CostReport {
  const attempts = allAttempts(manifest);
  const wastedByOutcome = { interrupted: 0, 'host-lost': 0, failed: 0, failedShards: 0 };
  const byCapacity = new Map<string, CostReport['byCapacity'][number]>();
  let totalCostUsd = 0;
  let onDemandCostUsd = 0;
  let priced = 0;
  let idleCostUsd: number | null = null;

  for (const { attempt, shardFailed } of attempts) {
    totalCostUsd += attempt.costUsd;
    if (attempt.idleCostUsd !== undefined) idleCostUsd = (idleCostUsd ?? 0) + attempt.idleCostUsd;
    if (shardFailed) wastedByOutcome.failedShards += attempt.costUsd;
    else if (attempt.outcome !== 'completed') wastedByOutcome[attempt.outcome] += attempt.costUsd;

    const hours = hostHours(attempt);
    const capacity = attempt.capacity;
    const listPrice = capacity ? onDemandPrice(prices, regionOfZone(capacity.availabilityZone), capacity.instanceType) : null;
    if (hours !== null && listPrice !== null) {
      onDemandCostUsd += hours * listPrice;
      priced += 1;
    }

    const key = capacity ? `${capacity.instanceType} ${capacity.lifecycle}` : 'unknown';
    const row = byCapacity.get(key) ?? { instanceType: capacity?.instanceType ?? 'unknown', lifecycle: capacity?.lifecycle ?? 'unknown', attempts: 0, costUsd: 0, hostHours: 0 };
    row.attempts += 1;
    row.costUsd += attempt.costUsd;
    row.hostHours = row.hostHours === null || hours === null ? null : row.hostHours + hours;
    byCapacity.set(key, row);
  }

  const notes = [
    'Idle cost is the host time with no shard running just before each completed attempt, charged to that attempt; a host idling after its last shard is charged to its next batch.',
    'Wasted cost counts every attempt that did not complete, although the images such an attempt checkpointed were kept; the time after its last checkpoint was never charged.',
  ];
  const unpriced = attempts.length - priced;
  if (unpriced > 0) {
    notes.push(`${unpriced} of ${attempts.length} attempts have no on-demand equivalent: no capacity recorded, no list price for the instance type and region, or no hourly rate (local runs).`);
  }
  // NOTE: host-hours are cost ÷ the rate recorded at worker start, so a spot price that changed
  // while the worker ran skews the on-demand equivalent by the ratio of the two prices.
  const wastedCostUsd = wastedByOutcome.interrupted + wastedByOutcome['host-lost'] + wastedByOutcome.failed + wastedByOutcome.failedShards;
  return {
    batchId: manifest.batchId,
    images: manifest.images,
    imagesOk: manifest.imagesOk,
    totalCostUsd,
    costPer1000ImagesUsd: manifest.images > 0 ? (totalCostUsd / manifest.images) * 1000 : null,
    wastedCostUsd,
    wastedByOutcome,
    onDemandCostUsd: priced > 0 ? onDemandCostUsd : null,
    attemptsWithoutOnDemandPrice: unpriced,
    idleCostUsd,
    byCapacity: [...byCapacity.values()],
    notes,
  };
}

/** Reads a manifest by path or URI, else a finished batch's manifest through Temporal, as `skynewt results` does. */
async function manifestFor(reference: string): Promise<BatchManifest> {
  if (reference.endsWith('.json') || reference.includes('://')) {
    return readManifest(toInputUri(reference, !reference.startsWith('s3://')));
  }
  const client = await connectClient();
  const progress = await client.liveProgress(reference).catch((err: unknown) => {
    throw explainBatchError(reference, err);
  });
  if (progress.executionStatus === 'RUNNING') throw new UsageError(`Batch ${reference} is still running; its cost so far is in: skynewt status ${reference}`);
  if (progress.error) throw new BatchFailedError(reference, progress.error);
  return client.manifest(reference);
}

function usdOrUnknown(value: number | null): string {
  return value === null ? 'unknown' : formatUsd(value);
}

export function printCostReport(report: CostReport): void {
  const savings = report.onDemandCostUsd === null ? null : report.onDemandCostUsd - report.totalCostUsd;
  printTable([{
    batch: report.batchId,
    images: `${report.imagesOk} ok of ${report.images}`,
    'total cost': formatUsd(report.totalCostUsd),
    'per 1,000 images': usdOrUnknown(report.costPer1000ImagesUsd),
    'wasted cost': `${formatUsd(report.wastedCostUsd)} (interrupted ${formatUsd(report.wastedByOutcome.interrupted)}, host lost ${formatUsd(report.wastedByOutcome['host-lost'])}, failed ${formatUsd(report.wastedByOutcome.failed)}, failed shards ${formatUsd(report.wastedByOutcome.failedShards)})`,
    'on demand': usdOrUnknown(report.onDemandCostUsd),
    'saved vs on demand': usdOrUnknown(savings),
    'idle cost': usdOrUnknown(report.idleCostUsd),
  }], true);
  console.log('');
  printTable(report.byCapacity.map((row) => ({
    'instance type': row.instanceType,
    lifecycle: row.lifecycle,
    attempts: row.attempts,
    cost: formatUsd(row.costUsd),
    'host hours': row.hostHours === null ? 'unknown' : row.hostHours.toFixed(4),
  })));
  for (const note of report.notes) console.log(`NOTE: ${note}`);
}

export function addCostCommand(program: Command): void {
  program
    .command('cost <batchOrManifest>')
    .description("report a finished batch's cost, wasted cost and on-demand equivalent (by batch id, or a manifest URI or path)")
    .option('--json', 'print JSON')
    .action(async (reference: string, options: { json?: boolean }) => {
      const manifest = await manifestFor(reference);
      const report = costReport(manifest, loadOnDemandPrices(loadConfig().onDemandPricesFile));
      if (options.json) return printJson(report);
      printCostReport(report);
    });
}
