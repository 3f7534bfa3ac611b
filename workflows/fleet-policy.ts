/**
 * The scaling rule of `fleetController`, as a pure function of one backlog reading and the
 * controller's state, so it runs unchanged inside the workflow and in tests.
 */
import type { FleetAction, FleetDecision, TaskQueueBacklog } from '../activities/fleet/types';
import type { ResolvedFleetInput } from './fleet-options';

/** State carried from one reading to the next and across continue-as-new. */
export interface FleetControllerState {
  /** Fleet target capacity as the controller last read or set it. */
  currentTarget: number;
  /** Workflow time of the last change the controller made, in epoch milliseconds. */
  lastChangeAtMs: number | null;
  /** Workflow time since which the queue has been idle, in epoch milliseconds; null while busy. */
  idleSinceMs: number | null;
}

export interface FleetDecisionOutcome {
  decision: FleetDecision;
  idleSinceMs: number | null;
}

/**
 * Decides the fleet's next target capacity.
 *
 * - Below minCapacity or above maxCapacity: move into the range at once, ignoring the cooldown.
 * - Backlog: raise the target to ceil(backlog / shardsPerInstance), capped at maxCapacity, once
 *   cooldownSeconds have passed since the last change. The target is never lowered while work waits.
 * - Idle (no backlog, nothing added or dispatched in the server's rate window) for idleSeconds:
 *   lower the target to minCapacity, once the cooldown has passed.
 */
export function decideFleetTarget(options: ResolvedFleetInput, state: FleetControllerState, reading: TaskQueueBacklog, nowMs: number): FleetDecisionOutcome {
  const current = state.currentTarget;
  const desired = reading.backlog > 0
    ? clamp(Math.ceil(reading.backlog / options.shardsPerInstance), options.minCapacity, options.maxCapacity)
    : options.minCapacity;
  // NOTE: DescribeTaskQueue does not count activities already running on workers. A running task
  // shows only through tasksDispatchRate, which the dev server (Temporal 1.32) averages over about
  // 30 s. A shard running longer than that plus idleSeconds can therefore lose its instance, and it
  // then resumes from its last checkpoint on another worker.
  const busy = reading.backlog > 0 || reading.tasksAddRate > 0 || reading.tasksDispatchRate > 0;
  const idleSinceMs = busy ? null : (state.idleSinceMs ?? nowMs);
  const cooldownLeftSeconds = state.lastChangeAtMs === null
    ? 0
    : Math.max(0, Math.ceil((state.lastChangeAtMs + options.cooldownSeconds * 1000 - nowMs) / 1000));

  const decide = (capacityAfter: number, code: string, reason: string): FleetDecisionOutcome => ({
    idleSinceMs,
    decision: {
      at: new Date(nowMs).toISOString(),
      taskQueue: reading.taskQueue,
      backlog: reading.backlog,
      backlogAgeSeconds: reading.backlogAgeSeconds,
      tasksAddRate: reading.tasksAddRate,
      tasksDispatchRate: reading.tasksDispatchRate,
      pollers: reading.pollers,
      capacityBefore: current,
      capacityAfter,
      desiredCapacity: desired,
      action: fleetAction(current, capacityAfter),
      code,
      reason,
    },
  });

  if (current < options.minCapacity) {
    return decide(options.minCapacity, 'below-minimum', `Target ${current} is below minCapacity ${options.minCapacity}.`);
  }
  if (current > options.maxCapacity) {
    return decide(options.maxCapacity, 'above-maximum', `Target ${current} is above maxCapacity ${options.maxCapacity}.`);
  }
  if (reading.backlog > 0 && desired > current) {
    if (cooldownLeftSeconds > 0) {
      return decide(current, 'cooldown', `Backlog ${reading.backlog} needs ${desired} instances, but the cooldown has ${cooldownLeftSeconds} s left.`);
    }
    return decide(desired, 'backlog', `Backlog ${reading.backlog} at ${options.shardsPerInstance} per instance needs ${desired} instances (max ${options.maxCapacity}).`);
  }
  if (busy) {
    return decide(current, 'busy', `Queue is busy (backlog ${reading.backlog}, ${rate(reading.tasksAddRate)} added/s, ${rate(reading.tasksDispatchRate)} dispatched/s); target ${current} covers it.`);
  }
  if (current > options.minCapacity) {
    const idleForSeconds = Math.floor((nowMs - (idleSinceMs ?? nowMs)) / 1000);
    if (idleForSeconds < options.idleSeconds) {
      return decide(current, 'idle-waiting', `Queue idle for ${idleForSeconds} s of the ${options.idleSeconds} s required before scaling down.`);
    }
    if (cooldownLeftSeconds > 0) {
      return decide(current, 'cooldown', `Queue idle for ${idleForSeconds} s, but the cooldown has ${cooldownLeftSeconds} s left.`);
    }
    return decide(options.minCapacity, 'idle', `Queue idle for ${idleForSeconds} s (at least ${options.idleSeconds} s) with no backlog and no dispatched tasks.`);
  }
  return decide(current, 'steady', `No backlog; target stays at minCapacity ${options.minCapacity}.`);
}

/** Names the change from one target capacity to another. */
export function fleetAction(before: number, after: number): FleetAction {
  if (after > before) return 'scale-up';
  if (after < before) return 'scale-down';
  return 'hold';
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

function rate(value: number): string {
  return value.toFixed(2);
}
