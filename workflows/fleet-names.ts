/** Names users type for the fleet controller: the workflow type, its id, the query and the signal. */
export const FLEET_WORKFLOW_TYPE = 'fleetController';
export const FLEET_DECISIONS_QUERY = 'decisions';
export const FLEET_STOP_SIGNAL = 'stop';

/** Workflow id of the controller of one task queue, so each queue has at most one running controller. */
export function fleetWorkflowId(taskQueue: string): string {
  return `fleet-${taskQueue}`;
}
