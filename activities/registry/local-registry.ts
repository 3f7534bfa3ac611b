/**
 * Model registry in a local folder, for development and single-host runs. Each version lives in
 * `<root>/<name>/<version>/` as `model.onnx` plus `model.json`, the ModelVersion record whose
 * artifactUri is the `file://` URI of model.onnx. Alias promotions are appended, one JSON
 * Promotion per line, to `<root>/<name>/promotions.jsonl`; the last line for an alias is its
 * current pointer.
 */

import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { FileStore } from '../storage/file-store';
import { sha256Hex } from '../storage/hash';
import { toFileUri } from '../storage/uri';
import type { ModelVersion } from '../types';
import { ModelNotFound } from './errors';
import {
  buildModelVersion,
  checkAliasIsNotVersion,
  checkVersionIsNotAlias,
  compareModelVersions,
  compareWithExisting,
  MODEL_NAME_PATTERN,
  MODEL_VERSION_PATTERN,
  registerVersion,
  resolveReference,
  validateModelName,
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

const ARTIFACT_FILE = 'model.onnx';
const RECORD_FILE = 'model.json';
const PROMOTIONS_FILE = 'promotions.jsonl';
/** Prefix of the folders where a version is assembled. Versions cannot start with `.`, so it never matches one. */
const STAGING_PREFIX = '.staging-';

export class LocalRegistry implements ModelRegistry {
  /** Absolute path of the registry folder. */
  readonly root: string;
  private readonly files = new FileStore();

  constructor(root: string) {
    this.root = path.resolve(root);
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
   * Appends the promotion to `promotions.jsonl` with one append-mode write, then flushes it.
   * NOTE: two concurrent promotes of one alias on the same folder may both record the same
   * previousVersion, because the file is read and appended without a lock. The DynamoDB
   * registry serializes them with a conditional write.
   */
  async promote(name: string, version: string, alias: string, options: PromoteOptions): Promise<Promotion> {
    validatePromoteRequest(name, version, alias, options);
    checkAliasIsNotVersion(name, alias, await this.readRecord(name, alias));
    if ((await this.readRecord(name, version)) === undefined) {
      throw new ModelNotFound(name, version, await this.versionLabels(name));
    }

    const current = (await this.aliases(name)).find((pointer) => pointer.alias === alias);
    const promotion: Promotion = {
      name,
      alias,
      version,
      previousVersion: current?.version ?? null,
      reason: options.reason,
      by: options.by,
      at: new Date().toISOString(),
    };
    const handle = await fs.open(path.join(this.root, name, PROMOTIONS_FILE), 'a');
    try {
      await handle.write(`${JSON.stringify(promotion)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    return promotion;
  }

  async aliases(name: string): Promise<Promotion[]> {
    const current = new Map<string, Promotion>();
    for (const promotion of await this.history(name)) {
      current.set(promotion.alias, promotion);
    }
    return [...current.values()].sort((a, b) => a.alias.localeCompare(b.alias, 'en'));
  }

  async history(name: string): Promise<Promotion[]> {
    validateModelName(name);
    const file = path.join(this.root, name, PROMOTIONS_FILE);
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        return [];
      }
      throw error;
    }
    // A crash during an append can leave a partial last line without its newline; it is skipped.
    const lines = text.split('\n');
    if (!text.endsWith('\n')) {
      lines.pop();
    }
    return lines
      .filter((line) => line.trim() !== '')
      .map((line, number) => {
        try {
          return JSON.parse(line) as Promotion;
        } catch (error) {
          throw new Error(`Promotion history ${file} line ${number + 1} is not valid JSON: ${(error as Error).message}`, { cause: error });
        }
      });
  }

  async list(name?: string): Promise<ModelVersion[]> {
    if (name !== undefined) {
      validateModelName(name);
    }
    const names = name === undefined ? await this.subfolders(this.root, MODEL_NAME_PATTERN) : [name];

    const records: ModelVersion[] = [];
    for (const modelName of names) {
      for (const version of await this.subfolders(path.join(this.root, modelName), MODEL_VERSION_PATTERN)) {
        const record = await this.readRecord(modelName, version);
        if (record !== undefined) {
          records.push(record);
        }
      }
    }
    return records.sort(compareModelVersions);
  }

  async readArtifact(model: ModelVersion): Promise<Buffer> {
    return (await this.files.get(model.artifactUri)).body;
  }

  /**
   * Creates `<name>/<version>/` unless it exists. Both files are written to a staging folder
   * (model.onnx first, then model.json) and the folder is renamed into place. Renaming onto a
   * non-empty folder fails, so exactly one of several concurrent registers wins, and readers
   * never see a version folder without its record.
   */
  private async publish(request: RegisterRequest, version: string, sha256: string): Promise<PublishOutcome> {
    const existing = await this.readRecord(request.name, version);
    if (existing !== undefined) {
      return compareWithExisting(existing, sha256);
    }

    const modelFolder = path.join(this.root, request.name);
    const versionFolder = path.join(modelFolder, version);
    await fs.mkdir(modelFolder, { recursive: true });
    const staging = await fs.mkdtemp(path.join(modelFolder, STAGING_PREFIX));
    try {
      const record = buildModelVersion(request, version, sha256, toFileUri(path.join(versionFolder, ARTIFACT_FILE)));
      await writeDurably(path.join(staging, ARTIFACT_FILE), request.bytes);
      await writeDurably(path.join(staging, RECORD_FILE), `${JSON.stringify(record, null, 2)}\n`);
      try {
        await fs.rename(staging, versionFolder);
        return { result: { model: record, created: true } };
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== 'EEXIST' && code !== 'ENOTEMPTY') {
          throw error;
        }
      }
    } finally {
      await fs.rm(staging, { recursive: true, force: true });
    }

    const winner = await this.readRecord(request.name, version);
    if (winner === undefined) {
      throw new Error(
        `Model ${request.name}@${version}: folder ${versionFolder} exists but has no ${RECORD_FILE}; ` +
          `remove the folder or register another version.`,
      );
    }
    return compareWithExisting(winner, sha256);
  }

  private async readRecord(name: string, version: string): Promise<ModelVersion | undefined> {
    const recordPath = path.join(this.root, name, version, RECORD_FILE);
    let text: string;
    try {
      text = await fs.readFile(recordPath, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        return undefined;
      }
      throw error;
    }
    try {
      return JSON.parse(text) as ModelVersion;
    } catch (error) {
      throw new Error(`Model record ${recordPath} is not valid JSON: ${(error as Error).message}`, { cause: error });
    }
  }

  private async versionLabels(name: string): Promise<string[]> {
    return (await this.list(name)).map((record) => record.version);
  }

  private async readAliasTarget(name: string, alias: string): Promise<string | undefined> {
    return (await this.aliases(name)).find((pointer) => pointer.alias === alias)?.version;
  }

  private readonly reader: ReferenceReader = {
    readRecord: (name, version) => this.readRecord(name, version),
    readAliasTarget: (name, alias) => this.readAliasTarget(name, alias),
    list: (name) => this.list(name),
    versionLabels: (name) => this.versionLabels(name),
  };

  /** Returns the names of the subfolders that match `pattern`, which skips staging folders. */
  private async subfolders(folder: string, pattern: RegExp): Promise<string[]> {
    try {
      const entries = await fs.readdir(folder, { withFileTypes: true });
      return entries.filter((entry) => entry.isDirectory() && pattern.test(entry.name)).map((entry) => entry.name);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        return [];
      }
      throw error;
    }
  }
}

/** Writes a new file and flushes it to disk before the caller publishes it with a rename. */
async function writeDurably(filePath: string, data: Buffer | string): Promise<void> {
  const handle = await fs.open(filePath, 'wx');
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}
