/**
 * The model registry contract and the rules that every implementation shares: name and version
 * syntax, request validation, the register flow with default version numbers, and latest-version
 * resolution.
 */

import type { ModelTask, ModelVersion, PreprocessSpec } from '../types';
import { InvalidModelName, InvalidModelSpec, ModelAliasConflict, ModelNotFound, ModelVersionConflict, ModelSettingsConflict } from './errors';

export interface RegisterRequest {
  name: string;
  /** Version label. When omitted, the next integer after the highest all-digit version. */
  version?: string;
  task: ModelTask;
  /** The ONNX file's bytes. */
  bytes: Buffer;
  preprocess: PreprocessSpec;
  labels: string[];
  threshold: number;
  /** Default execution providers for the model, in order of preference; absent for the host's. */
  executionProviders?: string[];
  createdBy: string;
}

export interface RegisterResult {
  model: ModelVersion;
  /** False when the same bytes were already registered under this name and version. */
  created: boolean;
}

export interface ModelRegistry {
  /**
   * Registers an immutable model version. Registering the same name, version and sha256 again
   * returns the stored record with `created: false`, even when the other fields differ. Other
   * bytes under an existing version reject with ModelVersionConflict.
   */
  register(request: RegisterRequest): Promise<RegisterResult>;
  /**
   * Returns one version, given its label or an alias that points at it, or the latest by
   * createdAt when `versionOrAlias` is omitted. Rejects with ModelNotFound.
   */
  get(name: string, versionOrAlias?: string): Promise<ModelVersion>;
  /** Same lookup as `get`, and also returns the alias when `versionOrAlias` was one. */
  resolve(name: string, versionOrAlias?: string): Promise<ResolvedModelReference>;
  /** Lists versions of one model, or of all models, sorted by name, then createdAt, then version. */
  list(name?: string): Promise<ModelVersion[]>;
  /**
   * Reads the ONNX bytes from `model.artifactUri`. A missing artifact rejects with the store's
   * `NotFound` error. The bytes are not checked against `model.sha256`, so callers must do that.
   */
  readArtifact(model: ModelVersion): Promise<Buffer>;
  /**
   * Points `alias` at an existing version and appends the promotion to the model's history.
   * Rejects with ModelNotFound for an unknown version, and with ModelAliasConflict when the
   * alias is also a version label of the model.
   */
  promote(name: string, version: string, alias: string, options: PromoteOptions): Promise<Promotion>;
  /** Returns the current pointer of every alias of the model, sorted by alias. */
  aliases(name: string): Promise<Promotion[]>;
  /** Returns every promotion of the model's aliases, oldest first. */
  history(name: string): Promise<Promotion[]>;
}

export interface PromoteOptions {
  /** Reason for the promotion, e.g. a ticket or an evaluation result. */
  reason: string;
  /** User or service that promotes, e.g. `alice@build-host`. */
  by: string;
}

/** One move of an alias; the latest promotion of an alias is its current pointer. */
export interface Promotion {
  name: string;
  alias: string;
  version: string;
  /** Version the alias pointed at before this promotion, or null when the alias was new. */
  previousVersion: string | null;
  reason: string;
  by: string;
  /** ISO 8601 UTC time of the promotion. */
  at: string;
}

export interface ResolvedModelReference {
  model: ModelVersion;
  /** The alias that the reference named, when it named one instead of a version label. */
  alias?: string;
}

export const MODEL_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const MODEL_VERSION_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/**
 * Alias names start with a lowercase letter, so an alias never equals an auto-numbered version.
 * Every alias also matches MODEL_VERSION_PATTERN, which lets `name@alias` parse like `name@version`.
 */
export const MODEL_ALIAS_PATTERN = /^[a-z][a-z0-9_-]{0,63}$/;

/** Attempts of an auto-numbered register when concurrent registers keep taking the number. */
const AUTO_VERSION_ATTEMPTS = 5;

