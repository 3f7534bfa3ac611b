/**
 * Model registry in a DynamoDB table, with artifacts in an object store (normally S3), for
 * deployments where workers on many hosts share one registry.
 *
 * Table schema: partition key `name` (S), sort key `version` (S). Each version item contains one
 * ModelVersion, with `preprocess` and `labels` as JSON strings, the numbers as N and any
 * `executionProviders` as a list (L) of S.
 *
 * Aliases share the partition of their model under sort keys that start with `#`, which no
 * version label can:
 * - `#alias#<alias>`: the current pointer, a Promotion plus a `revision` counter that every
 *   promote increments with a conditional write. A promote that read an older revision fails that write and
 *   retries, so each promotion's previousVersion is the pointer it replaced.
 * - `#history#<ISO time>#<alias>#<revision>`: one item per promotion, never updated.
 * Version queries skip both kinds (see VERSION_KEY_FLOOR and the scan filter in `list`).
 */

import {
  CreateTableCommand,
  DescribeTableCommand,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  ScanCommand,
  TransactWriteItemsCommand,
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
  checkAliasIsNotVersion,
  checkVersionIsNotAlias,
  compareModelVersions,
  compareWithExisting,
  registerVersion,
  resolveReference,
  validateModelName,
  validateModelAlias,
  validatePromoteRequest,
  validateRegisterRequest,
  type ModelRegistry,
  type PromoteOptions,
  type Promotion,
  type PublishOutcome,
  type ReferenceReader,
  type RegisterRequest,
  type RegisterResult,
  type ResolvedModelReference,
} from './model-registry';

type Item = Record<string, AttributeValue>;

const ALIAS_KEY_PREFIX = '#alias#';
const HISTORY_KEY_PREFIX = '#history#';
/**
 * Lower bound on version sort keys. Version labels start with a letter or digit, and `0` is the
 * smallest of those, while alias and history keys start with `#`, which sorts before `0`.
 */
