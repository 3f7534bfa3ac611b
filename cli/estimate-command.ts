/**
 * `skynewt estimate` and `skynewt run --estimate`: before a batch runs, its expected duration and
 * cost on each candidate instance type, at spot and on-demand prices, ranked by cost per image.
 * Throughput comes from earlier manifests of the same model (by sha256) where there are any,
 * else from a short probe on this machine, which is labelled as such.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import type { EC2Client } from '@aws-sdk/client-ec2';
import { ModelRunner } from '../activities/inference/model-runner';
import { isImageUri } from '../activities/list-inputs';
import { emptyTimings, processImage } from '../activities/process-image';
import { loadOnDemandPrices, onDemandPrice } from '../activities/pricing/on-demand';
import { latestSpotPrices } from '../activities/pricing/spot-feed';
import { createEc2Client } from '../activities/pricing/worker-prices';
import type { ModelRegistry } from '../activities/registry/model-registry';
import { openRegistry } from '../activities/registry/open-registry';
import type { ObjectStore } from '../activities/storage/object-store';
import { createObjectStore } from '../activities/storage/stores';
import { joinUri, parseUri, toFileUri } from '../activities/storage/uri';
import type { ModelVersion } from '../activities/types';
import type { BatchManifest } from '../activities/write-manifest';
import { loadConfig } from '../workers/config';
import { toInputUri } from './batch-commands';
import { formatUsd, printJson, printTable, UsageError } from './output';

/** Instance types estimated when none are given, besides those measured before. */
export const DEFAULT_INSTANCE_TYPES = ['g4dn.xlarge', 'g5.xlarge', 'g6.xlarge'];
/** Images decoded and run in a local probe by default. */
const DEFAULT_PROBE_IMAGES = 5;

export interface Throughput {
  /** Images per second of one host. */
  imagesPerSecond: number;
  source: 'measured' | 'local-probe';
  /** Images and host-seconds the figure comes from. */
  images: number;
  seconds: number;
  /** Origin of the figure: the earlier batches, or this machine for a probe. */
  basis: string;
}

export interface EstimateOption {
  instanceType: string;
  lifecycle: 'spot' | 'on-demand';
  /** USD per hour of one host, or null when unknown. */
  hourlyPriceUsd: number | null;
  /** Availability zone of the spot price: the cheapest zone of the region. */
  availabilityZone?: string;
  throughput: Throughput | null;
  /** Duration on one host, in seconds. */
  durationSeconds: number | null;
  costUsd: number | null;
  costPer1000ImagesUsd: number | null;
}

export interface Estimate {
  input: string;
  images: number;
  model: { name: string; version: string; sha256: string };
  region: string;
  /** Cheapest first; options with an unknown cost last. */
  options: EstimateOption[];
  notes: string[];
}

export interface EstimateRequest {
  input: string;
  /** `name` or `name@version`. */
  model: string;
  instanceTypes?: string[];
  /** Folder or prefix holding earlier batches, each as `<batchId>/manifest.json`. */
  resultsRoot: string;
  /** Images run by a local probe when some instance type has no measurement; 0 turns it off. */
  probeImages?: number;
  /** Whether to read spot prices from EC2 DescribeSpotPriceHistory. */
  spotPrices?: boolean;
  /** Region for prices; AWS_REGION, else us-east-1. */
  region?: string;
  /** JSON file overriding the shipped on-demand prices. */
  onDemandPricesFile?: string | null;
}

export interface EstimateDeps {
  store: ObjectStore;
  registry: ModelRegistry;
  ec2?: EC2Client;
}

/** Counts the images a batch over `input` would list: folders, prefixes, single images and manifest files. */
export async function countInputs(store: ObjectStore, input: string): Promise<{ images: number; sample: string[] }> {
  // NOTE: this repeats the rules of listInputs (activities/list-inputs.ts), whose enumerator is
  // private and needs an activity context; a change there must be made here too.
  const sample: string[] = [];
  let images = 0;
  const take = (uri: string) => {
    images += 1;
    if (sample.length < 100) sample.push(uri);
  };
  const parsed = parseUri(input);
  const single = parsed.scheme === 'file' ? !(await isDirectory(parsed.path)) : parsed.key !== '' && !parsed.key.endsWith('/') && (await store.exists(input));
  if (!single) {
    for await (const entry of store.list(input)) if (isImageUri(entry.uri)) take(entry.uri);
    return { images, sample };
  }
  if (isImageUri(input)) {
    take(parsed.scheme === 'file' ? toFileUri(parsed.path) : input);
    return { images, sample };
  }
  const baseDir = parsed.scheme === 'file' ? path.dirname(parsed.path) : null;
  const lines = (await store.get(input)).body.toString('utf8').split(/\r?\n/);
  for (const raw of lines) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const relative = !line.includes('://') && !line.startsWith('/');
    take(relative && baseDir !== null ? toFileUri(path.resolve(baseDir, line)) : line.startsWith('/') ? toFileUri(line) : line);
  }
  return { images, sample };
}