/** Either the outcome of a register, or the existing record of the version when its bytes differ. */
export type PublishOutcome = { result: RegisterResult } | { conflict: ModelVersion };

/** Storage steps that registerVersion needs from a registry implementation. */
export interface VersionPublisher {
  /** Stores the version unless it exists, atomically with respect to concurrent publishers. */
  publish(version: string): Promise<PublishOutcome>;
  /** Returns the versions registered under the request's model name. */
  versionLabels(): Promise<string[]>;
}

/**
 * Registers the request's version, or the next free number when the request names none. A
 * conflict on an explicit version rejects with ModelVersionConflict. A conflict on a picked
 * number means a concurrent register took it, so the next number is tried.
 */
export async function registerVersion(request: RegisterRequest, sha256: string, publisher: VersionPublisher): Promise<RegisterResult> {
  if (request.version !== undefined) {
    const outcome = await publisher.publish(request.version);
    if ('conflict' in outcome) {
      throw new ModelVersionConflict(request.name, request.version, outcome.conflict.sha256, sha256);
    }
    const changed = changedSettings(outcome.result.model, request);
    if (!outcome.result.created && changed.length > 0) {
      throw new ModelSettingsConflict(request.name, request.version, changed);
    }
    return outcome.result;
  }

  for (let attempt = 1; attempt <= AUTO_VERSION_ATTEMPTS; attempt++) {
    const outcome = await publisher.publish(nextVersion(await publisher.versionLabels()));
    if ('result' in outcome) {
      return outcome.result;
    }
  }
  throw new Error(
    `Model ${request.name}: could not pick a version number after ${AUTO_VERSION_ATTEMPTS} attempts ` +
      `because concurrent registers kept taking it. Pass an explicit version.`,
  );
}

/**
 * Names the settings of a register request that differ from the stored version. A version is
 * immutable as a whole: the same bytes with another threshold would give other results.
 */
export function changedSettings(existing: ModelVersion, request: RegisterRequest): string[] {
  const changed: string[] = [];
  if (existing.task !== request.task) changed.push(`task ${existing.task} → ${request.task}`);
  if (JSON.stringify(existing.preprocess) !== JSON.stringify(request.preprocess)) changed.push('preprocessing (input size, mean or std)');
  if (JSON.stringify(existing.labels) !== JSON.stringify(request.labels)) changed.push('labels');
  if (existing.threshold !== request.threshold) changed.push(`threshold ${existing.threshold} → ${request.threshold}`);
  const providers = (list: string[] | undefined) => list?.join(',') ?? "the host's";
  if (providers(existing.executionProviders) !== providers(request.executionProviders)) {
    changed.push(`execution providers ${providers(existing.executionProviders)} → ${providers(request.executionProviders)}`);
  }
  return changed;
}

/** Returns the existing record as an idempotent result when its sha256 matches, else as a conflict. */
export function compareWithExisting(existing: ModelVersion, sha256: string): PublishOutcome {
  if (existing.sha256 === sha256) {
    return { result: { model: existing, created: false } };
  }
  return { conflict: existing };
}

export function validateModelName(name: string): void {
  if (typeof name !== 'string' || !MODEL_NAME_PATTERN.test(name)) {
    throw new InvalidModelName('name', String(name), MODEL_NAME_PATTERN);
  }
}

export function validateModelVersion(version: string): void {
  if (typeof version !== 'string' || !MODEL_VERSION_PATTERN.test(version)) {
    throw new InvalidModelName('version', String(version), MODEL_VERSION_PATTERN);
  }
}

export function validateModelAlias(alias: string): void {
  if (typeof alias !== 'string' || !MODEL_ALIAS_PATTERN.test(alias)) {
    throw new InvalidModelName('alias', String(alias), MODEL_ALIAS_PATTERN);
  }
}

