/**
 * Failure types that cross the Temporal server. Each has a stable `type` so the workflow and
 * callers can branch on it; non-retryable ones end the batch before more work is spent.
 */
import { ApplicationFailure } from '@temporalio/common';

export const FailureType = {
  InvalidBatchInput: 'InvalidBatchInput',
  ModelNotFound: 'ModelNotFound',
  ModelChecksumMismatch: 'ModelChecksumMismatch',
  ModelLoadFailed: 'ModelLoadFailed',
  /** A shard handed back by a draining worker; capacity loss, not an error. */
  SpotInterruption: 'SpotInterruption',
} as const;

/** Converts registry and runner errors that no retry can fix into non-retryable failures. */
export function toModelFailure(err: unknown): unknown {
  if (err instanceof Error && (err.name === FailureType.ModelNotFound || err.name === FailureType.ModelChecksumMismatch)) {
    return ApplicationFailure.create({ message: err.message, type: err.name, nonRetryable: true, cause: err });
  }
  return err;
}

export function invalidInput(message: string): ApplicationFailure {
  return ApplicationFailure.create({ message, type: FailureType.InvalidBatchInput, nonRetryable: true });
}
