/**
 * Pins a model reference (`name`, `name@version` or `name@alias`) to one registered version and
 * checks its artifact against the registered sha256, so a missing or tampered model stops the
 * batch before any shard runs.
 */
import { log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { ModelRegistry } from './registry/model-registry';
import { sha256Hex } from './storage/hash';
import { FailureType, toModelFailure } from './failures';
import type { ModelVersion } from './types';

/** The pinned version, plus the alias the reference named, e.g. `production` for `detector@production`. */
export interface ResolvedModel extends ModelVersion {
  resolvedAlias?: string;
}

export function createResolveModel(deps: { registry: ModelRegistry }) {
  return async function resolveModel(reference: string): Promise<ResolvedModel> {
    const at = reference.indexOf('@');
    const name = at < 0 ? reference : reference.slice(0, at);
    const version = at < 0 ? undefined : reference.slice(at + 1);

    let model: ModelVersion;
    let alias: string | undefined;
    let bytes: Buffer;
    try {
      ({ model, alias } = await deps.registry.resolve(name, version));
      bytes = await deps.registry.readArtifact(model);
    } catch (err) {
      if (err instanceof Error && err.name === 'NotFound') {
        throw ApplicationFailure.create({
          message: `Model ${reference}: artifact is missing from the registry storage (${err.message}); register the model again under a new version.`,
          type: FailureType.ModelNotFound,
          nonRetryable: true,
        });
      }
      throw toModelFailure(err);
    }

    const actual = sha256Hex(bytes);
    if (actual !== model.sha256) {
      throw ApplicationFailure.create({
        message: `Model ${model.name}@${model.version}: artifact ${model.artifactUri} has sha256 ${actual}, but ${model.sha256} was registered. The artifact changed after registration; register it again under a new version.`,
        type: FailureType.ModelChecksumMismatch,
        nonRetryable: true,
      });
    }
    log.info('Model resolved', { reference, model: `${model.name}@${model.version}`, sha256: model.sha256 });
    return alias === undefined ? model : { ...model, resolvedAlias: alias };
  };
}
