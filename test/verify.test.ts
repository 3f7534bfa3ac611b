import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HistoryExport } from '../activities/audit/export-history';
import { shardsRootHash } from '../activities/audit/root-hash';
import { verifyBatch, type VerifyReport } from '../activities/audit/verify';
import { sha256Hex } from '../activities/storage/hash';
import { createObjectStore } from '../activities/storage/stores';
import type { ModelVersion } from '../activities/types';
import type { BatchManifest } from '../activities/write-manifest';
import { findFreePort } from '../infra/local/ports';
import { registerDetector, sampleFolder, startTestStack, type TestStack } from './helpers';

const run = promisify(execFile);
const CLI = path.resolve(__dirname, '..', 'cli', 'skynewt.js');

function kinds(report: VerifyReport): string[] {
  return [...new Set(report.problems.map((problem) => problem.kind))].sort();
}

describe('skynewt verify', () => {
  let stack: TestStack;
  let detector: ModelVersion;
  let batchId: string;
  let manifestUri: string;
  let manifest: BatchManifest;
  let env: NodeJS.ProcessEnv;
  const store = createObjectStore();

  /** Runs `skynewt verify` with Temporal unreachable and returns its exit code and parsed report. */
  async function verifyCli(target: string): Promise<{ code: number; report: VerifyReport }> {
    const result = await run(process.execPath, [CLI, 'verify', target, '--json'], { env, timeout: 120_000 }).then(
      ({ stdout }) => ({ code: 0, stdout }),
      (err: { code: number; stdout: string }) => ({ code: err.code, stdout: err.stdout }),
    );
    return { code: result.code, report: JSON.parse(result.stdout) as VerifyReport };
  }

  beforeAll(async () => {
    stack = await startTestStack();
    detector = await registerDetector(stack.registry);
    ({ batchId } = await stack.client.startBatch({
      input: sampleFolder(['text.png', 'page.png', 'coins.png']),
      model: `${detector.name}@${detector.version}`,
      shardSize: 2,
      taskQueue: stack.gpuTaskQueue,
    }));
    manifestUri = (await stack.client.result(batchId)).manifest;
    manifest = await stack.client.readManifest(manifestUri);
    env = {
      ...process.env,
      SKYNEWT_HOME: stack.home,
      // Nothing listens here, so the command must work without Temporal.
      SKYNEWT_TEMPORAL_ADDRESS: `127.0.0.1:${await findFreePort()}`,
    };
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('records the root hash and history in the manifest', async () => {
    expect(manifest.rootHashScheme).toBe('shard-lines-sha256');
    const lines = manifest.shards.map((shard) => `${shard.index}:${shard.sha256}\n`).join('');
    expect(manifest.rootHash).toBe(sha256Hex(lines));
    expect(manifest.rootHash).toBe(shardsRootHash(manifest.shards));
    expect(manifest.history).toBe(`${stack.resultsRoot}/${batchId}/history.json`);

    const history = JSON.parse(readFileSync(fileURLToPath(manifest.history!), 'utf8')) as HistoryExport;
    expect(history.workflowId).toBe(batchId);
    expect(history.runs).toHaveLength(1);
    expect(history.runs[0].continuedFrom).toBeNull();
    const events = (history.runs[0].history as { events: Array<{ eventType: string; activityTaskScheduledEventAttributes?: { activityType?: { name?: string } } }> }).events;
    expect(events[0].eventType).toBe('EVENT_TYPE_WORKFLOW_EXECUTION_STARTED');
    const activities = events.map((event) => event.activityTaskScheduledEventAttributes?.activityType?.name).filter(Boolean);
    expect(activities).toContain('writeManifest');
    expect(activities).toContain('exportHistory');
    expect(history.runs[0].events).toBe(events.length);
  });

  it('passes a clean batch', async () => {
    const report = await verifyBatch(manifestUri, { store, registry: stack.registry });
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.shardsChecked).toBe(2);
    expect(report.recordsChecked).toBe(3);
    expect(report.rootHash.fromOutputs).toBe(manifest.rootHash);
    expect(report.model.artifactSha256).toBe(detector.sha256);
  });

  it('finds the manifest by batch id without Temporal', async () => {
    const { code, report } = await verifyCli(batchId);
    expect(code).toBe(0);
    expect(report.ok).toBe(true);
    expect(report.manifest).toBe(manifestUri);
  });

  it('catches a tampered output line', async () => {
    const output = fileURLToPath(manifest.shards[0].output);
    const original = readFileSync(output, 'utf8');
    const lines = original.split('\n');
    const record = JSON.parse(lines[1]) as { modelSha256: string };
    record.modelSha256 = 'f'.repeat(64);
    lines[1] = JSON.stringify(record);
    writeFileSync(output, lines.join('\n'));
    try {
      const report = await verifyBatch(manifestUri, { store, registry: stack.registry });
      expect(report.ok).toBe(false);
      expect(kinds(report)).toEqual(['record-model-mismatch', 'shard-sha256-mismatch']);
      const mismatch = report.problems.find((problem) => problem.kind === 'record-model-mismatch');
      expect(mismatch?.shard).toBe(0);
      expect(mismatch?.line).toBe(2);
      expect(report.rootHash.fromOutputs).not.toBe(manifest.rootHash);

      const { code, report: cliReport } = await verifyCli(manifestUri);
      expect(code).toBe(1);
      expect(kinds(cliReport)).toEqual(['record-model-mismatch', 'shard-sha256-mismatch']);
    } finally {
      writeFileSync(output, original);
    }
  });

  it('catches a tampered model artifact', async () => {
    const artifact = fileURLToPath(detector.artifactUri);
    const original = readFileSync(artifact);
    writeFileSync(artifact, Buffer.concat([original, Buffer.from('tampered')]));
    try {
      const report = await verifyBatch(manifestUri, { store, registry: stack.registry });
      expect(kinds(report)).toEqual(['model-artifact-mismatch']);
      expect(report.model.registeredSha256).toBe(detector.sha256);
      expect(report.model.artifactSha256).not.toBe(detector.sha256);

      const { code } = await verifyCli(batchId);
      expect(code).toBe(1);
    } finally {
      writeFileSync(artifact, original);
    }
  });

  it('catches missing and extra objects', async () => {
    const extra = path.join(fileURLToPath(manifest.output), 'shards', 'shard-00099.jsonl');
    writeFileSync(extra, '{}\n');
    const shardOne = fileURLToPath(manifest.shards[1].output);
    const saved = readFileSync(shardOne);
    writeFileSync(shardOne, '');
    // The edited manifest names a missing output for shard 1 and another sha256 for shard 0.
    const edited: BatchManifest = {
      ...manifest,
      shards: manifest.shards.map((shard) => (shard.index === 1 ? { ...shard, output: `${shard.output}.gone` } : { ...shard, sha256: '0'.repeat(64) })),
    };
    try {
      const report = await verifyBatch(manifestUri, { store, registry: stack.registry });
      expect(kinds(report)).toEqual(['extra-object', 'shard-record-count-mismatch', 'shard-sha256-mismatch']);
      expect(report.problems.find((problem) => problem.kind === 'extra-object')?.uri).toMatch(/shard-00099\.jsonl$/);

      const { verifyManifest } = await import('../activities/audit/verify');
      const missing = await verifyManifest(edited, manifestUri, { store });
      expect(kinds(missing)).toContain('shard-output-missing');
      expect(kinds(missing)).toContain('root-hash-mismatch');
      expect(missing.rootHash.fromOutputs).toBeNull();
    } finally {
      writeFileSync(shardOne, saved);
      await store.delete(extra);
    }
    expect((await verifyBatch(manifestUri, { store, registry: stack.registry })).ok).toBe(true);
  });
});