async function isDirectory(folder: string): Promise<boolean> {
  try {
    return (await readdir(folder, { withFileTypes: true })) !== null;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return false;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new UsageError(`Input ${folder} does not exist; give a folder, an image, a manifest file or an s3:// URI.`);
    throw err;
  }
}

/** Returns the URIs of `<root>/<batchId>/manifest.json` files. */
async function manifestUris(store: ObjectStore, resultsRoot: string): Promise<string[]> {
  const parsed = parseUri(resultsRoot);
  if (parsed.scheme === 'file') {
    const entries = await readdir(parsed.path, { withFileTypes: true }).catch(() => []);
    const uris = entries.filter((entry) => entry.isDirectory()).map((entry) => joinUri(resultsRoot, entry.name, 'manifest.json'));
    const present = await Promise.all(uris.map((uri) => store.exists(uri)));
    return uris.filter((_, i) => present[i]);
  }
  // NOTE: an S3 results root is listed in full, masks included, which is slow for large batches.
  const uris: string[] = [];
  const depth = parsed.key.split('/').filter(Boolean).length + 2;
  for await (const entry of store.list(resultsRoot)) {
    const entryUri = parseUri(entry.uri);
    if (entryUri.scheme !== 's3') continue;
    const key = entryUri.key;
    if (key.endsWith('/manifest.json') && key.split('/').filter(Boolean).length === depth) uris.push(entry.uri);
  }
  return uris;
}

/**
 * Returns measured host throughput per instance type from earlier batches of the same model:
 * images ÷ host-seconds over shards completed in one attempt. A shard's host-seconds are its
 * cost ÷ its hourly rate, which divides by the shards that shared the host, or its wall seconds
 * when it ran at rate 0.
 */
export async function measuredThroughput(store: ObjectStore, resultsRoot: string, sha256: string): Promise<Map<string, Throughput>> {
  const sums = new Map<string, { images: number; seconds: number; batches: Set<string> }>();
  for (const uri of await manifestUris(store, resultsRoot)) {
    let manifest: BatchManifest;
    try {
      manifest = JSON.parse((await store.get(uri)).body.toString('utf8')) as BatchManifest;
    } catch {
      continue;
    }
    if (manifest.model?.sha256 !== sha256) continue;
    for (const shard of manifest.shards) {
      if (shard.attempts.length !== 1 || shard.attempts[0].outcome !== 'completed' || shard.wallSeconds <= 0) continue;
      const rate = shard.capacity.hourlyRateUsd;
      const seconds = rate > 0 && shard.costUsd > 0 ? (shard.costUsd / rate) * 3600 : shard.wallSeconds;
      const sum = sums.get(shard.capacity.instanceType) ?? { images: 0, seconds: 0, batches: new Set<string>() };
      sum.images += shard.images;
      sum.seconds += seconds;
      sum.batches.add(manifest.batchId);
      sums.set(shard.capacity.instanceType, sum);
    }
  }
  const throughput = new Map<string, Throughput>();
  for (const [instanceType, sum] of sums) {
    if (sum.seconds <= 0) continue;
    throughput.set(instanceType, {
      imagesPerSecond: sum.images / sum.seconds,
      source: 'measured',
      images: sum.images,
      seconds: sum.seconds,
      basis: `${sum.batches.size} earlier batch${sum.batches.size === 1 ? '' : 'es'}`,
    });
  }
  return throughput;
}

/**
 * Decodes and runs `images` of the input through the model on this machine, one at a time, and
 * returns images per second excluding the model load. Masks go to a temporary folder.
 */
