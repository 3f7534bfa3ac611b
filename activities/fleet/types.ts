/** Values the fleet activities and the `fleetController` workflow exchange; all plain JSON. */

/** One reading of an activity task queue (DescribeTaskQueue with reportStats). */
export interface TaskQueueBacklog {
  taskQueue: string;
  /** Activity tasks waiting for a worker (`stats.approximateBacklogCount`). */
  backlog: number;
  /** Age of the oldest waiting task in seconds (`stats.approximateBacklogAge`). */
  backlogAgeSeconds: number;
  /** Tasks added per second, averaged by the server over a recent window (`stats.tasksAddRate`). */
  tasksAddRate: number;
  /** Tasks handed to workers per second, averaged the same way (`stats.tasksDispatchRate`). */
  tasksDispatchRate: number;
  /** Workers that polled the queue recently, as the server lists them. */
  pollers: number;
  /** Identities of those workers, at most 20. */
  pollerIdentities: string[];
}

/** The target capacity of an EC2 Fleet as DescribeFleets reports it. */
export interface FleetCapacity {
  fleetId: string;
  /** `maintain`, `request` or `instant`. */
  type: string;
  /** `FleetState`, such as `active` or `modifying`. */
  state: string;
  /** `TargetCapacitySpecification.TotalTargetCapacity`. */
  targetCapacity: number;
  /** `FulfilledCapacity`: capacity the fleet runs now. */
  fulfilledCapacity: number;
}

export type FleetAction = 'scale-up' | 'scale-down' | 'hold';

/** One decision of the controller after a backlog reading, sent as an activity input so the history keeps it. */
export interface FleetDecision {
  /** Workflow time of the decision, ISO 8601. */
  at: string;
  taskQueue: string;
  backlog: number;
  backlogAgeSeconds: number;
  tasksAddRate: number;
  tasksDispatchRate: number;
  pollers: number;
  /** Target capacity before the decision, as the controller last read it from the fleet. */
  capacityBefore: number;
  /** Target capacity the controller sets; equals capacityBefore when the action is `hold`. */
  capacityAfter: number;
  /** ceil(backlog / shardsPerInstance) within minCapacity and maxCapacity. */
  desiredCapacity: number;
  action: FleetAction;
  /** Short machine-readable cause: backlog, idle, below-minimum, above-maximum, cooldown, busy, idle-waiting, steady or error. */
  code: string;
  /** The cause in one sentence, with the numbers behind it. */
  reason: string;
}

export interface SetFleetTargetInput {
  fleetId: string;
  targetCapacity: number;
  decision: FleetDecision;
}

export interface SetFleetTargetResult {
  fleetId: string;
  /** TotalTargetCapacity that DescribeFleets reported before the change. */
  previousTarget: number;
  targetCapacity: number;
  fulfilledCapacity: number;
  /** Whether ModifyFleet was called; false when the fleet already had the target. */
  modified: boolean;
}

/** Failure type for a fleet id that DescribeFleets does not list. */
export const FLEET_NOT_FOUND = 'FleetNotFound';
/** Failure type for a fleet that is not of type `maintain`. */
export const INVALID_FLEET_TYPE = 'InvalidFleetType';
