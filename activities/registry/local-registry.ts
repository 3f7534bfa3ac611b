/**
 * Model registry in a local folder, for development and single-host runs. Each version lives in
 * `<root>/<name>/<version>/` as `model.onnx` plus `model.json`, the ModelVersion record whose
 * artifactUri is the `file://` URI of model.onnx.
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
  compareModelVersions,
  compareWithExisting,
  MODEL_NAME_PATTERN,
  MODEL_VERSION_PATTERN,
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

const ARTIFACT_FILE = 'model.onnx';
const RECORD_FILE = 'model.json';
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