export async function localProbe(store: ObjectStore, registry: ModelRegistry, model: ModelVersion, sample: string[]): Promise<Throughput> {
  const runner = await ModelRunner.start({ intraOpThreads: os.availableParallelism() });
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'skynewt-probe-'));
  try {
    await runner.load(model, await registry.readArtifact(model));
    const timings = emptyTimings();
    const started = performance.now();
    for (const [index, uri] of sample.entries()) {
      const job = { index, uri, model, outputUri: toFileUri(scratch), maxPixels: 100_000_000, topK: 5, signal: new AbortController().signal };
      await processImage({ store, runner }, job, timings);
    }
    const seconds = (performance.now() - started) / 1000;
    return {
      imagesPerSecond: sample.length / seconds,
      source: 'local-probe',
      images: sample.length,
      seconds,
      basis: `local probe on ${os.hostname()} (${os.cpus()[0]?.model ?? 'unknown CPU'}, ${runner.executionProviders.join(',')}), not the instance type`,
    };
  } finally {
    await runner.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}

function parseModelReference(reference: string): { name: string; version?: string } {
  const [name, version] = reference.split('@');
  if (!name) throw new UsageError(`Invalid --model ${JSON.stringify(reference)}: expected NAME or NAME@VERSION.`);
  return { name, version: version || undefined };
}

export async function estimateBatch(request: EstimateRequest, deps: EstimateDeps): Promise<Estimate> {
  const { name, version } = parseModelReference(request.model);
  const model = await deps.registry.get(name, version);
  const { images, sample } = await countInputs(deps.store, request.input);
  if (images === 0) throw new UsageError(`Input ${request.input} contains no images; nothing to estimate.`);
  const region = request.region ?? 'us-east-1';
  const notes: string[] = [];

  const measured = await measuredThroughput(deps.store, request.resultsRoot, model.sha256);
  const instanceTypes = request.instanceTypes ?? [...new Set([...measured.keys()].filter((type) => type !== 'local').concat(DEFAULT_INSTANCE_TYPES))];
  let probe: Throughput | null = null;
  const unmeasured = instanceTypes.filter((type) => !measured.has(type));
  const probeImages = request.probeImages ?? DEFAULT_PROBE_IMAGES;
  if (unmeasured.length > 0 && probeImages > 0) {
    probe = await localProbe(deps.store, deps.registry, model, sample.slice(0, probeImages));
    notes.push(`No earlier batch of this model ran on ${unmeasured.join(', ')}; their throughput is a local probe of ${probe.images} images on this machine, which may be far from a GPU instance.`);
  } else if (unmeasured.length > 0) {
    notes.push(`No earlier batch of this model ran on ${unmeasured.join(', ')} and the local probe is off; their duration and cost are unknown.`);
  }

  const onDemand = loadOnDemandPrices(request.onDemandPricesFile ?? null);
  let spot = new Map<string, { priceUsd: number; availabilityZone: string }>();
  if (request.spotPrices !== false) {
    try {
      spot = await latestSpotPrices(deps.ec2 ?? createEc2Client({ ...process.env, AWS_REGION: region }), instanceTypes);
    } catch (err) {
      notes.push(`Spot prices are unknown: DescribeSpotPriceHistory failed (${(err as Error).name}: ${(err as Error).message}).`);
    }
  }

  const options: EstimateOption[] = [];
  for (const instanceType of instanceTypes) {
    const throughput = measured.get(instanceType) ?? probe;
    const spotPrice = spot.get(instanceType);
    options.push(option(instanceType, 'spot', spotPrice?.priceUsd ?? null, throughput, images, spotPrice?.availabilityZone));
    options.push(option(instanceType, 'on-demand', onDemandPrice(onDemand, region, instanceType), throughput, images));
  }
  options.sort((a, b) => (a.costPer1000ImagesUsd ?? Infinity) - (b.costPer1000ImagesUsd ?? Infinity));
  notes.push('Durations are for one host running shards back to back; spot prices change, and interrupted attempts add cost.');
  return { input: request.input, images, model: { name: model.name, version: model.version, sha256: model.sha256 }, region, options, notes };
}

