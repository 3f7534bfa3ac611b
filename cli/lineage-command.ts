/**
 * `skynewt lineage`: which batches used a model version (`--model NAME@VERSION`, from Temporal
 * visibility), or which input, model and capacity produced an output or mask URI (from the
 * batch's manifest and shard outputs, without Temporal).
 */
import type { Command } from 'commander';
import { findOutputLineage, type OutputLineage } from '../activities/audit/output-lineage';
import { openRegistry } from '../activities/registry/open-registry';
import { createObjectStore } from '../activities/storage/stores';
import { toFileUri } from '../activities/storage/uri';
import type { SkyNewtClient } from '../client/skynewt-client';
import { connectClient } from './batch-commands';
import { parseModelReference } from './model-commands';
import { printJson, printTable, UsageError } from './output';

/**
 * Resolves `NAME@VERSION` or `NAME@ALIAS` to the `name@version` that batches record. A version
 * that the registry no longer lists is taken as written, so old batches stay findable.
 */
export async function modelSearchValue(reference: string): Promise<{ name: string; version: string }> {
  const { name, version } = parseModelReference(reference);
  if (version === undefined || version === '') {
    throw new UsageError(`Invalid --model ${JSON.stringify(reference)}: give NAME@VERSION or NAME@ALIAS, e.g. detector@3.`);
  }
  try {
    const { model } = await openRegistry().resolve(name, version);
    return { name: model.name, version: model.version };
  } catch (err) {
    if ((err as Error).name === 'ModelNotFound') return { name, version };
    throw err;
  }
}

export async function listModelBatches(client: SkyNewtClient, reference: string) {
  const { name, version } = await modelSearchValue(reference);
  return { model: `${name}@${version}`, batches: await client.batchesUsingModel(name, version) };
}

export function printOutputLineage(lineage: OutputLineage): void {
  const { shard, record, attempt } = lineage;
  const capacity = attempt?.capacity ?? shard.capacity;
  const rows: Record<string, string> = {
    output: lineage.uri,
    batch: `${lineage.batchId} (${lineage.manifest})`,
    model: `${lineage.model.name}@${lineage.model.version} sha256 ${lineage.model.sha256}`,
    shard: `${shard.index}: ${shard.output}`,
  };
  if (record !== undefined) {
    rows.input = `${record.input} (${record.inputEtag ?? 'no etag'})`;
    rows.record = `index ${record.index}, line ${record.line}, status ${record.status}`;
  }
  if (attempt !== undefined) rows.attempt = attempt === null ? 'unknown' : `${attempt.attempt} on ${attempt.taskQueue} (${attempt.outcome})`;
  rows.capacity = `${capacity.host} (${capacity.instanceType}, ${capacity.availabilityZone}, ${capacity.lifecycle}${capacity.gpus ? `, GPU ${capacity.gpus}` : ''})`;
  rows.runtime = `onnxruntime ${shard.lineage.onnxruntimeVersion} [${shard.lineage.executionProviders.join(', ')}], build ${shard.lineage.buildId}`;
  printTable([rows], true);
}

export function addLineageCommand(program: Command): void {
  program
    .command('lineage [output]')
    .description('show which input, model and capacity produced an output or mask URI, or with --model list the batches that used a model version')
    .option('--model <reference>', 'list batches that ran NAME@VERSION (or NAME@ALIAS, resolved now)')
    .option('--json', 'print JSON')
    .action(async (output: string | undefined, options: { model?: string; json?: boolean }) => {
      if ((output === undefined) === (options.model === undefined)) {
        throw new UsageError('Give either an output or mask URI, or --model NAME@VERSION, but not both.');
      }
      if (options.model !== undefined) {
        const { model, batches } = await listModelBatches(await connectClient(), options.model);
        if (options.json) return printJson({ model, batches });
        if (batches.length === 0) return console.log(`No batches found that ran ${model}.`);
        printTable(batches.map((batch) => ({ batch: batch.batchId, status: batch.status, started: batch.startTime, alias: batch.modelAlias ?? '-', manifest: batch.manifest ?? '-' })));
        return;
      }
      const uri = /^(s3|file):\/\//.test(output!) ? output! : toFileUri(output!);
      let lineage: OutputLineage;
      try {
        lineage = await findOutputLineage(uri, createObjectStore());
      } catch (err) {
        if (err instanceof Error && err.name === 'Error') throw new UsageError(err.message);
        throw err;
      }
      if (options.json) return printJson(lineage);
      printOutputLineage(lineage);
    });
}
