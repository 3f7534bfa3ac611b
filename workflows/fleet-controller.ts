/**
 * `fleetController`: a long-running workflow per GPU task queue that reads the queue's backlog
 * every `intervalSeconds` and sets the target capacity of an EC2 Fleet of type `maintain`.
 * Each reading and each decision is an activity input or result, so the history shows why the
 * fleet changed. The `decisions` query returns the latest decisions, and the `stop` signal ends it.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  log,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { FleetActivities } from '../activities/fleet/fleet-activities';
import { FLEET_NOT_FOUND, INVALID_FLEET_TYPE, type FleetDecision, type TaskQueueBacklog } from '../activities/fleet/types';
import { FLEET_DECISIONS_QUERY, FLEET_STOP_SIGNAL } from './fleet-names';
import { INVALID_FLEET_INPUT, validateFleetInput, type ResolvedFleetInput } from './fleet-options';
import { decideFleetTarget, fleetAction, type FleetControllerState } from './fleet-policy';

/** Decisions kept in the workflow state and returned by the `decisions` query. */
export const MAX_DECISIONS_KEPT = 50;

/** Returns the latest decisions, oldest first; the argument limits how many. */
export const decisionsQuery = defineQuery<FleetDecision[], [number?]>(FLEET_DECISIONS_QUERY);
/** Ends the controller after the current reading; the argument is a reason kept in the result. */
export const stopSignal = defineSignal<[string?]>(FLEET_STOP_SIGNAL);

/** State passed to the next run by continue-as-new. */
export interface FleetCarriedState extends FleetControllerState {
  decisions: FleetDecision[];
  /** Runs of this controller so far, counting the current one. */
  runs: number;
}

export interface FleetControllerResult {
  fleetId: string;
  taskQueue: string;
  /** Why the controller ended: the stop signal's reason. */
  stoppedBecause: string;
  /** The fleet's target capacity when the controller ended; the controller leaves it as it is. */
  targetCapacity: number;
  runs: number;
  decisions: FleetDecision[];
}

const FATAL_TYPES = [FLEET_NOT_FOUND, INVALID_FLEET_TYPE, INVALID_FLEET_INPUT];

const fleet = proxyActivities<FleetActivities>({
  startToCloseTimeout: '1 minute',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '10 seconds',
    maximumAttempts: 3,
    nonRetryableErrorTypes: FATAL_TYPES,
  },
});

export async function fleetController(raw: unknown, carried?: FleetCarriedState): Promise<FleetControllerResult> {
  const options = validateFleetInput(raw);
  let stoppedBecause: string | null = null;
  const decisions: FleetDecision[] = carried?.decisions.slice(-MAX_DECISIONS_KEPT) ?? [];

  setHandler(stopSignal, (reason?: string) => {
    stoppedBecause = reason ?? 'stop signal';
  });
  setHandler(decisionsQuery, (limit?: number) => decisions.slice(-Math.max(1, limit ?? MAX_DECISIONS_KEPT)));

  const state: FleetCarriedState = carried
    ? { ...carried, decisions, runs: carried.runs + 1 }
    : await initialState(options, decisions);

  for (let iteration = 0; stoppedBecause === null; iteration += 1) {
    if (iteration >= options.iterationsPerRun || workflowInfo().continueAsNewSuggested) {
      log.info('Fleet controller continues as new', { fleetId: options.fleetId, iterations: iteration, runs: state.runs });
      return await continueAsNew<typeof fleetController>(raw, { ...state, decisions: decisions.slice(-MAX_DECISIONS_KEPT) });
    }
    await controlOnce(options, state, decisions);
    await condition(() => stoppedBecause !== null, options.intervalSeconds * 1000);
  }

  return {
    fleetId: options.fleetId,
    taskQueue: options.taskQueue,
    stoppedBecause: stoppedBecause ?? 'stop signal',
    targetCapacity: state.currentTarget,
    runs: state.runs,
    decisions: decisions.slice(),
  };
}

/** Reads the fleet once at the first start, so a wrong fleet id fails the workflow at once. */
async function initialState(options: ResolvedFleetInput, decisions: FleetDecision[]): Promise<FleetCarriedState> {
  let capacity;
  try {
    capacity = await fleet.describeFleetCapacity({ fleetId: options.fleetId });
  } catch (err) {
    rethrowIfFatal(err);
    throw err;
  }
  log.info('Fleet controller started', { fleetId: options.fleetId, taskQueue: options.taskQueue, targetCapacity: capacity.targetCapacity });
  return { currentTarget: capacity.targetCapacity, lastChangeAtMs: null, idleSinceMs: null, decisions, runs: 1 };
}

/**
 * Reads the backlog, decides and applies the target. A reading or a change that fails after its
 * retries is logged and skipped, so the next interval tries again. A missing or wrong fleet fails the workflow.
 */
async function controlOnce(options: ResolvedFleetInput, state: FleetCarriedState, decisions: FleetDecision[]): Promise<void> {
  let reading: TaskQueueBacklog;
  try {
    reading = await fleet.readTaskQueueBacklog({ taskQueue: options.taskQueue });
  } catch (err) {
    rethrowIfFatal(err);
    log.warn('Reading the task queue backlog failed; trying again at the next interval', { taskQueue: options.taskQueue, error: String(err) });
    return;
  }

  const nowMs = Date.now();
  const { decision, idleSinceMs } = decideFleetTarget(options, state, reading, nowMs);
  try {
    const result = await fleet.setFleetTargetCapacity({ fleetId: options.fleetId, targetCapacity: decision.capacityAfter, decision });
    // The fleet may have been changed outside the controller since the last reading; record what DescribeFleets showed.
    decision.capacityBefore = result.previousTarget;
    decision.action = fleetAction(result.previousTarget, result.targetCapacity);
    state.currentTarget = result.targetCapacity;
    if (result.modified) state.lastChangeAtMs = nowMs;
  } catch (err) {
    rethrowIfFatal(err);
    log.warn('Setting the fleet target capacity failed; trying again at the next interval', { fleetId: options.fleetId, targetCapacity: decision.capacityAfter, error: String(err) });
    decision.reason = `Setting target ${decision.capacityAfter} failed: ${failureMessage(err)} (decided: ${decision.reason})`;
    decision.capacityAfter = decision.capacityBefore;
    decision.action = 'hold';
    decision.code = 'error';
  }
  state.idleSinceMs = idleSinceMs;
  decisions.push(decision);
  if (decisions.length > MAX_DECISIONS_KEPT) decisions.splice(0, decisions.length - MAX_DECISIONS_KEPT);
}

/** Fails the workflow with the activity's own failure when retrying at the next interval cannot help. */
function rethrowIfFatal(err: unknown): void {
  const cause = err instanceof ActivityFailure ? err.cause : undefined;
  if (cause instanceof ApplicationFailure && cause.type && FATAL_TYPES.includes(cause.type)) throw cause;
}

function failureMessage(err: unknown): string {
  if (err instanceof ActivityFailure && err.cause) return err.cause.message;
  return err instanceof Error ? err.message : String(err);
}
