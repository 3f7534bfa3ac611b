/**
 * The `fleetController` input: one JSON object, validated inside the workflow, so validation must
 * stay deterministic. Invalid input fails the workflow with a non-retryable `InvalidFleetInput`.
 */
import { ApplicationFailure } from '@temporalio/workflow';
import { GPU_SPOT_TASK_QUEUE } from './names';

export interface FleetControllerInput {
  /** EC2 Fleet id (`fleet-…`) of a fleet of type `maintain`. Required. */
  fleetId: string;
  /** Activity task queue whose backlog drives the fleet. @default `skynewt-gpu-spot`. */
  taskQueue?: string;
  /** Target capacity the fleet never goes below. @default 0, accepted 0–1000. */
  minCapacity?: number;
  /** Target capacity the fleet never goes above. @default 10, accepted minCapacity–1000. */
  maxCapacity?: number;
  /** Backlogged activity tasks one instance is expected to take. @default 1, accepted 1–10000. */
  shardsPerInstance?: number;
  /** Minimum seconds between two changes of the target capacity. @default 120, accepted 0–86400. */
  cooldownSeconds?: number;
  /** Seconds the queue must stay idle before the fleet scales down to minCapacity. @default 600, accepted 0–86400. */
  idleSeconds?: number;
  /** Seconds between two backlog readings. @default 30, accepted 1–3600. */
  intervalSeconds?: number;
  /** Readings in one run before the workflow continues as new. @default 500, accepted 1–5000. */
  iterationsPerRun?: number;
}

export type ResolvedFleetInput = Required<FleetControllerInput>;

export const FLEET_DEFAULTS = {
  taskQueue: GPU_SPOT_TASK_QUEUE,
  minCapacity: 0,
  maxCapacity: 10,
  shardsPerInstance: 1,
  cooldownSeconds: 120,
  idleSeconds: 600,
  intervalSeconds: 30,
  iterationsPerRun: 500,
} as const;

export const INVALID_FLEET_INPUT = 'InvalidFleetInput';

const KNOWN_FIELDS = new Set([
  'fleetId', 'taskQueue', 'minCapacity', 'maxCapacity', 'shardsPerInstance', 'cooldownSeconds', 'idleSeconds', 'intervalSeconds', 'iterationsPerRun',
]);
const FLEET_ID_PATTERN = /^fleet-[0-9a-f-]{1,64}$/;
const TASK_QUEUE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$/;
const MAX_CAPACITY_LIMIT = 1000;

function invalid(message: string): never {
  throw ApplicationFailure.nonRetryable(message, INVALID_FLEET_INPUT);
}

function checkInteger(field: string, value: unknown, min: number, max: number, fallback: number): number {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    invalid(`Invalid fleet input: "${field}" is ${JSON.stringify(value)}; accepted values are integers from ${min} to ${max} (default ${fallback}).`);
  }
  return value;
}

/**
 * Validates the raw workflow argument and fills in defaults. Throws a non-retryable
 * `InvalidFleetInput` failure whose message names the field and the accepted values.
 */
export function validateFleetInput(raw: unknown): ResolvedFleetInput {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    invalid(`Invalid fleet input: expected one JSON object such as {"fleetId":"fleet-…","taskQueue":"${FLEET_DEFAULTS.taskQueue}"}, got ${JSON.stringify(raw)}.`);
  }
  const fields = raw as Record<string, unknown>;
  const unknown = Object.keys(fields).filter((key) => !KNOWN_FIELDS.has(key));
  if (unknown.length > 0) {
    invalid(`Invalid fleet input: unknown field "${unknown[0]}"; accepted fields are ${[...KNOWN_FIELDS].join(', ')}.`);
  }

  if (typeof fields.fleetId !== 'string' || !FLEET_ID_PATTERN.test(fields.fleetId)) {
    invalid(`Invalid fleet input: "fleetId" is ${JSON.stringify(fields.fleetId)}; expected the id of an EC2 Fleet such as "fleet-0123abcd-…" (see aws ec2 describe-fleets).`);
  }
  const taskQueue = fields.taskQueue ?? FLEET_DEFAULTS.taskQueue;
  if (typeof taskQueue !== 'string' || !TASK_QUEUE_PATTERN.test(taskQueue)) {
    invalid(`Invalid fleet input: "taskQueue" is ${JSON.stringify(fields.taskQueue)}; expected the name of an inference workers' task queue such as "${FLEET_DEFAULTS.taskQueue}".`);
  }

  const minCapacity = checkInteger('minCapacity', fields.minCapacity, 0, MAX_CAPACITY_LIMIT, FLEET_DEFAULTS.minCapacity);
  const maxCapacity = checkInteger('maxCapacity', fields.maxCapacity, minCapacity, MAX_CAPACITY_LIMIT, Math.max(FLEET_DEFAULTS.maxCapacity, minCapacity));
  if (maxCapacity === 0) {
    invalid('Invalid fleet input: "maxCapacity" is 0; accepted values are integers from 1 to 1000, so the fleet can take work.');
  }
  return {
    fleetId: fields.fleetId,
    taskQueue,
    minCapacity,
    maxCapacity,
    shardsPerInstance: checkInteger('shardsPerInstance', fields.shardsPerInstance, 1, 10_000, FLEET_DEFAULTS.shardsPerInstance),
    cooldownSeconds: checkInteger('cooldownSeconds', fields.cooldownSeconds, 0, 86_400, FLEET_DEFAULTS.cooldownSeconds),
    idleSeconds: checkInteger('idleSeconds', fields.idleSeconds, 0, 86_400, FLEET_DEFAULTS.idleSeconds),
    intervalSeconds: checkInteger('intervalSeconds', fields.intervalSeconds, 1, 3600, FLEET_DEFAULTS.intervalSeconds),
    iterationsPerRun: checkInteger('iterationsPerRun', fields.iterationsPerRun, 1, 5000, FLEET_DEFAULTS.iterationsPerRun),
  };
}
