/**
 * Model registry in a DynamoDB table, with artifacts in an object store (normally S3), for
 * deployments where workers on many hosts share one registry.
 *
 * Table schema: partition key `name` (S), sort key `version` (S). Each item contains one
 * ModelVersion, with `preprocess` and `labels` as JSON strings and the numbers as N.
 */

import {
  CreateTableCommand,
  DescribeTableCommand,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  ScanCommand,
  waitUntilTableExists,
  type AttributeValue,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';

import { sha256Hex } from '../storage/hash';
import type { ObjectStore } from '../storage/object-store';
import { joinUri, parseUri } from '../storage/uri';
import type { ModelVersion } from '../types';
import { ModelNotFound } from './errors';
import {
  buildModelVersion,
  compareModelVersions,
  compareWithExisting,
  pickLatest,
  registerVersion,
  validateModelName,
  validateModelVersion,
  validateRegisterRequest,
  type ModelRegistry,
  type PublishOutcome,
  type RegisterRequest,
  type RegisterResult,
} from './model-registry';

type Item = Record<string, AttributeValue>;

export interface DynamoRegistryOptions {
  client: DynamoDBClient;
  table: string;
  /** Store for the artifacts, which must handle the scheme of `artifactPrefix`. */
  store: ObjectStore;
  /** Folder for artifacts, e.g. `s3://bucket/models`. Each artifact goes to `<name>/<version>/<sha256>.onnx` below it. */
  artifactPrefix: string;
}

export class DynamoRegistry implements ModelRegistry {
  private readonly client: DynamoDBClient;
  private readonly table: string;
  private readonly store: ObjectStore;
  private readonly artifactPrefix: string;

  constructor(options: DynamoRegistryOptions) {
    parseUri(options.artifactPrefix);
    this.client = options.client;
    this.table = options.table;
    this.store = options.store;
    this.artifactPrefix = options.artifactPrefix;
  }

  async register(request: RegisterRequest): Promise<RegisterResult> {
    validateRegisterRequest(request);
    const sha256 = sha256Hex(request.bytes);
    return registerVersion(request, sha256, {
      publish: (version) => this.publish(request, version, sha256),
      versionLabels: () => this.versionLabels(request.name),
    });
  }

  async get(name: string, version?: string): Promise<ModelVersion> {
    validateModelName(name);
    if (version === undefined) {
      const latest = pickLatest(await this.list(name));
      if (latest === undefined) {
        throw new ModelNotFound(name, undefined, []);
      }
      return latest;
    }

    validateModelVersion(version);
    const record = await this.readRecord(name, version);
    if (record === undefined) {
      throw new ModelNotFound(name, version, await this.versionLabels(name));
    }
    return record;
  }

  async list(name?: string): Promise<ModelVersion[]> {
    const records: ModelVersion[] = [];
    if (name !== undefined) {
      validateModelName(name);
      for await (const item of this.queryVersions(name)) {
        records.push(fromItem(item));
      }
    } else {
      let startKey: Item | undefined;
      do {
        const page = await this.client.send(
          new ScanCommand({ TableName: this.table, ConsistentRead: true, ExclusiveStartKey: startKey }),
        );
        records.push(...(page.Items ?? []).map(fromItem));
        startKey = page.LastEvaluatedKey;
      } while (startKey !== undefined);
    }
    return records.sort(compareModelVersions);
  }

  async readArtifact(model: ModelVersion): Promise<Buffer> {
    return (await this.store.get(model.artifactUri)).body;
  }

  /**
   * Uploads the artifact, then creates the item only if the key is free. The artifact key
   * contains the sha256, so a losing concurrent register never overwrites the winner's bytes.
   */
  private async publish(request: RegisterRequest, version: string, sha256: string): Promise<PublishOutcome> {
    const existing = await this.readRecord(request.name, version);
    if (existing !== undefined) {
      return compareWithExisting(existing, sha256);
    }

    const artifactUri = joinUri(this.artifactPrefix, request.name, version, `${sha256}.onnx`);
    await this.store.put(artifactUri, request.bytes, {
      contentType: 'application/octet-stream',
      metadata: { 'model-name': request.name, 'model-version': version, sha256 },
    });

    const record = buildModelVersion(request, version, sha256, artifactUri);
    try {
      await this.client.send(
        new PutItemCommand({
          TableName: this.table,
          Item: toItem(record),
          ConditionExpression: 'attribute_not_exists(#n)',
          ExpressionAttributeNames: { '#n': 'name' },
        }),
      );
      return { result: { model: record, created: true } };
    } catch (error) {
      if ((error as Error).name !== 'ConditionalCheckFailedException') {
        throw error;
      }
    }

    const winner = await this.readRecord(request.name, version);
    if (winner === undefined) {
      throw new Error(
        `Model ${request.name}@${version}: the conditional write failed but no item exists in table ${this.table}.`,
      );
    }
    return compareWithExisting(winner, sha256);
  }

  private async readRecord(name: string, version: string): Promise<ModelVersion | undefined> {
    const response = await this.client.send(
      new GetItemCommand({ TableName: this.table, Key: { name: { S: name }, version: { S: version } }, ConsistentRead: true }),
    );
    return response.Item === undefined ? undefined : fromItem(response.Item);
  }

  private async versionLabels(name: string): Promise<string[]> {
    const labels: string[] = [];
    for await (const item of this.queryVersions(name, 'version')) {
      labels.push(readString(item, 'version'));
    }
    return labels;
  }

  private async *queryVersions(name: string, projection?: string): AsyncGenerator<Item> {
    let startKey: Item | undefined;
    do {
      const page = await this.client.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: '#n = :name',
          ExpressionAttributeNames: projection === undefined ? { '#n': 'name' } : { '#n': 'name', '#p': projection },
          ExpressionAttributeValues: { ':name': { S: name } },
          ProjectionExpression: projection === undefined ? undefined : '#p',
          ConsistentRead: true,
          ExclusiveStartKey: startKey,
        }),
      );
      yield* (page.Items ?? []);
      startKey = page.LastEvaluatedKey;
    } while (startKey !== undefined);
  }
}

