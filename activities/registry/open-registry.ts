/**
 * Picks the model registry from the environment: DynamoDB plus an object store when
 * SKYNEWT_REGISTRY_TABLE is set, otherwise a local folder.
 */

import * as path from 'node:path';

import { DynamoDBClient } from '@aws-sdk/client-dynamodb';

import type { ObjectStore } from '../storage/object-store';
import { createObjectStore } from '../storage/stores';
import { parseUri } from '../storage/uri';
import { skynewtHome } from '../local-home';
import { DynamoRegistry } from './dynamo-registry';
import { LocalRegistry } from './local-registry';
import type { ModelRegistry } from './model-registry';

export interface OpenRegistryDeps {
  /** Client for the registry table. The default client uses AWS_REGION, or us-east-1 when it is unset. */
  dynamo?: DynamoDBClient;
  /** Store for artifacts, by default createObjectStore(). */
  store?: ObjectStore;
}

/**
 * Opens the registry that the environment selects:
 * - SKYNEWT_REGISTRY_TABLE set: a DynamoRegistry on that table, with artifacts under
 *   SKYNEWT_ARTIFACT_URI, which is then required.
 * - otherwise: a LocalRegistry in SKYNEWT_REGISTRY_DIR, or in `<SKYNEWT_HOME or .skynewt>/registry`,
 *   resolved against the current folder.
 */
export function openRegistry(env: NodeJS.ProcessEnv = process.env, deps: OpenRegistryDeps = {}): ModelRegistry {
  const table = env.SKYNEWT_REGISTRY_TABLE;
  if (table) {
    const artifactPrefix = env.SKYNEWT_ARTIFACT_URI;
    if (!artifactPrefix) {
      throw new Error(
        `SKYNEWT_ARTIFACT_URI is missing: it is required when SKYNEWT_REGISTRY_TABLE is set (${table}). ` +
          `Set it to the folder for model artifacts, e.g. s3://my-bucket/models.`,
      );
    }
    try {
      parseUri(artifactPrefix);
    } catch (error) {
      throw new Error(`Invalid SKYNEWT_ARTIFACT_URI: ${(error as Error).message}`, { cause: error });
    }
    return new DynamoRegistry({
      client: deps.dynamo ?? new DynamoDBClient({ region: env.AWS_REGION || 'us-east-1' }),
      table,
      store: deps.store ?? createObjectStore(),
      artifactPrefix,
    });
  }

  const folder = env.SKYNEWT_REGISTRY_DIR || path.join(skynewtHome(env), 'registry');
  return new LocalRegistry(path.resolve(folder));
}