const VERSION_KEY_FLOOR = '0';
/** Attempts of a promote whose conditional write lost to a concurrent promote of the same alias. */
const PROMOTE_ATTEMPTS = 5;

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
    await checkVersionIsNotAlias(request, (name, alias) => this.readAliasTarget(name, alias));
    const sha256 = sha256Hex(request.bytes);
    return registerVersion(request, sha256, {
      publish: (version) => this.publish(request, version, sha256),
      versionLabels: () => this.versionLabels(request.name),
    });
  }

  async get(name: string, versionOrAlias?: string): Promise<ModelVersion> {
    return (await this.resolve(name, versionOrAlias)).model;
  }

  async resolve(name: string, versionOrAlias?: string): Promise<ResolvedModelReference> {
    return resolveReference(name, versionOrAlias, this.reader);
  }

  /**
   * Moves the alias in one transaction: the version item must exist, the pointer is written only
   * if its revision is still the one read, and the history item is created. A transaction that
   * loses to a concurrent promote is retried with the new revision.
   */
  async promote(name: string, version: string, alias: string, options: PromoteOptions): Promise<Promotion> {
    validatePromoteRequest(name, version, alias, options);
    checkAliasIsNotVersion(name, alias, await this.readRecord(name, alias));

    for (let attempt = 1; attempt <= PROMOTE_ATTEMPTS; attempt++) {
      if ((await this.readRecord(name, version)) === undefined) {
        throw new ModelNotFound(name, version, await this.versionLabels(name));
      }
      const current = await this.readAliasItem(name, alias);
      const revision = current === undefined ? 0 : readNumber(current, 'revision');
      const promotion: Promotion = {
        name,
        alias,
        version,
        previousVersion: current === undefined ? null : readString(current, 'targetVersion'),
        reason: options.reason,
        by: options.by,
        at: new Date().toISOString(),
      };
      const historyKey = `${HISTORY_KEY_PREFIX}${promotion.at}#${alias}#${String(revision + 1).padStart(10, '0')}`;
      try {
        await this.client.send(
          new TransactWriteItemsCommand({
            TransactItems: [
              {
                ConditionCheck: {
                  TableName: this.table,
                  Key: { name: { S: name }, version: { S: version } },
                  ConditionExpression: 'attribute_exists(#n)',
                  ExpressionAttributeNames: { '#n': 'name' },
                },
              },
              {
                Put: {
                  TableName: this.table,
                  Item: { ...promotionToItem(promotion, `${ALIAS_KEY_PREFIX}${alias}`), revision: { N: String(revision + 1) } },
                  ...(current === undefined
                    ? { ConditionExpression: 'attribute_not_exists(#n)', ExpressionAttributeNames: { '#n': 'name' } }
                    : {
                        ConditionExpression: '#r = :revision',
                        ExpressionAttributeNames: { '#r': 'revision' },
                        ExpressionAttributeValues: { ':revision': { N: String(revision) } },
                      }),
                },
              },
              {
                Put: {
                  TableName: this.table,
                  Item: promotionToItem(promotion, historyKey),
                  ConditionExpression: 'attribute_not_exists(#n)',
                  ExpressionAttributeNames: { '#n': 'name' },
                },
              },
            ],
          }),
        );
        return promotion;
      } catch (error) {
        if ((error as Error).name !== 'TransactionCanceledException') {
          throw error;
        }
      }
    }
    throw new Error(
      `Promotion of ${name}@${version} to ${alias} failed after ${PROMOTE_ATTEMPTS} attempts because concurrent promotes of the alias kept winning. Try again.`,
    );
  }

  async aliases(name: string): Promise<Promotion[]> {
    validateModelName(name);
    const pointers: Promotion[] = [];
    for await (const item of this.queryPrefix(name, ALIAS_KEY_PREFIX)) {
      pointers.push(promotionFromItem(item));
    }
    return pointers.sort((a, b) => a.alias.localeCompare(b.alias, 'en'));
  }

  async history(name: string): Promise<Promotion[]> {
    validateModelName(name);
    const promotions: Promotion[] = [];
    for await (const item of this.queryPrefix(name, HISTORY_KEY_PREFIX)) {
      promotions.push(promotionFromItem(item));
    }
    return promotions;
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
          new ScanCommand({
            TableName: this.table,
            ConsistentRead: true,
            ExclusiveStartKey: startKey,
            FilterExpression: '#v >= :floor',
            ExpressionAttributeNames: { '#v': 'version' },
            ExpressionAttributeValues: { ':floor': { S: VERSION_KEY_FLOOR } },
          }),
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

  private async readAliasItem(name: string, alias: string): Promise<Item | undefined> {
    const response = await this.client.send(
      new GetItemCommand({ TableName: this.table, Key: { name: { S: name }, version: { S: `${ALIAS_KEY_PREFIX}${alias}` } }, ConsistentRead: true }),
    );
    return response.Item;
  }

  private async readAliasTarget(name: string, alias: string): Promise<string | undefined> {
    validateModelAlias(alias);
    const item = await this.readAliasItem(name, alias);
    return item === undefined ? undefined : readString(item, 'targetVersion');
  }

  private readonly reader: ReferenceReader = {
    readRecord: (name, version) => this.readRecord(name, version),
    readAliasTarget: (name, alias) => this.readAliasTarget(name, alias),
    list: (name) => this.list(name),
    versionLabels: (name) => this.versionLabels(name),
  };

  /** Yields the items of the model whose sort key starts with `prefix`, in sort key order. */
  private async *queryPrefix(name: string, prefix: string): AsyncGenerator<Item> {
    let startKey: Item | undefined;
    do {
      const page = await this.client.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: '#n = :name AND begins_with(#v, :prefix)',
          ExpressionAttributeNames: { '#n': 'name', '#v': 'version' },
          ExpressionAttributeValues: { ':name': { S: name }, ':prefix': { S: prefix } },
          ConsistentRead: true,
          ExclusiveStartKey: startKey,
        }),
      );
      yield* (page.Items ?? []);
      startKey = page.LastEvaluatedKey;
    } while (startKey !== undefined);
  }

  private async *queryVersions(name: string, projection?: string): AsyncGenerator<Item> {
    let startKey: Item | undefined;
    do {
      const page = await this.client.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: '#n = :name AND #v >= :floor',
          ExpressionAttributeNames: { '#n': 'name', '#v': 'version', ...(projection === undefined ? {} : { '#p': projection }) },
          ExpressionAttributeValues: { ':name': { S: name }, ':floor': { S: VERSION_KEY_FLOOR } },
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
    ...(model.executionProviders ? { executionProviders: { L: model.executionProviders.map((name) => ({ S: name })) } } : {}),
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
    ...(item.executionProviders?.L ? { executionProviders: item.executionProviders.L.map((entry) => entry.S ?? '') } : {}),
    createdAt: readString(item, 'createdAt'),
    createdBy: readString(item, 'createdBy'),
  };
}

/** Stores a promotion under `sortKey`; the promoted version goes to `targetVersion` because `version` is the sort key. */
function promotionToItem(promotion: Promotion, sortKey: string): Item {
  return {
    name: { S: promotion.name },
    version: { S: sortKey },
    alias: { S: promotion.alias },
    targetVersion: { S: promotion.version },
    ...(promotion.previousVersion === null ? {} : { previousVersion: { S: promotion.previousVersion } }),
    reason: { S: promotion.reason },
    by: { S: promotion.by },
    at: { S: promotion.at },
  };
}

function promotionFromItem(item: Item): Promotion {
  return {
    name: readString(item, 'name'),
    alias: readString(item, 'alias'),
    version: readString(item, 'targetVersion'),
    previousVersion: item.previousVersion?.S ?? null,
    reason: readString(item, 'reason'),
    by: readString(item, 'by'),
    at: readString(item, 'at'),
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
