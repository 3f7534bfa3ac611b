/**
 * A private local stack for benchmarks: a headless dev server on free ports of 127.0.0.1, an
 * orchestrator worker (exporting each batch's history, as the real one does) and an inference
 * worker in this process, and a client. Each benchmark run gets its own server, so runs cannot
 * see each other's history or task queues.
 */
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { capacityFromEnv } from '../activities/capacity';
import { hostExecutionProviders } from '../activities/inference/execution-providers';
import { ModelRunner } from '../activities/inference/model-runner';
import { createOrchestratorActivities } from '../activities/orchestrator-activities';
import type { LocalRegistry } from '../activities/registry/local-registry';
import { createObjectStore } from '../activities/storage/stores';
import { toFileUri } from '../activities/storage/uri';
import { SkyNewtClient } from '../client/skynewt-client';
import { startDevServer } from '../infra/local/dev-server';
import { findFreePort } from '../infra/local/ports';
import { createInferenceWorker, type InferenceWorkerOptions } from '../workers/inference';
import { createOrchestratorWorker } from '../workers/orchestrator';

export interface PrivateStackOptions {
  /** Folder for the server log and the batch results. */
  scratch: string;
  /** Distinguishes the log and results folders of several stacks in one scratch folder. */
  name: string;
  registry: LocalRegistry;
  intraOpThreads: number;
  /** onnxruntime execution providers for every model; the host's when absent. */
  executionProviders?: string[];
  /** Inference worker settings beyond the defaults: concurrency, prefetch, batching, trace, models. */
  inference: Pick<InferenceWorkerOptions, 'shardConcurrency' | 'prewarmModels'> &
    Partial<Pick<InferenceWorkerOptions, 'prefetchDepth' | 'inferenceBatch' | 'trace'>>;
}

export interface PrivateStack {
  client: SkyNewtClient;
  runner: ModelRunner;
  /** Stops the workers, then closes the connections and stops the server by its PID. */
  stop(): Promise<void>;
}

export async function startPrivateStack(options: PrivateStackOptions): Promise<PrivateStack> {
  const server = await startDevServer({
    grpcPort: await findFreePort(),
    uiPort: await findFreePort(),
    headless: true,
    logFile: path.join(options.scratch, `${options.name}-temporal.log`),
  });
  const nativeConnection = await NativeConnection.connect({ address: server.address });
  const connection = await Connection.connect({ address: server.address });
  const runner = await ModelRunner.start({ intraOpThreads: options.intraOpThreads, executionProviders: options.executionProviders, hostExecutionProviders: hostExecutionProviders() });
  const store = createObjectStore();
  const temporal = new Client({ connection });

  const orchestrator = await createOrchestratorWorker({
    connection: nativeConnection,
    namespace: 'default',
    activities: createOrchestratorActivities({
      store,
      registry: options.registry,
      resultsRoot: toFileUri(path.join(options.scratch, `${options.name}-results`)),
      temporal,
    }),
  });
  const inference = await createInferenceWorker({
    connection: nativeConnection,
    namespace: 'default',
    store,
    registry: options.registry,
    runner,
    capacity: capacityFromEnv({}),
    ...options.inference,
  });
  const running = [orchestrator.run(), inference.run()];
  const client = new SkyNewtClient({ client: temporal, store });

  return {
    client,
    runner,
    async stop() {
      orchestrator.shutdown();
      inference.shutdown();
      await Promise.all(running);
      await runner.close();
      await connection.close();
      await nativeConnection.close();
      await server.stop();
    },
  };
}
