/**
 * Runs one shard to completion with two retry budgets. Temporal's own activity retries are off
 * (one attempt per activity), so the workflow receives the ending of every attempt and classifies it:
 *
 * - capacity loss (a `SpotInterruption` hand-back, or a heartbeat timeout when a host vanished)
 *   is retried at once from the last checkpoint and never spends the error budget;
 * - anything else is a real error, retried with backoff up to `maxErrorRetries` times.
 *
 * After `preemptionsBeforeOnDemand` capacity losses the shard moves to the on-demand task queue.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  TimeoutFailure,
  isCancellation,
  log,
  proxyActivities,
  sleep,
} from '@temporalio/workflow';
import { TimeoutType } from '@temporalio/common';
import type { InferenceActivities } from '../activities/inference-activities';
import type { ShardAttempt, ShardCheckpoint, ShardInput, ShardResult } from '../activities/types';

/** Failure types that end the whole batch instead of one shard. */
export const BATCH_FATAL_TYPES = ['ModelChecksumMismatch', 'ModelNotFound', 'ModelLoadFailed', 'InvalidBatchInput', 'ShardListingMismatch'];

/**
 * Capacity losses after which a shard is failed anyway, so a task queue that keeps losing hosts
 * cannot hold a batch open forever.
 */
export const MAX_CAPACITY_LOSSES = 50;

export interface ShardBudgets {
  spotTaskQueue: string;
  onDemandTaskQueue: string;
  /** Retries after real errors; the shard fails after this many plus one. */
  maxErrorRetries: number;
  /** Capacity losses before the shard moves to the on-demand queue; 0 keeps it on spot. */
  preemptionsBeforeOnDemand: number;
}

/** A shard that used up its error budget; the batch goes on without it. */
export class ShardFailed extends Error {
  override name = 'ShardFailed';
  constructor(message: string, readonly attempts: ShardAttempt[]) {
    super(message);
  }
}

// A shard heartbeats every few seconds, so 30 s without one means the host is gone. Two hours
// covers a 5,000-image shard at about 1 image/s, an estimate for a slow CPU host.
const SHARD_TIMEOUTS = {
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '30 seconds',
  retry: { maximumAttempts: 1 },
} as const;

type ShardRequest = Omit<ShardInput, 'attempt' | 'resume' | 'previousAttempts'>;

export async function runShardWithBudgets(request: ShardRequest, budgets: ShardBudgets): Promise<ShardResult> {
  const attempts: ShardAttempt[] = [];
  let resume: ShardCheckpoint | undefined;
  let errors = 0;
  let losses = 0;

  for (;;) {
    const onDemand = budgets.preemptionsBeforeOnDemand > 0 && losses >= budgets.preemptionsBeforeOnDemand;
    const taskQueue = onDemand ? budgets.onDemandTaskQueue : budgets.spotTaskQueue;
    const attempt = attempts.length + 1;
    const startCursor = resume?.cursor ?? 0;
    const { runShard } = proxyActivities<InferenceActivities>({
      ...SHARD_TIMEOUTS,
      taskQueue,
      activityId: `shard-${request.shardIndex}-attempt-${attempt}`,
      summary: `shard ${request.shardIndex}: images ${request.firstIndex + startCursor}–${request.firstIndex + request.images - 1}, attempt ${attempt} on ${taskQueue}`,
    });

    try {
      return await runShard({ ...request, attempt, resume, previousAttempts: attempts });
    } catch (err) {
      if (isCancellation(err) || isBatchFatal(err)) throw err;
      const ending = classify(err);
      const checkpoint = ending.checkpoint ?? resume;
      attempts.push({
        attempt,
        taskQueue,
        capacity: ending.checkpoint?.capacity ?? null,
        outcome: ending.outcome,
        startCursor,
        endCursor: checkpoint?.cursor ?? 0,
        error: ending.message,
        costUsd: (checkpoint?.priorCostUsd ?? 0) - (resume?.priorCostUsd ?? 0),
      });
      resume = checkpoint;
      const fields = { batchId: request.batchId, shard: request.shardIndex, attempt, outcome: ending.outcome, cursor: resume?.cursor ?? 0 };

      if (ending.outcome === 'failed') {
        errors += 1;
        if (errors > budgets.maxErrorRetries) {
          throw new ShardFailed(`failed ${errors} times; last error: ${ending.message}`, attempts);
        }
        log.warn('Shard attempt failed; retrying', { ...fields, error: ending.message, errors });
        await sleep(Math.min(1000 * 2 ** (errors - 1), 30_000));
      } else {
        losses += 1;
        if (losses > MAX_CAPACITY_LOSSES) {
          throw new ShardFailed(`lost its capacity ${losses} times; last: ${ending.message}`, attempts);
        }
        log.info('Shard lost its capacity; resuming from checkpoint', fields);
      }
    }
  }
}

interface AttemptEnding {
  outcome: 'interrupted' | 'host-lost' | 'failed';
  checkpoint: ShardCheckpoint | undefined;
  message: string;
}

function classify(err: unknown): AttemptEnding {
  const cause = err instanceof ActivityFailure ? err.cause : err;
  if (cause instanceof TimeoutFailure) {
    const checkpoint = cause.lastHeartbeatDetails as ShardCheckpoint | undefined;
    const hostLost = cause.timeoutType === TimeoutType.HEARTBEAT;
    return { outcome: hostLost ? 'host-lost' : 'failed', checkpoint, message: hostLost ? 'heartbeat timed out' : cause.message };
  }
  if (cause instanceof ApplicationFailure) {
    const checkpoint = cause.details?.[0] as ShardCheckpoint | undefined;
    const interrupted = cause.type === 'SpotInterruption';
    return { outcome: interrupted ? 'interrupted' : 'failed', checkpoint, message: cause.message };
  }
  return { outcome: 'failed', checkpoint: undefined, message: cause instanceof Error ? cause.message : String(cause) };
}

export function isBatchFatal(err: unknown): boolean {
  const cause = err instanceof ActivityFailure ? err.cause : err;
  return cause instanceof ApplicationFailure && BATCH_FATAL_TYPES.includes(cause.type ?? '');
}
