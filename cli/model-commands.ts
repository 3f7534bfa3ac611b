/**
 * `skynewt model register|list|show|promote|history`: the model registry from the command line. Registration
 * reads the ONNX file's input shape with onnxruntime, so a file that is not a loadable model is
 * rejected before anything is stored.
 */
import { parseExecutionProviders } from '../activities/inference/execution-providers';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import type { Command } from 'commander';
import { openRegistry } from '../activities/registry/open-registry';
import type { ModelRegistry, Promotion } from '../activities/registry/model-registry';
import type { ModelTask, ModelVersion, PreprocessSpec } from '../activities/types';
import { printJson, printTable, UsageError } from './output';

/** ImageNet statistics, the usual normalisation for vision backbones. */
const DEFAULT_MEAN: [number, number, number] = [0.485, 0.456, 0.406];
const DEFAULT_STD: [number, number, number] = [0.229, 0.224, 0.225];
const DEFAULT_THRESHOLD = 0.3;

export interface RegisterOptions {
  task: string;
  version?: string;
  labels?: string;
  inputSize?: string;
  mean?: string;
  std?: string;
  threshold?: string;
  executionProvider?: string;
  json?: boolean;
}

export function parseTriple(flag: string, value: string | undefined, fallback: [number, number, number]): [number, number, number] {
  if (value === undefined) return fallback;
  const parts = value.split(',').map((part) => Number(part.trim()));
  if (parts.length !== 3 || parts.some((part) => !Number.isFinite(part))) {
    throw new UsageError(`Invalid ${flag} ${JSON.stringify(value)}: expected three numbers separated by commas, e.g. 0.485,0.456,0.406.`);
  }
  if (flag === '--std' && parts.some((part) => part <= 0)) {
    throw new UsageError(`Invalid --std ${JSON.stringify(value)}: every value must be greater than 0.`);
  }
  return parts as [number, number, number];
}

type Shape = ReadonlyArray<number | string>;

/** Loads the file with onnxruntime and returns its first input's and first output's shapes. */
async function inspectModel(file: string): Promise<{ input: Shape; output: Shape }> {
  const ort = await import('onnxruntime-node');
  let session;
  try {
    session = await ort.InferenceSession.create(file);
  } catch (err) {
    throw new UsageError(`Invalid model file ${file}: onnxruntime could not load it (${(err as Error).message}).`);
  }
  const input = session.inputMetadata[0];
  const output = session.outputMetadata[0];
  await session.release();
  return { input: input?.isTensor ? input.shape : [], output: output?.isTensor ? output.shape : [] };
}

/** Picks the model input size from `--input-size`, else from the model's static NCHW shape. */
function inputSize(file: string, shape: Shape, flag: string | undefined): { width: number; height: number } {
  if (flag !== undefined) {
    const match = /^(\d+)x(\d+)$/.exec(flag);
    if (!match || Number(match[1]) < 1 || Number(match[2]) < 1) {
      throw new UsageError(`Invalid --input-size ${JSON.stringify(flag)}: expected WIDTHxHEIGHT in pixels, e.g. 640x640.`);
    }
    return { width: Number(match[1]), height: Number(match[2]) };
  }
  const [height, width] = shape.slice(-2);
  if (typeof width !== 'number' || typeof height !== 'number') {
    throw new UsageError(`Model ${file} has a dynamic input size (${JSON.stringify(shape)}); pass --input-size WIDTHxHEIGHT.`);
  }
  return { width, height };
}

/**
 * Checks that the model's output fits the task: a [N, 1, H, W] probability map for segmentation,
 * [N, classes] scores for classification, with one label per class when labels are given.
 */
function checkOutput(file: string, task: ModelTask, output: Shape, labels: string[]): void {
  if (task === 'segmentation' && (output.length !== 4 || (typeof output[1] === 'number' && output[1] !== 1))) {
    throw new UsageError(`Model ${file} outputs shape ${JSON.stringify(output)}, but a segmentation model must output one probability map [N, 1, H, W]; use --task classification for [N, classes].`);
  }
  if (task === 'classification' && output.length !== 2) {
    throw new UsageError(`Model ${file} outputs shape ${JSON.stringify(output)}, but a classification model must output scores [N, classes]; use --task segmentation for [N, 1, H, W].`);
  }
  const classes = output[1];
  if (task === 'classification' && labels.length > 0 && typeof classes === 'number' && labels.length !== classes) {
    throw new UsageError(`--labels gives ${labels.length} labels, but model ${file} outputs ${classes} classes; give exactly one label per class.`);
  }
}

