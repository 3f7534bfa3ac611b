/**
 * The orchestrator worker: runs `batchInference` workflows and the listing, model-resolution and
 * manifest activities on `skynewt-orchestrator`. It needs no accelerator and belongs on on-demand
 * capacity, so a spot reclaim never interrupts the bookkeeping of a batch.
 */
import { Client, Connection } from '@temporalio/client';
import type { DataConverter } from '@temporalio/common';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { encryptingDataConverter } from '../activities/codec/aes-gcm-codec';
import { createOrchestratorActivities } from '../activities/orchestrator-activities';
import { createFleetActivities, type FleetActivities } from '../activities/fleet/fleet-activities';
import { openRegistry } from '../activities/registry/open-registry';
import { createObjectStore } from '../activities/storage/stores';
import { ORCHESTRATOR_TASK_QUEUE } from '../workflows/names';
import { disableMetadataOffEc2 } from '../activities/local-home';
import { loadConfig } from './config';
import { temporalConnectionOptions } from './temporal-connection';
import { WORKER_READY_MARKER } from './ready';

export interface OrchestratorWorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueue?: string;
  /** Batch activities, plus the fleet activities when this worker also runs `fleetController`. */
  activities: ReturnType<typeof createOrchestratorActivities> & Partial<FleetActivities>;
  /** A prebuilt workflow bundle; without it the worker bundles `workflows/` at start (seconds). */
  workflowBundle?: WorkerOptions['workflowBundle'];
  /** Data converter, e.g. one that encrypts payloads; the SDK's default when absent. */
  dataConverter?: DataConverter;
}

export async function createOrchestratorWorker(options: OrchestratorWorkerOptions): Promise<Worker> {
  return Worker.create({
    connection: options.connection,
    namespace: options.namespace,
    taskQueue: options.taskQueue ?? ORCHESTRATOR_TASK_QUEUE,
    activities: options.activities,
    // Payload codecs run outside the workflow sandbox, so the workflow bundle needs no change.
    ...(options.dataConverter ? { dataConverter: options.dataConverter } : {}),
    ...(options.workflowBundle ? { workflowBundle: options.workflowBundle } : { workflowsPath: require.resolve('../workflows') }),
  });
}

export async function runOrchestratorWorker(): Promise<void> {
  disableMetadataOffEc2();
  const config = loadConfig();
  const dataConverter = config.payloadKeyring ? encryptingDataConverter(config.payloadKeyring) : undefined;
  const connection = await NativeConnection.connect(temporalConnectionOptions(config.address));
  // A second, client-side connection lets the exportHistory activity read workflow histories.
  const clientConnection = await Connection.connect(temporalConnectionOptions(config.address));
  const activities = createOrchestratorActivities({
    store: createObjectStore(),
    registry: openRegistry(),
    resultsRoot: config.resultsRoot,
    temporal: new Client({ connection: clientConnection, namespace: config.namespace, dataConverter }),
  });
  const worker = await createOrchestratorWorker({
    connection,
    namespace: config.namespace,
    taskQueue: config.orchestratorTaskQueue,
    activities: { ...activities, ...createFleetActivities() },
    dataConverter,
  });
  const encryption = config.payloadKeyring ? `keyId=${config.payloadKeyring.encryptionKeyId}` : 'off';
  console.log(`${WORKER_READY_MARKER} orchestrator taskQueue=${config.orchestratorTaskQueue} address=${config.address} payloadEncryption=${encryption}`);
  try {
    await worker.run();
  } finally {
    await clientConnection.close();
    await connection.close();
  }
}

if (require.main === module) {
  runOrchestratorWorker().catch((err) => {
    console.error('Orchestrator worker failed:', err);
    process.exit(1);
  });
}
