/**
 * The fleet controller against a real task queue on the dev server and EC2 Fleets in moto. A batch
 * with no GPU worker builds a backlog and the controller raises the fleet's target. Then an
 * inference worker drains the queue, and the controller lowers the target to minCapacity once idle.
 */
import { randomUUID } from 'node:crypto';
import { CreateFleetCommand, CreateLaunchTemplateCommand, EC2Client, type FleetType } from '@aws-sdk/client-ec2';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createEc2FleetApi, type FleetApi } from '../activities/fleet/ec2-fleet';
import { createFleetActivities } from '../activities/fleet/fleet-activities';
import type { FleetDecision } from '../activities/fleet/types';
import { createObjectStore } from '../activities/storage/stores';
import { createInferenceWorker } from '../workers/inference';
import type { FleetControllerResult } from '../workflows/fleet-controller';
import { FLEET_DECISIONS_QUERY, FLEET_STOP_SIGNAL, FLEET_WORKFLOW_TYPE, fleetWorkflowId } from '../workflows/fleet-names';
import { TEST_CAPACITY, motoS3, registerDetector, sampleFolder, startTestStack, type TestStack } from './helpers';

function motoEc2(): EC2Client {
  return new EC2Client({
    endpoint: inject('motoEndpoint'),
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  });
}

async function createFleet(ec2: EC2Client, type: FleetType): Promise<string> {
  const template = await ec2.send(new CreateLaunchTemplateCommand({
    LaunchTemplateName: `skynewt-gpu-${randomUUID().slice(0, 8)}`,
    LaunchTemplateData: { ImageId: 'ami-12c6146b', InstanceType: 'g5.xlarge' },
  }));
  const fleet = await ec2.send(new CreateFleetCommand({
    Type: type,
    LaunchTemplateConfigs: [{ LaunchTemplateSpecification: { LaunchTemplateId: template.LaunchTemplate?.LaunchTemplateId, Version: '$Latest' } }],
    TargetCapacitySpecification: { TotalTargetCapacity: 0, DefaultTargetCapacityType: 'spot' },
  }));
  if (!fleet.FleetId) throw new Error('CreateFleet returned no FleetId');
  return fleet.FleetId;
}

/**
 * Reads fleets from moto and records target changes in memory. moto 5.2.5 has no ModifyFleet
 * (it returns HTTP 500, "The modify_fleet action has not been implemented"), so DescribeFleets in
 * moto cannot show a changed target.
 */
function recordingFleetApi(ec2: EC2Client): FleetApi & { targets: number[] } {
  const real = createEc2FleetApi(ec2);
  const targets: number[] = [];
  return {
    targets,
    async describeFleet(fleetId) {
      const fleet = await real.describeFleet(fleetId);
      return { ...fleet, targetCapacity: targets.at(-1) ?? fleet.targetCapacity };
    },
    async setTargetCapacity(_fleetId, targetCapacity) {
      targets.push(targetCapacity);
    },
  };
}

async function waitFor<T>(what: string, timeoutMs: number, read: () => Promise<T> | T, done: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await read();
  while (!done(value)) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
    value = await read();
  }
  return value;
}

