/**
 * Verifies a finished batch from its manifest alone, without Temporal. It re-hashes every shard
 * output and recomputes the root hash. It checks that every output record names the manifest's
 * model sha256 and that the registry's artifact still has that sha256. It also reports objects
 * under the batch folder that the manifest does not reference.
 */
import type { ModelRegistry } from '../registry/model-registry';
import { sha256Hex } from '../storage/hash';
import type { ObjectStore } from '../storage/object-store';
import { formatUri, joinUri, parseUri } from '../storage/uri';
import { failedShardUri } from '../record-failed-shard';
import { shardResultUri } from '../run-shard';
import type { OutputRecord } from '../types';
import type { BatchManifest } from '../write-manifest';
import { shardsRootHash } from './root-hash';

/** Record-level problems listed in a report; past this many only `problemsOmitted` grows. */
const MAX_RECORD_PROBLEMS = 100;
/** Shard outputs read from storage at once. */
const READ_CONCURRENCY = 8;

export type VerifyProblemKind =
  | 'shard-output-missing'
  | 'shard-sha256-mismatch'
  | 'shard-record-count-mismatch'
  | 'record-invalid'
  | 'record-model-mismatch'
  | 'mask-missing'
  | 'root-hash-missing'
  | 'root-hash-mismatch'
  | 'model-not-registered'
  | 'model-record-mismatch'
  | 'model-artifact-missing'
  | 'model-artifact-mismatch'
  | 'extra-object';

export interface VerifyProblem {
  kind: VerifyProblemKind;
  message: string;
  uri?: string;
  shard?: number;
  /** 1-based line of the shard output, for record problems. */
  line?: number;
}

export interface VerifyReport {
  manifest: string;
  batchId: string;
  /** True when no problem was found. */
  ok: boolean;
  shardsChecked: number;
  recordsChecked: number;
  rootHash: {
    /** The manifest's rootHash, or null for a manifest written before root hashes. */
    recorded: string | null;
    /** Computed from the sha256 values that the manifest lists. */
    fromManifest: string;
    /** Computed from the sha256 of the shard outputs as read now; null when an output is missing. */
    fromOutputs: string | null;
  };
  model: {
    reference: string;
    sha256: string;
    /** sha256 that the registry holds for the version, or null when it is not registered. */
    registeredSha256: string | null;
    /** sha256 of the artifact bytes as read now, or null when they could not be read. */
    artifactSha256: string | null;
  };
  problems: VerifyProblem[];
  /** Record-level problems left out of `problems` after the first MAX_RECORD_PROBLEMS. */
  problemsOmitted: number;
}

export interface VerifyDeps {
  store: ObjectStore;
  /** Registry to check the model artifact against; the model check is skipped without one. */
  registry?: ModelRegistry;
}

/** Reads the manifest at `manifestUri` and verifies the batch it describes. */
export async function verifyBatch(manifestUri: string, deps: VerifyDeps): Promise<VerifyReport> {
  const manifest = JSON.parse((await deps.store.get(manifestUri)).body.toString('utf8')) as BatchManifest;
  return verifyManifest(manifest, manifestUri, deps);
}

export async function verifyManifest(manifest: BatchManifest, manifestUri: string, deps: VerifyDeps): Promise<VerifyReport> {
  const report: VerifyReport = {
    manifest: manifestUri,
    batchId: manifest.batchId,
    ok: false,
    shardsChecked: 0,
    recordsChecked: 0,
    rootHash: { recorded: manifest.rootHash ?? null, fromManifest: shardsRootHash(manifest.shards), fromOutputs: null },
    model: { reference: `${manifest.model.name}@${manifest.model.version}`, sha256: manifest.model.sha256, registeredSha256: null, artifactSha256: null },
    problems: [],
    problemsOmitted: 0,
  };
  const masks = new Set<string>();

  const outputHashes: Array<{ index: number; sha256: string } | null> = [];
  for (let first = 0; first < manifest.shards.length; first += READ_CONCURRENCY) {
    const chunk = manifest.shards.slice(first, first + READ_CONCURRENCY);
    const bodies = await Promise.all(chunk.map((shard) => readOptional(deps.store, shard.output)));
    chunk.forEach((shard, i) => {
      const body = bodies[i];
      report.shardsChecked += 1;
      if (body === null) {
        report.problems.push({ kind: 'shard-output-missing', shard: shard.index, uri: shard.output, message: `Shard ${shard.index} output ${shard.output} is missing.` });
        outputHashes.push(null);
        return;
      }
      const actual = sha256Hex(body);
      outputHashes.push({ index: shard.index, sha256: actual });
      if (actual !== shard.sha256) {
        report.problems.push({
          kind: 'shard-sha256-mismatch',
          shard: shard.index,
          uri: shard.output,
          message: `Shard ${shard.index} output ${shard.output} has sha256 ${actual}, but the manifest lists ${shard.sha256}.`,
        });
      }
      checkRecords(report, manifest, shard.index, shard.output, shard.images, body, masks);
    });
  }
  if (outputHashes.every((entry) => entry !== null)) {
    report.rootHash.fromOutputs = shardsRootHash(outputHashes as Array<{ index: number; sha256: string }>);
  }
  checkRootHash(report);
  if (deps.registry !== undefined) await checkModel(report, manifest, deps.registry);
  await checkStoredObjects(report, manifest, deps.store, masks);

  report.ok = report.problems.length === 0 && report.problemsOmitted === 0;
  return report;
}

