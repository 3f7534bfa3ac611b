/**
 * `skynewt verify BATCH_ID_OR_MANIFEST_URI`: checks a finished batch against its manifest and the
 * model registry. It needs Temporal only to find the manifest of a batch id whose manifest is not
 * under the results root, and exits with 1 when it finds any problem.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { verifyBatch, type VerifyReport } from '../activities/audit/verify';
import { openRegistry } from '../activities/registry/open-registry';
import type { ObjectStore } from '../activities/storage/object-store';
import { createObjectStore } from '../activities/storage/stores';
import { joinUri, toFileUri } from '../activities/storage/uri';
import { loadConfig } from '../workers/config';
import { connectClient, explainBatchError } from './batch-commands';
import { printJson, UsageError } from './output';

/** Letters, digits, `.`, `_` and `-`: the characters a batch id may contain. */
const BATCH_ID_PATTERN = /^[A-Za-z0-9._-]+$/;

/**
 * Turns the command's argument into a manifest URI. A URI, a path that exists, or anything
 * ending in `.json` is a manifest (a folder means its manifest.json). Anything else is a batch id:
 * `<SKYNEWT_RESULTS>/<id>/manifest.json` when it exists, else the manifest in the batch's memo.
 */
export async function findManifestUri(target: string, store: ObjectStore, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  if (/^(s3|file):\/\//.test(target)) return target.endsWith('/') ? joinUri(target, 'manifest.json') : target;
  if (existsSync(target)) {
    const absolute = path.resolve(target);
    return toFileUri(statSync(absolute).isDirectory() ? path.join(absolute, 'manifest.json') : absolute);
  }
  if (target.endsWith('.json') || !BATCH_ID_PATTERN.test(target)) {
    throw new UsageError(`Manifest ${target} not found; give a batch id, a manifest path, or a file:// or s3:// manifest URI.`);
  }

  const underResults = joinUri(loadConfig(env).resultsRoot, target, 'manifest.json');
  if (await store.exists(underResults)) return underResults;

  const client = await connectClient();
  let uri: string | null;
  try {
    uri = await client.manifestUri(target);
  } catch (err) {
    throw explainBatchError(target, err);
  }
  if (uri === null) {
    throw new UsageError(`Batch ${target} has no manifest yet: it is still running or did not finish. Check it with: skynewt status ${target}`);
  }
  return uri;
}

export function printVerifyReport(report: VerifyReport): void {
  console.log(`Batch ${report.batchId}: ${report.manifest}`);
  console.log(`  shards checked   ${report.shardsChecked}`);
  console.log(`  records checked  ${report.recordsChecked}`);
  console.log(`  root hash        ${report.rootHash.recorded ?? '(none recorded)'}`);
  console.log(`  model            ${report.model.reference} sha256 ${report.model.sha256}`);
  if (report.ok) {
    console.log('OK: every shard output, record and the model artifact match the manifest.');
    return;
  }
  const total = report.problems.length + report.problemsOmitted;
  console.log(`FAILED: ${total} problem${total === 1 ? '' : 's'}`);
  for (const problem of report.problems) console.log(`  ${problem.kind}: ${problem.message}`);
  if (report.problemsOmitted > 0) console.log(`  ... and ${report.problemsOmitted} more record problems`);
}

export function addVerifyCommand(program: Command): void {
  program
    .command('verify <batch>')
    .description('re-hash a finished batch\'s outputs and model artifact and compare them with its manifest (BATCH_ID or manifest URI); exits with 1 on any problem')
    .option('--json', 'print the report as JSON')
    .action(async (target: string, options: { json?: boolean }) => {
      const store = createObjectStore();
      const manifest = await findManifestUri(target, store);
      const report = await verifyBatch(manifest, { store, registry: openRegistry() });
      if (options.json) printJson(report);
      else printVerifyReport(report);
      if (!report.ok) process.exitCode = 1;
    });
}