/** Checks the arguments of `promote` before any storage is read. */
export function validatePromoteRequest(name: string, version: string, alias: string, options: PromoteOptions): void {
  validateModelName(name);
  validateModelVersion(version);
  validateModelAlias(alias);
  if (typeof options?.reason !== 'string' || options.reason.trim() === '') {
    throw new InvalidModelSpec(`Promotion of ${name}@${version} to ${alias}: the reason is missing. Say why the alias moves.`);
  }
  if (typeof options.by !== 'string' || options.by.trim() === '') {
    throw new InvalidModelSpec(`Promotion of ${name}@${version} to ${alias}: the user is missing. Pass the user or service that promotes.`);
  }
}

/** Storage reads that resolveReference needs from a registry implementation. */
export interface ReferenceReader {
  readRecord(name: string, version: string): Promise<ModelVersion | undefined>;
  /** Returns the version an alias points at, or undefined when the alias does not exist. */
  readAliasTarget(name: string, alias: string): Promise<string | undefined>;
  list(name: string): Promise<ModelVersion[]>;
  versionLabels(name: string): Promise<string[]>;
}

/**
 * Resolves `versionOrAlias` to a stored version: a version label first, then an alias, or the
 * latest version when it is omitted. Versions and aliases of one model never share a name
 * because promote and register reject the collision, so the order only matters for data
 * written outside those methods.
 */
export async function resolveReference(name: string, versionOrAlias: string | undefined, reader: ReferenceReader): Promise<ResolvedModelReference> {
  validateModelName(name);
  if (versionOrAlias === undefined) {
    const latest = pickLatest(await reader.list(name));
    if (latest === undefined) {
      throw new ModelNotFound(name, undefined, []);
    }
    return { model: latest };
  }

  validateModelVersion(versionOrAlias);
  const record = await reader.readRecord(name, versionOrAlias);
  if (record !== undefined) {
    return { model: record };
  }
  if (MODEL_ALIAS_PATTERN.test(versionOrAlias)) {
    const target = await reader.readAliasTarget(name, versionOrAlias);
    if (target !== undefined) {
      const pointed = await reader.readRecord(name, target);
      if (pointed === undefined) {
        throw new ModelNotFound(name, target, await reader.versionLabels(name));
      }
      return { model: pointed, alias: versionOrAlias };
    }
  }
  throw new ModelNotFound(name, versionOrAlias, await reader.versionLabels(name));
}

/** Rejects a register request whose explicit version is already an alias of the model. */
export async function checkVersionIsNotAlias(request: RegisterRequest, readAliasTarget: ReferenceReader['readAliasTarget']): Promise<void> {
  if (request.version === undefined || !MODEL_ALIAS_PATTERN.test(request.version)) {
    return;
  }
  const target = await readAliasTarget(request.name, request.version);
  if (target !== undefined) {
    throw new ModelAliasConflict(
      `Cannot register ${request.name}@${request.version}: ${request.version} is an alias of ${request.name} (pointing at ${target}). Choose another --version.`,
    );
  }
}

/** Rejects an alias that is also a version label, because `name@label` would then be ambiguous. */
export function checkAliasIsNotVersion(name: string, alias: string, existing: ModelVersion | undefined): void {
  if (existing !== undefined) {
    throw new ModelAliasConflict(
      `Cannot use ${alias} as an alias of ${name}: ${name}@${alias} is a registered version. Choose another alias name.`,
    );
  }
}