/** Parses each line of a shard output and checks its model sha256 and the number of lines. */
function checkRecords(report: VerifyReport, manifest: BatchManifest, shard: number, uri: string, images: number, body: Buffer, masks: Set<string>): void {
  const lines = body.toString('utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  if (lines.length !== images) {
    report.problems.push({
      kind: 'shard-record-count-mismatch',
      shard,
      uri,
      message: `Shard ${shard} output ${uri} has ${lines.length} records, but the manifest lists ${images} images.`,
    });
  }
  lines.forEach((line, i) => {
    report.recordsChecked += 1;
    let record: OutputRecord;
    try {
      record = JSON.parse(line) as OutputRecord;
    } catch (err) {
      addRecordProblem(report, { kind: 'record-invalid', shard, uri, line: i + 1, message: `Shard ${shard} output ${uri} line ${i + 1} is not valid JSON: ${(err as Error).message}` });
      return;
    }
    if (record.modelSha256 !== manifest.model.sha256) {
      addRecordProblem(report, {
        kind: 'record-model-mismatch',
        shard,
        uri,
        line: i + 1,
        message: `Shard ${shard} output ${uri} line ${i + 1} (input ${record.input}) has modelSha256 ${record.modelSha256}, but the batch ran ${manifest.model.sha256}.`,
      });
    }
    if (typeof record.mask === 'string') masks.add(normalizeUri(record.mask));
  });
}

function addRecordProblem(report: VerifyReport, problem: VerifyProblem): void {
  if (report.problems.filter((entry) => entry.line !== undefined).length >= MAX_RECORD_PROBLEMS) {
    report.problemsOmitted += 1;
    return;
  }
  report.problems.push(problem);
}

function checkRootHash(report: VerifyReport): void {
  const { recorded, fromManifest } = report.rootHash;
  if (recorded === null) {
    report.problems.push({ kind: 'root-hash-missing', uri: report.manifest, message: `Manifest ${report.manifest} has no rootHash, so the list of shards cannot be checked as a whole.` });
  } else if (recorded !== fromManifest) {
    report.problems.push({
      kind: 'root-hash-mismatch',
      uri: report.manifest,
      message: `Manifest ${report.manifest} records rootHash ${recorded}, but its shard list hashes to ${fromManifest}.`,
    });
  }
}

/** Checks that the registry still stores the batch's model version with the same bytes. */
async function checkModel(report: VerifyReport, manifest: BatchManifest, registry: ModelRegistry): Promise<void> {
  const reference = report.model.reference;
  let registered;
  try {
    registered = await registry.get(manifest.model.name, manifest.model.version);
  } catch (err) {
    if ((err as Error).name !== 'ModelNotFound') throw err;
    report.problems.push({ kind: 'model-not-registered', message: `Model ${reference} is not in the registry: ${(err as Error).message}` });
    return;
  }
  report.model.registeredSha256 = registered.sha256;
  if (registered.sha256 !== manifest.model.sha256) {
    report.problems.push({
      kind: 'model-record-mismatch',
      message: `The registry lists ${reference} with sha256 ${registered.sha256}, but the batch ran ${manifest.model.sha256}.`,
    });
  }

  let bytes: Buffer;
  try {
    bytes = await registry.readArtifact(registered);
  } catch (err) {
    if ((err as Error).name !== 'NotFound') throw err;
    report.problems.push({ kind: 'model-artifact-missing', uri: registered.artifactUri, message: `Model ${reference} artifact ${registered.artifactUri} is missing.` });
    return;
  }
  report.model.artifactSha256 = sha256Hex(bytes);
  if (report.model.artifactSha256 !== manifest.model.sha256) {
    report.problems.push({
      kind: 'model-artifact-mismatch',
      uri: registered.artifactUri,
      message: `Model ${reference} artifact ${registered.artifactUri} has sha256 ${report.model.artifactSha256}, but the batch ran ${manifest.model.sha256}.`,
    });
  }
}

/**
 * Lists `<output>/shards/` and `<output>/masks/`: every object must be a shard output, result or
 * failure record named by the manifest, or a mask named by a record, and every such mask must exist.
 * NOTE: masks carry no hash in the records, so a changed mask is not detected.
 */
async function checkStoredObjects(report: VerifyReport, manifest: BatchManifest, store: ObjectStore, masks: Set<string>): Promise<void> {
  const expected = new Set<string>();
  for (const shard of manifest.shards) {
    expected.add(normalizeUri(shard.output));
    expected.add(normalizeUri(shardResultUri(manifest.output, shard.index)));
  }
  for (const failed of manifest.failedShards) {
    expected.add(normalizeUri(failedShardUri(manifest.output, failed.shardIndex)));
  }

  for await (const entry of store.list(joinUri(manifest.output, 'shards/'))) {
    const uri = normalizeUri(entry.uri);
    if (!expected.has(uri)) {
      report.problems.push({ kind: 'extra-object', uri: entry.uri, message: `Object ${entry.uri} is under the batch's shards/ folder, but the manifest does not reference it.` });
    }
  }

  const foundMasks = new Set<string>();
  for await (const entry of store.list(joinUri(manifest.output, 'masks/'))) {
    const uri = normalizeUri(entry.uri);
    foundMasks.add(uri);
    if (!masks.has(uri)) {
      report.problems.push({ kind: 'extra-object', uri: entry.uri, message: `Mask ${entry.uri} is not referenced by any output record.` });
    }
  }
  for (const mask of masks) {
    if (!foundMasks.has(mask)) {
      report.problems.push({ kind: 'mask-missing', uri: mask, message: `Mask ${mask} is referenced by an output record but missing.` });
    }
  }
}

async function readOptional(store: ObjectStore, uri: string): Promise<Buffer | null> {
  try {
    return (await store.get(uri)).body;
  } catch (err) {
    if (err instanceof Error && err.name === 'NotFound') return null;
    throw err;
  }
}

/** Puts a URI in one canonical form, so `file:` URIs from different writers compare equal. */
function normalizeUri(uri: string): string {
  return formatUri(parseUri(uri));
}