describe('fleet controller', () => {
  let stack: TestStack;
  let nativeConnection: NativeConnection;
  let connection: Connection;
  let client: Client;
  let fleetWorker: Worker;
  let fleetWorkerRun: Promise<void>;
  let fleetTaskQueue: string;
  const ec2 = motoEc2();
  const fleetApi = recordingFleetApi(ec2);

  beforeAll(async () => {
    stack = await startTestStack({ inference: false });
    nativeConnection = await NativeConnection.connect({ address: inject('temporalAddress') });
    connection = await Connection.connect({ address: inject('temporalAddress') });
    client = new Client({ connection });
    fleetTaskQueue = `test-fleet-${randomUUID().slice(0, 8)}`;
    fleetWorker = await Worker.create({
      connection: nativeConnection,
      namespace: 'default',
      taskQueue: fleetTaskQueue,
      workflowBundle: { codePath: inject('workflowBundlePath') },
      activities: createFleetActivities({ fleetApi }),
    });
    fleetWorkerRun = fleetWorker.run();
  });

  afterAll(async () => {
    fleetWorker?.shutdown();
    await fleetWorkerRun;
    await stack?.stop();
    await connection?.close();
    await nativeConnection?.close();
  });

  it('scales up on backlog and down when idle', { timeout: 90_000 }, async () => {
    const fleetId = await createFleet(ec2, 'maintain');
    const detector = await registerDetector(stack.registry);
    const { batchId } = await stack.client.startBatch({
      input: sampleFolder(6),
      model: detector.name,
      shardSize: 1,
      maxConcurrentShards: 6,
      taskQueue: stack.gpuTaskQueue,
    });

    const workflowId = fleetWorkflowId(stack.gpuTaskQueue);
    const handle = await client.workflow.start(FLEET_WORKFLOW_TYPE, {
      taskQueue: fleetTaskQueue,
      workflowId,
      args: [{
        fleetId,
        taskQueue: stack.gpuTaskQueue,
        maxCapacity: 4,
        shardsPerInstance: 2,
        cooldownSeconds: 0,
        idleSeconds: 2,
        intervalSeconds: 1,
        iterationsPerRun: 5,
      }],
    });
    const decisions = () => handle.query<FleetDecision[]>(FLEET_DECISIONS_QUERY);

    // Six one-image shards wait on a queue with no worker: ceil(6 / 2) = 3 instances.
    await waitFor('the target to rise to 3', 20_000, () => fleetApi.targets.slice(), (targets) => targets.includes(3));
    expect(fleetApi.targets[0]).toBe(3);

    const inference = await createInferenceWorker({
      connection: nativeConnection,
      namespace: 'default',
      taskQueue: stack.gpuTaskQueue,
      store: createObjectStore({ s3: motoS3() }),
      registry: stack.registry,
      runner: stack.runner,
      capacity: TEST_CAPACITY,
      shardConcurrency: 2,
      prewarmModels: [],
    });
    const inferenceRun = inference.run();
    try {
      // The server's add and dispatch rates decay to 0 about 30 s after the last task (dev server 1.32).
      await waitFor('the target to fall to 0', 50_000, () => fleetApi.targets.slice(), (targets) => targets.at(-1) === 0);
    } catch (err) {
      console.log('Fleet decisions before the failure:', JSON.stringify(await decisions(), null, 1));
      throw err;
    } finally {
      inference.shutdown();
      await inferenceRun;
      await stack.client.client.workflow.getHandle(batchId).terminate('fleet test finished').catch(() => undefined);
    }
    expect(fleetApi.targets).toEqual([3, 0]);

    const latest = await decisions();
    const scaleUp = latest.find((decision) => decision.action === 'scale-up');
    const scaleDown = latest.find((decision) => decision.action === 'scale-down');
    expect(scaleUp).toMatchObject({ code: 'backlog', backlog: 6, capacityBefore: 0, capacityAfter: 3, desiredCapacity: 3 });
    expect(scaleDown).toMatchObject({ code: 'idle', backlog: 0, capacityBefore: 3, capacityAfter: 0 });
    expect(latest.map((decision) => decision.code)).toContain('idle-waiting');
    expect(scaleDown?.reason).toMatch(/idle for \d+ s/);

    // Each decision is the input of a setFleetTargetCapacity activity in the history of its run.
    const history = await handle.fetchHistory();
    const scheduled = (history.events ?? []).filter((event) => event.activityTaskScheduledEventAttributes?.activityType?.name === 'setFleetTargetCapacity');
    expect(scheduled.length).toBeGreaterThan(0);

    await handle.signal(FLEET_STOP_SIGNAL, 'test finished');
    const result = await handle.result() as FleetControllerResult;
    expect(result.stoppedBecause).toBe('test finished');
    expect(result.targetCapacity).toBe(0);
    // With five readings per run, a run of over 15 readings has continued as new at least twice.
    expect(result.runs).toBeGreaterThan(2);
    expect(result.decisions.some((decision) => decision.action === 'scale-up')).toBe(true);
  });

  it('rejects invalid input naming the field', async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ fleetId: 'not-a-fleet' }, '"fleetId"'],
      [{ fleetId: 'fleet-0123abcd', minCapacity: 5, maxCapacity: 2 }, '"maxCapacity"'],
      [{ fleetId: 'fleet-0123abcd', intervalSeconds: 0 }, '"intervalSeconds"'],
      [{ fleetId: 'fleet-0123abcd', shardsPerInstance: 1.5 }, '"shardsPerInstance"'],
      [{ fleetId: 'fleet-0123abcd', idle: 3 }, '"idle"'],
    ];
    for (const [input, field] of cases) {
      const error = await client.workflow.execute(FLEET_WORKFLOW_TYPE, {
        taskQueue: fleetTaskQueue,
        workflowId: `fleet-invalid-${randomUUID()}`,
        args: [input],
      }).catch((err: unknown) => err);
      expect(error).toBeInstanceOf(WorkflowFailedError);
      const cause = (error as WorkflowFailedError).cause;
      expect(cause).toBeInstanceOf(ApplicationFailure);
      expect((cause as ApplicationFailure).type).toBe('InvalidFleetInput');
      expect(cause?.message).toContain(field);
    }
  });

  it('fails at start for a fleet not of type maintain', async () => {
    const fleetId = await createFleet(ec2, 'request');
    const error = await client.workflow.execute(FLEET_WORKFLOW_TYPE, {
      taskQueue: fleetTaskQueue,
      workflowId: `fleet-request-${randomUUID()}`,
      args: [{ fleetId, taskQueue: stack.gpuTaskQueue }],
    }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(WorkflowFailedError);
    const cause = (error as WorkflowFailedError).cause;
    expect((cause as ApplicationFailure).type).toBe('InvalidFleetType');
    expect(cause?.message).toContain(fleetId);
  });

  it('reads a maintain fleet from moto', async () => {
    const fleetId = await createFleet(ec2, 'maintain');
    const fleet = await createEc2FleetApi(ec2).describeFleet(fleetId);
    expect(fleet).toMatchObject({ fleetId, type: 'maintain', targetCapacity: 0 });
    await expect(createEc2FleetApi(ec2).describeFleet('fleet-00000000-0000-0000-0000-000000000000')).rejects.toMatchObject({ type: 'FleetNotFound' });
  });
});
