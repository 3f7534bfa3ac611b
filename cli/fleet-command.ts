/**
 * `skynewt fleet start|status|stop`: run the `fleetController` workflow that sizes an EC2 Fleet
 * from a GPU task queue's backlog, read its decisions, and stop it.
 */
import type { Command } from 'commander';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import type { FleetDecision } from '../activities/fleet/types';
import type { FleetControllerInput } from '../workflows/fleet-options';
import { FLEET_DECISIONS_QUERY, FLEET_STOP_SIGNAL, FLEET_WORKFLOW_TYPE, fleetWorkflowId } from '../workflows/fleet-names';
import { GPU_SPOT_TASK_QUEUE } from '../workflows/names';
import { loadConfig } from '../workers/config';
import { connectClient, workflowUrl } from './batch-commands';
import { printJson, printTable, UsageError } from './output';

interface StartOptions {
  fleetId: string;
  taskQueue: string;
  min?: string;
  max?: string;
  shardsPerInstance?: string;
  cooldown?: string;
  idle?: string;
  interval?: string;
  json?: boolean;
}

function integerOption(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isInteger(number)) throw new UsageError(`Invalid ${flag} ${JSON.stringify(value)}: expected a whole number.`);
  return number;
}

function explainFleetError(taskQueue: string, err: unknown): unknown {
  const workflowId = fleetWorkflowId(taskQueue);
  if (err instanceof WorkflowNotFoundError) {
    return new UsageError(`No fleet controller ${workflowId} for task queue ${taskQueue} on ${loadConfig().address}; start one with: skynewt fleet start --fleet-id ID --task-queue ${taskQueue}`);
  }
  if (err instanceof WorkflowExecutionAlreadyStartedError) {
    return new UsageError(`A fleet controller ${workflowId} already runs for task queue ${taskQueue}; stop it first with: skynewt fleet stop --task-queue ${taskQueue}`);
  }
  return err;
}

export function addFleetCommand(program: Command): void {
  const fleet = program
    .command('fleet')
    .description('size an EC2 Fleet of type maintain from the backlog of a GPU task queue');

  fleet
    .command('start')
    .description('start the fleet controller workflow (id fleet-<task queue>) on the orchestrator task queue')
    .requiredOption('--fleet-id <id>', 'EC2 Fleet id of a fleet of type maintain')
    .option('--task-queue <name>', 'GPU task queue whose backlog drives the fleet', GPU_SPOT_TASK_QUEUE)
    .option('--min <n>', 'minimum target capacity in instances (default 0)')
    .option('--max <n>', 'maximum target capacity in instances (default 10)')
    .option('--shards-per-instance <n>', 'backlogged shards one instance takes (default 1)')
    .option('--cooldown <seconds>', 'minimum seconds between two changes of the target (default 120)')
    .option('--idle <seconds>', 'seconds without backlog or dispatched tasks before scaling down to --min (default 600)')
    .option('--interval <seconds>', 'seconds between two backlog readings (default 30)')
    .option('--json', 'print JSON')
    .action(async (options: StartOptions) => {
      const input: FleetControllerInput = {
        fleetId: options.fleetId,
        taskQueue: options.taskQueue,
        minCapacity: integerOption('--min', options.min),
        maxCapacity: integerOption('--max', options.max),
        shardsPerInstance: integerOption('--shards-per-instance', options.shardsPerInstance),
        cooldownSeconds: integerOption('--cooldown', options.cooldown),
        idleSeconds: integerOption('--idle', options.idle),
        intervalSeconds: integerOption('--interval', options.interval),
      };
      const config = loadConfig();
      const { client } = await connectClient();
      const workflowId = fleetWorkflowId(options.taskQueue);
      // Undefined fields would reach the workflow as missing ones, so drop them before sending.
      const args = [Object.fromEntries(Object.entries(input).filter(([, value]) => value !== undefined))];
      await client.workflow.start(FLEET_WORKFLOW_TYPE, { taskQueue: config.orchestratorTaskQueue, workflowId, args }).catch((err: unknown) => {
        throw explainFleetError(options.taskQueue, err);
      });
      if (options.json) return printJson({ workflowId, taskQueue: options.taskQueue, fleetId: options.fleetId, webUi: workflowUrl(workflowId) });
      console.log(`Started fleet controller ${workflowId} for EC2 Fleet ${options.fleetId}; follow it with: skynewt fleet status --task-queue ${options.taskQueue}`);
    });

  fleet
    .command('status')
    .description("list the fleet controller's latest decisions (the workflow's decisions query)")
    .option('--task-queue <name>', 'GPU task queue of the controller', GPU_SPOT_TASK_QUEUE)
    .option('--last <n>', 'decisions to list', '20')
    .option('--json', 'print JSON')
    .action(async (options: { taskQueue: string; last: string; json?: boolean }) => {
      const last = integerOption('--last', options.last);
      const { client } = await connectClient();
      const handle = client.workflow.getHandle(fleetWorkflowId(options.taskQueue));
      const decisions = await handle.query<FleetDecision[], [number?]>(FLEET_DECISIONS_QUERY, last).catch((err: unknown) => {
        throw explainFleetError(options.taskQueue, err);
      });
      if (options.json) return printJson(decisions);
      if (decisions.length === 0) return console.log('No decisions yet.');
      printTable(decisions.map((decision) => ({
        at: decision.at,
        backlog: decision.backlog,
        pollers: decision.pollers,
        capacity: `${decision.capacityBefore} -> ${decision.capacityAfter}`,
        action: decision.action,
        reason: decision.reason,
      })));
    });

  fleet
    .command('stop')
    .description('stop the fleet controller; the fleet keeps its current target capacity')
    .option('--task-queue <name>', 'GPU task queue of the controller', GPU_SPOT_TASK_QUEUE)
    .action(async (options: { taskQueue: string }) => {
      const { client } = await connectClient();
      const workflowId = fleetWorkflowId(options.taskQueue);
      await client.workflow.getHandle(workflowId).signal(FLEET_STOP_SIGNAL, 'skynewt fleet stop').catch((err: unknown) => {
        throw explainFleetError(options.taskQueue, err);
      });
      console.log(`Stop requested for ${workflowId}; it ends after its current reading.`);
    });
}
