/**
 * Activities of the orchestrator worker (task queue `skynewt-orchestrator`): they touch storage
 * and the registry but never load a model into memory for inference.
 */
import type { Client } from '@temporalio/client';
import { createExportHistory } from './audit/export-history';
import type { ModelRegistry } from './registry/model-registry';
import type { ObjectStore } from './storage/object-store';
import { createListInputs } from './list-inputs';
import { createRecordFailedShard } from './record-failed-shard';
import { createResolveModel } from './resolve-model';
import { createWriteManifest } from './write-manifest';

export interface OrchestratorDeps {
  store: ObjectStore;
  registry: ModelRegistry;
  /** Output root used when a batch gives no `output`, as a URI. */
  resultsRoot: string;
  /**
   * Client of the Temporal service the worker polls, used to export each batch's workflow
   * history next to its manifest. Without it no history is exported and the manifest names none.
   */
  temporal?: Client;
}

export function createOrchestratorActivities(deps: OrchestratorDeps) {
  return {
    resolveModel: createResolveModel(deps),
    listInputs: createListInputs(deps),
    writeManifest: createWriteManifest({ store: deps.store, exportsHistory: deps.temporal !== undefined }),
    exportHistory: createExportHistory(deps),
    recordFailedShard: createRecordFailedShard(deps),
  };
}

export type OrchestratorActivities = ReturnType<typeof createOrchestratorActivities>;