function option(
  instanceType: string,
  lifecycle: EstimateOption['lifecycle'],
  hourlyPriceUsd: number | null,
  throughput: Throughput | null,
  images: number,
  availabilityZone?: string,
): EstimateOption {
  const durationSeconds = throughput ? images / throughput.imagesPerSecond : null;
  const costUsd = durationSeconds !== null && hourlyPriceUsd !== null ? (durationSeconds / 3600) * hourlyPriceUsd : null;
  return {
    instanceType,
    lifecycle,
    hourlyPriceUsd,
    ...(availabilityZone ? { availabilityZone } : {}),
    throughput,
    durationSeconds,
    costUsd,
    costPer1000ImagesUsd: costUsd === null ? null : (costUsd / images) * 1000,
  };
}

function formatDuration(seconds: number | null): string {
  if (seconds === null) return 'unknown';
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function printEstimate(estimate: Estimate): void {
  printTable([{
    input: estimate.input,
    images: estimate.images,
    model: `${estimate.model.name}@${estimate.model.version} (sha256 ${estimate.model.sha256.slice(0, 16)})`,
    region: estimate.region,
  }], true);
  console.log('');
  printTable(estimate.options.map((entry) => ({
    'instance type': entry.instanceType,
    lifecycle: entry.lifecycle,
    'price/hour': entry.hourlyPriceUsd === null ? 'unknown' : formatUsd(entry.hourlyPriceUsd),
    'images/s': entry.throughput ? entry.throughput.imagesPerSecond.toFixed(2) : 'unknown',
    throughput: entry.throughput ? entry.throughput.source : 'unknown',
    duration: formatDuration(entry.durationSeconds),
    cost: entry.costUsd === null ? 'unknown' : formatUsd(entry.costUsd),
    'per 1,000 images': entry.costPer1000ImagesUsd === null ? 'unknown' : formatUsd(entry.costPer1000ImagesUsd),
  })));
  const probe = estimate.options.find((entry) => entry.throughput?.source === 'local-probe')?.throughput;
  if (probe) console.log(`\nLocal probe: ${probe.basis}.`);
  for (const note of estimate.notes) console.log(`NOTE: ${note}`);
}

export interface EstimateOptions {
  model: string;
  instanceTypes?: string;
  results?: string;
  probeImages?: string;
  spotPrices?: boolean;
  json?: boolean;
}

/** Runs an estimate with the CLI's configuration and prints it. */
export async function runEstimate(input: string, options: EstimateOptions): Promise<void> {
  const config = loadConfig();
  const probeImages = options.probeImages === undefined ? undefined : Number(options.probeImages);
  if (probeImages !== undefined && (!Number.isInteger(probeImages) || probeImages < 0)) {
    throw new UsageError(`Invalid --probe-images ${JSON.stringify(options.probeImages)}: expected a whole number, 0 or more.`);
  }
  const instanceTypes = options.instanceTypes?.split(',').map((type) => type.trim()).filter(Boolean);
  const estimate = await estimateBatch(
    {
      input: toInputUri(input, !input.startsWith('s3://')),
      model: options.model,
      instanceTypes: instanceTypes && instanceTypes.length > 0 ? instanceTypes : undefined,
      resultsRoot: options.results === undefined ? config.resultsRoot : toInputUri(options.results, false),
      probeImages,
      spotPrices: options.spotPrices,
      region: process.env.AWS_REGION || 'us-east-1',
      onDemandPricesFile: config.onDemandPricesFile,
    },
    { store: createObjectStore(), registry: openRegistry() },
  );
  if (options.json) return printJson(estimate);
  printEstimate(estimate);
}

export function addEstimateCommand(program: Command): void {
  program
    .command('estimate <input>')
    .description('estimate the duration and cost of a batch per instance type, at spot and on-demand prices, without running it')
    .requiredOption('--model <model>', 'registered model as NAME or NAME@VERSION')
    .option('--instance-types <types>', `comma-separated EC2 instance types (default: those measured before and ${DEFAULT_INSTANCE_TYPES.join(',')})`)
    .option('--results <uri>', 'results root holding earlier batches to measure throughput from (default: .skynewt/results)')
    .option('--probe-images <n>', `images run locally when an instance type has no measurement; 0 turns the probe off`, String(DEFAULT_PROBE_IMAGES))
    .option('--no-spot-prices', 'skip the EC2 DescribeSpotPriceHistory lookup')
    .option('--json', 'print JSON')
    .action(runEstimate);
}
