/**
 * Activities of the `fleetController` workflow, run by the orchestrator worker: one reads an
 * activity task queue's backlog from Temporal, the others read and set an EC2 Fleet's target.
 */
import { Context, log } from '@temporalio/activity';
import { createEc2FleetApi, type FleetApi } from './ec2-fleet';
import type { FleetCapacity, SetFleetTargetInput, SetFleetTargetResult, TaskQueueBacklog } from './types';

export interface FleetDeps {
  /** EC2 Fleet calls; created on first use from the SDK's environment configuration when omitted. */
  fleetApi?: FleetApi;
}

const MAX_POLLER_IDENTITIES = 20;
// temporal.api.enums.v1 values; @temporalio/proto is not a direct dependency of this package.
const TASK_QUEUE_KIND_NORMAL = 1;
const TASK_QUEUE_TYPE_ACTIVITY = 2;

type Int64 = number | { toNumber(): number } | null | undefined;

function toNumber(value: Int64): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'number' ? value : value.toNumber();
}

export function createFleetActivities(deps: FleetDeps = {}) {
  let fleetApi = deps.fleetApi;
  const fleet = (): FleetApi => {
    fleetApi ??= createEc2FleetApi();
    return fleetApi;
  };

  return {
    /**
     * Reads the backlog of an activity task queue with DescribeTaskQueue (legacy mode,
     * `reportStats: true`) through the worker's own client, so it needs no connection of its own.
     */
    async readTaskQueueBacklog(input: { taskQueue: string }): Promise<TaskQueueBacklog> {
      const { client } = Context.current();
      const response = await client.workflowService.describeTaskQueue({
        namespace: client.options.namespace,
        taskQueue: { name: input.taskQueue, kind: TASK_QUEUE_KIND_NORMAL },
        taskQueueType: TASK_QUEUE_TYPE_ACTIVITY,
        reportStats: true,
      });
      const stats = response.stats;
      const age = stats?.approximateBacklogAge;
      const pollers = response.pollers ?? [];
      return {
        taskQueue: input.taskQueue,
        backlog: toNumber(stats?.approximateBacklogCount),
        backlogAgeSeconds: toNumber(age?.seconds) + (age?.nanos ?? 0) / 1e9,
        tasksAddRate: stats?.tasksAddRate ?? 0,
        tasksDispatchRate: stats?.tasksDispatchRate ?? 0,
        pollers: pollers.length,
        pollerIdentities: pollers.slice(0, MAX_POLLER_IDENTITIES).map((poller) => poller.identity ?? ''),
      };
    },

    /** Reads the fleet's target; fails without retries when the fleet is missing or not of type maintain. */
    async describeFleetCapacity(input: { fleetId: string }): Promise<FleetCapacity> {
      return fleet().describeFleet(input.fleetId);
    },

    /** Sets the fleet's TotalTargetCapacity, calling ModifyFleet only when DescribeFleets shows another value. */
    async setFleetTargetCapacity(input: SetFleetTargetInput): Promise<SetFleetTargetResult> {
      const before = await fleet().describeFleet(input.fleetId);
      const modified = before.targetCapacity !== input.targetCapacity;
      if (modified) {
        await fleet().setTargetCapacity(input.fleetId, input.targetCapacity);
        log.info('Changed EC2 Fleet target capacity', {
          fleetId: input.fleetId,
          previousTarget: before.targetCapacity,
          targetCapacity: input.targetCapacity,
          reason: input.decision.reason,
        });
      }
      return {
        fleetId: input.fleetId,
        previousTarget: before.targetCapacity,
        targetCapacity: input.targetCapacity,
        fulfilledCapacity: before.fulfilledCapacity,
        modified,
      };
    },
  };
}

export type FleetActivities = ReturnType<typeof createFleetActivities>;