async function readLabels(file: string | undefined): Promise<string[]> {
  if (file === undefined) return [];
  const text = await readFile(file, 'utf8');
  if (text.trim().startsWith('[')) return (JSON.parse(text) as unknown[]).map(String);
  return text.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
}

export async function registerModel(registry: ModelRegistry, name: string, file: string, options: RegisterOptions) {
  if (options.task !== 'segmentation' && options.task !== 'classification') {
    throw new UsageError(`Invalid --task ${JSON.stringify(options.task)}: expected segmentation or classification.`);
  }
  const threshold = options.threshold === undefined ? DEFAULT_THRESHOLD : Number(options.threshold);
  if (!Number.isFinite(threshold) || threshold <= 0 || threshold >= 1) {
    throw new UsageError(`Invalid --threshold ${JSON.stringify(options.threshold)}: expected a probability between 0 and 1, e.g. 0.3.`);
  }
  let executionProviders: string[] | undefined;
  if (options.executionProvider !== undefined) {
    try {
      executionProviders = parseExecutionProviders(options.executionProvider, '--execution-provider');
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  const bytes = await readFile(file).catch((err: NodeJS.ErrnoException) => {
    throw new UsageError(`Cannot read model file ${file}: ${err.code ?? err.message}.`);
  });
  const shapes = await inspectModel(file);
  const size = inputSize(file, shapes.input, options.inputSize);
  const labels = await readLabels(options.labels);
  checkOutput(file, options.task, shapes.output, labels);
  const preprocess: PreprocessSpec = {
    ...size,
    mean: parseTriple('--mean', options.mean, DEFAULT_MEAN),
    std: parseTriple('--std', options.std, DEFAULT_STD),
  };
  return registry.register({
    name,
    version: options.version,
    task: options.task as ModelTask,
    bytes,
    preprocess,
    labels,
    threshold,
    executionProviders,
    createdBy: `${os.userInfo().username}@${os.hostname()}`,
  });
}

/** Returns the user recorded for a promotion: SKYNEWT_USER, else `<OS user>@<host name>`. */
export function currentUser(env: NodeJS.ProcessEnv = process.env): string {
  return env.SKYNEWT_USER || `${os.userInfo().username}@${os.hostname()}`;
}

/** Splits `name@version` (or `name@alias`); the part after `@` is undefined for a bare name. */
export function parseModelReference(reference: string): { name: string; version?: string } {
  const at = reference.indexOf('@');
  return at < 0 ? { name: reference } : { name: reference.slice(0, at), version: reference.slice(at + 1) };
}

export interface PromoteCommandOptions {
  alias: string;
  reason: string;
  json?: boolean;
}

/** Promotes `name@version` to an alias; the reference must name a version, not an alias or a bare name. */
export async function promoteModel(registry: ModelRegistry, reference: string, options: PromoteCommandOptions, env: NodeJS.ProcessEnv = process.env): Promise<Promotion> {
  const { name, version } = parseModelReference(reference);
  if (version === undefined || version === '') {
    throw new UsageError(`Invalid model ${JSON.stringify(reference)}: give the version to promote as NAME@VERSION, e.g. detector@3.`);
  }
  // An alias resolves to its version here, so `promote detector@staging --alias production` copies a pointer.
  const { model } = await registry.resolve(name, version);
  return registry.promote(model.name, model.version, options.alias, { reason: options.reason, by: currentUser(env) });
}

function describe(model: ModelVersion, aliases: Promotion[] = []): Record<string, string> {
  const p = model.preprocess;
  const own = aliases.filter((pointer) => pointer.version === model.version).map((pointer) => pointer.alias);
  return {
    model: `${model.name}@${model.version}`,
    task: model.task,
    sha256: model.sha256,
    size: `${(model.sizeBytes / 1e6).toFixed(1)} MB`,
    input: `${p.width}x${p.height} mean ${p.mean.join(',')} std ${p.std.join(',')}`,
    threshold: String(model.threshold),
    'execution providers': model.executionProviders?.join(',') ?? "host's",
    labels: model.labels.length ? model.labels.slice(0, 10).join(', ') + (model.labels.length > 10 ? ', ...' : '') : '-',
    artifact: model.artifactUri,
    created: `${model.createdAt} by ${model.createdBy}`,
    aliases: own.length ? own.join(', ') : '-',
  };
}

export function addModelCommands(program: Command): void {
  const model = program.command('model').description('register and inspect models in the registry');

  model
    .command('register <name> <file>')
    .description('store an ONNX file as a new immutable model version')
    .requiredOption('--task <task>', 'segmentation or classification')
    .option('--version <version>', 'version to create (default: the next whole number)')
    .option('--labels <file>', 'class labels, one per line or a JSON array')
    .option('--input-size <WxH>', 'model input size in pixels (default: read from the model)')
    .option('--mean <a,b,c>', 'per-channel RGB mean after scaling to 0..1', DEFAULT_MEAN.join(','))
    .option('--std <a,b,c>', 'per-channel RGB standard deviation after scaling to 0..1', DEFAULT_STD.join(','))
    .option('--threshold <t>', 'segmentation probability threshold, 0..1', String(DEFAULT_THRESHOLD))
    .option('--execution-provider <list>', "onnxruntime execution providers to run the model with, in order, e.g. cuda,cpu (cpu, cuda, tensorrt; default: the host's; a worker's own list wins)")
    .option('--json', 'print JSON')
    .action(async (name: string, file: string, options: RegisterOptions) => {
      const { model: stored, created } = await registerModel(openRegistry(), name, file, options);
      if (options.json) return printJson({ ...stored, created });
      console.log(created ? `Registered ${stored.name}@${stored.version}` : `${stored.name}@${stored.version} is already registered with the same bytes`);
      printTable([describe(stored)], true);
    });

  model
    .command('list [name]')
    .description('list model versions, newest last')
    .option('--json', 'print JSON')
    .action(async (name: string | undefined, options: { json?: boolean }) => {
      const models = await openRegistry().list(name);
      if (options.json) return printJson(models);
      if (models.length === 0) return console.log('No models registered. Add one with: skynewt model register NAME FILE.onnx --task segmentation');
      printTable(models.map((m) => ({ model: `${m.name}@${m.version}`, task: m.task, sha256: m.sha256.slice(0, 16), created: m.createdAt })));
    });

  model
    .command('show <reference>')
    .description('show one model version (NAME for the latest, or NAME@VERSION)')
    .option('--json', 'print JSON')
    .action(async (reference: string, options: { json?: boolean }) => {
      const { name, version } = parseModelReference(reference);
      const registry = openRegistry();
      const { model: stored, alias } = await registry.resolve(name, version);
      const aliases = await registry.aliases(name);
      const own = aliases.filter((pointer) => pointer.version === stored.version);
      if (options.json) return printJson({ ...stored, aliases: own, ...(alias === undefined ? {} : { resolvedAlias: alias }) });
      if (alias !== undefined) console.log(`${name}@${alias} is ${stored.name}@${stored.version}`);
      printTable([describe(stored, aliases)], true);
    });

  model
    .command('promote <reference>')
    .description('point an alias such as production or staging at NAME@VERSION and record who, when and why')
    .requiredOption('--alias <alias>', 'alias to move, e.g. production')
    .requiredOption('--reason <text>', 'why the alias moves; kept in the promotion history')
    .option('--json', 'print JSON')
    .action(async (reference: string, options: PromoteCommandOptions) => {
      const promotion = await promoteModel(openRegistry(), reference, options);
      if (options.json) return printJson(promotion);
      const from = promotion.previousVersion === null ? 'new alias' : `was ${promotion.previousVersion}`;
      console.log(`${promotion.name}@${promotion.alias} → ${promotion.version} (${from}), by ${promotion.by} at ${promotion.at}`);
    });

  model
    .command('history <name>')
    .description('list the alias promotions of a model, oldest first')
    .option('--json', 'print JSON')
    .action(async (name: string, options: { json?: boolean }) => {
      const promotions = await openRegistry().history(name);
      if (options.json) return printJson(promotions);
      if (promotions.length === 0) return console.log(`No promotions of ${name}. Promote a version with: skynewt model promote ${name}@VERSION --alias production --reason TEXT`);
      printTable(promotions.map((p) => ({ at: p.at, alias: p.alias, version: p.version, previous: p.previousVersion ?? '-', by: p.by, reason: p.reason })));
    });
}