/**
 * Creates the registry table with on-demand billing unless it exists, then waits until it is
 * ACTIVE. Safe to call from several processes at once.
 */
export async function ensureRegistryTable(client: DynamoDBClient, table: string, maxWaitSeconds = 300): Promise<void> {
  try {
    await client.send(new DescribeTableCommand({ TableName: table }));
  } catch (error) {
    if ((error as Error).name !== 'ResourceNotFoundException') {
      throw error;
    }
    try {
      await client.send(
        new CreateTableCommand({
          TableName: table,
          BillingMode: 'PAY_PER_REQUEST',
          AttributeDefinitions: [
            { AttributeName: 'name', AttributeType: 'S' },
            { AttributeName: 'version', AttributeType: 'S' },
          ],
          KeySchema: [
            { AttributeName: 'name', KeyType: 'HASH' },
            { AttributeName: 'version', KeyType: 'RANGE' },
          ],
        }),
      );
    } catch (createError) {
      // Another process created the table between DescribeTable and CreateTable.
      if ((createError as Error).name !== 'ResourceInUseException') {
        throw createError;
      }
    }
  }
  // The waiter succeeds only once DescribeTable reports TableStatus ACTIVE.
  await waitUntilTableExists({ client, maxWaitTime: maxWaitSeconds }, { TableName: table });
}

function toItem(model: ModelVersion): Item {
  return {
    name: { S: model.name },
    version: { S: model.version },
    task: { S: model.task },
    sha256: { S: model.sha256 },
    sizeBytes: { N: String(model.sizeBytes) },
    artifactUri: { S: model.artifactUri },
    preprocess: { S: JSON.stringify(model.preprocess) },
    labels: { S: JSON.stringify(model.labels) },
    threshold: { N: String(model.threshold) },
    createdAt: { S: model.createdAt },
    createdBy: { S: model.createdBy },
  };
}

function fromItem(item: Item): ModelVersion {
  return {
    name: readString(item, 'name'),
    version: readString(item, 'version'),
    task: readString(item, 'task') as ModelVersion['task'],
    sha256: readString(item, 'sha256'),
    sizeBytes: readNumber(item, 'sizeBytes'),
    artifactUri: readString(item, 'artifactUri'),
    preprocess: JSON.parse(readString(item, 'preprocess')) as ModelVersion['preprocess'],
    labels: JSON.parse(readString(item, 'labels')) as string[],
    threshold: readNumber(item, 'threshold'),
    createdAt: readString(item, 'createdAt'),
    createdBy: readString(item, 'createdBy'),
  };
}

function readString(item: Item, attribute: string): string {
  const value = item[attribute]?.S;
  if (value === undefined) {
    throw new Error(`Registry item ${describeItem(item)} has no string attribute ${attribute}.`);
  }
  return value;
}

function readNumber(item: Item, attribute: string): number {
  const value = item[attribute]?.N;
  if (value === undefined) {
    throw new Error(`Registry item ${describeItem(item)} has no number attribute ${attribute}.`);
  }
  return Number(value);
}

function describeItem(item: Item): string {
  return `${item.name?.S ?? '?'}@${item.version?.S ?? '?'}`;
}