/** Checks everything in a register request except the version, which may still be unassigned. */
export function validateRegisterRequest(request: RegisterRequest): void {
  validateModelName(request.name);
  if (request.version !== undefined) {
    validateModelVersion(request.version);
  }

  const reference = `Model ${request.name}`;
  if (request.task !== 'segmentation' && request.task !== 'classification') {
    throw new InvalidModelSpec(`${reference}: invalid task ${JSON.stringify(request.task)}. Expected segmentation or classification.`);
  }
  if (!Buffer.isBuffer(request.bytes) || request.bytes.length === 0) {
    throw new InvalidModelSpec(`${reference}: the ONNX file is empty.`);
  }

  const { width, height, mean, std } = request.preprocess ?? {};
  for (const [field, value] of [['width', width], ['height', height]] as const) {
    if (!Number.isInteger(value) || (value as number) <= 0) {
      throw new InvalidModelSpec(`${reference}: invalid preprocess.${field} ${JSON.stringify(value)}. Expected a positive integer of pixels.`);
    }
  }
  if (!isTriple(mean)) {
    throw new InvalidModelSpec(`${reference}: invalid preprocess.mean ${JSON.stringify(mean)}. Expected three finite numbers in RGB order.`);
  }
  if (!isTriple(std) || std.some((value) => value <= 0)) {
    throw new InvalidModelSpec(`${reference}: invalid preprocess.std ${JSON.stringify(std)}. Expected three positive numbers in RGB order.`);
  }

  if (!Array.isArray(request.labels) || request.labels.some((label) => typeof label !== 'string')) {
    throw new InvalidModelSpec(`${reference}: labels must be an array of strings.`);
  }
  if (typeof request.threshold !== 'number' || !(request.threshold >= 0 && request.threshold <= 1)) {
    throw new InvalidModelSpec(`${reference}: invalid threshold ${JSON.stringify(request.threshold)}. Expected a probability from 0 to 1.`);
  }
  if (typeof request.createdBy !== 'string' || request.createdBy.trim() === '') {
    throw new InvalidModelSpec(`${reference}: createdBy is missing. Pass the user or service that registers the model.`);
  }
}

function isTriple(value: unknown): value is [number, number, number] {
  return Array.isArray(value) && value.length === 3 && value.every((item) => typeof item === 'number' && Number.isFinite(item));
}

/** Returns the next integer version after the highest all-digit version, or `1` when there is none. */
export function nextVersion(existingVersions: string[]): string {
  let highest = 0n;
  for (const version of existingVersions) {
    if (/^[0-9]+$/.test(version) && BigInt(version) > highest) {
      highest = BigInt(version);
    }
  }
  return (highest + 1n).toString();
}

/** Builds the record stored for a new version, with createdAt set to the current time in ISO 8601 UTC. */
export function buildModelVersion(
  request: RegisterRequest,
  version: string,
  sha256: string,
  artifactUri: string,
): ModelVersion {
  return {
    name: request.name,
    version,
    task: request.task,
    sha256,
    sizeBytes: request.bytes.length,
    artifactUri,
    preprocess: {
      width: request.preprocess.width,
      height: request.preprocess.height,
      mean: [...request.preprocess.mean],
      std: [...request.preprocess.std],
    },
    labels: [...request.labels],
    threshold: request.threshold,
    ...(request.executionProviders ? { executionProviders: [...request.executionProviders] } : {}),
    createdAt: new Date().toISOString(),
    createdBy: request.createdBy,
  };
}

/** Orders versions by name, then createdAt, then version, which is the order `list` returns. */
export function compareModelVersions(a: ModelVersion, b: ModelVersion): number {
  return compareText(a.name, b.name) || compareText(a.createdAt, b.createdAt) || compareVersionLabels(a.version, b.version);
}

/**
 * Returns the latest version by createdAt. Versions created in the same millisecond are ordered
 * by their labels, numerically when both are all digits. Returns undefined for an empty list.
 */
export function pickLatest(versions: ModelVersion[]): ModelVersion | undefined {
  let latest: ModelVersion | undefined;
  for (const candidate of versions) {
    if (latest === undefined || compareModelVersions(latest, candidate) < 0) {
      latest = candidate;
    }
  }
  return latest;
}

function compareVersionLabels(a: string, b: string): number {
  if (/^[0-9]+$/.test(a) && /^[0-9]+$/.test(b)) {
    const difference = BigInt(a) - BigInt(b);
    if (difference < 0n) {
      return -1;
    }
    return difference > 0n ? 1 : 0;
  }
  return compareText(a, b);
}

function compareText(a: string, b: string): number {
  if (a < b) {
    return -1;
  }
  return a > b ? 1 : 0;
}
