/**
 * Worker and CLI configuration, read from the environment in one place. Every variable is
 * optional; the defaults run everything on this machine under `.skynewt/`.
 */
import os from 'node:os';
import path from 'node:path';
import { parseExecutionProviders } from '../activities/inference/execution-providers';
import { skynewtHome } from '../activities/local-home';
import { toFileUri } from '../activities/storage/uri';
import { loadPayloadKeyring, type PayloadKeyring } from '../activities/codec/payload-keys';
import { GPU_SPOT_TASK_QUEUE, ORCHESTRATOR_TASK_QUEUE } from '../workflows/names';

export interface SkyNewtConfig {
  /** Temporal frontend, `host:port`. SKYNEWT_TEMPORAL_ADDRESS, default 127.0.0.1:7233. */
  address: string;
  /** SKYNEWT_NAMESPACE, default `default`. */
  namespace: string;
  /** Local state folder (registry, results, dev server database, logs). SKYNEWT_HOME, default the nearest .skynewt above the current folder. */
  home: string;
  /** Output root for batches that give none, as a URI. SKYNEWT_RESULTS, default file://<home>/results. */
  resultsRoot: string;
  /** Task queue the orchestrator worker polls. SKYNEWT_ORCHESTRATOR_TASK_QUEUE, default skynewt-orchestrator. */
  orchestratorTaskQueue: string;
  /** Task queue the inference worker polls. SKYNEWT_TASK_QUEUE, default skynewt-gpu-spot. */
  inferenceTaskQueue: string;
  /** Shards one inference worker runs at once. SKYNEWT_SHARD_CONCURRENCY, default 1. */
  shardConcurrency: number;
  /**
   * Inference workers sharing this host, each charged 1/N of the host's price.
   * SKYNEWT_WORKERS_ON_HOST, default 1; `skynewt up --inference-workers` sets it.
   */
  workersOnHost: number;
  /** Images downloaded and decoded ahead of inference per shard. SKYNEWT_PREFETCH, default 4. */
  prefetchDepth: number;
  /**
   * onnxruntime execution providers for every model, in order of preference, e.g. `cuda,cpu`.
   * SKYNEWT_EXECUTION_PROVIDER (cpu, cuda, tensorrt). Null when unset: each model's registered
   * default applies, else `cuda,cpu` on a host with a visible NVIDIA GPU and the CUDA variant of
   * onnxruntime-node, else `cpu`.
   */
  executionProviders: string[] | null;
  /** Images per model call, for models with a dynamic batch dimension. SKYNEWT_INFERENCE_BATCH, default 1. */
  inferenceBatch: number;
  /** onnxruntime intra-op threads. SKYNEWT_INTRA_OP_THREADS, default the number of CPU cores. */
  intraOpThreads: number;
  /** Models (`name` or `name@version`) the inference worker loads before polling. SKYNEWT_MODELS, comma-separated. */
  prewarmModels: string[];
  /** Whether the worker runs on EC2 and reads instance metadata and spot notices. SKYNEWT_EC2=true. */
  ec2: boolean;
  /** Instance metadata base URL, used only when `ec2` is set. SKYNEWT_IMDS_URL, default http://169.254.169.254. */
  imdsUrl: string;
  /** Spot notice poll period in milliseconds. SKYNEWT_SPOT_POLL_MS, default 5000. */
  spotPollMs: number;
  /** Temporal Web UI base URL, for links. SKYNEWT_UI_URL, default http://127.0.0.1:8233. */
  uiUrl: string;
  /** Spot price history refresh period in milliseconds, used only when `ec2` is set. SKYNEWT_SPOT_PRICE_REFRESH_MS, default 300000. */
  spotPriceRefreshMs: number;
  /** JSON file overriding the shipped on-demand prices. SKYNEWT_ON_DEMAND_PRICES, default none. */
  onDemandPricesFile: string | null;
  /**
   * Keys for payload encryption, or null when it is off (the default). SKYNEWT_PAYLOAD_KEY or
   * SKYNEWT_PAYLOAD_KEY_FILE, SKYNEWT_PAYLOAD_KEY_ID, SKYNEWT_PAYLOAD_KEYS_FILE; see `loadPayloadKeyring`.
   */
  payloadKeyring: PayloadKeyring | null;
  /** Bearer token that `skynewt codec-server` requires. SKYNEWT_CODEC_TOKEN, default none. */
  codecToken: string | null;
}

function positiveInteger(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  // Digits only, so that Number() does not accept forms such as 0x2, 1e3 or " 2 ".
  const value = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`Invalid ${name} ${JSON.stringify(raw)}: expected a whole number of 1 or more.`);
  }
  return value;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): SkyNewtConfig {
  const providers = env.SKYNEWT_EXECUTION_PROVIDER ? parseExecutionProviders(env.SKYNEWT_EXECUTION_PROVIDER, 'SKYNEWT_EXECUTION_PROVIDER') : null;
  const home = skynewtHome(env);
  return {
    address: env.SKYNEWT_TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
    namespace: env.SKYNEWT_NAMESPACE ?? 'default',
    home,
    resultsRoot: env.SKYNEWT_RESULTS ?? toFileUri(path.join(home, 'results')),
    orchestratorTaskQueue: env.SKYNEWT_ORCHESTRATOR_TASK_QUEUE ?? ORCHESTRATOR_TASK_QUEUE,
    inferenceTaskQueue: env.SKYNEWT_TASK_QUEUE ?? GPU_SPOT_TASK_QUEUE,
    shardConcurrency: positiveInteger(env, 'SKYNEWT_SHARD_CONCURRENCY', 1),
    workersOnHost: positiveInteger(env, 'SKYNEWT_WORKERS_ON_HOST', 1),
    executionProviders: providers,
    inferenceBatch: positiveInteger(env, 'SKYNEWT_INFERENCE_BATCH', 1),
    // Prefetching hides storage latency (S3 GETs) on any host and decode time behind an
    // accelerator. On 2 CPU cores its effect measured within run-to-run noise (docs/benchmarks.md).
    prefetchDepth: positiveInteger(env, 'SKYNEWT_PREFETCH', 4),
    intraOpThreads: positiveInteger(env, 'SKYNEWT_INTRA_OP_THREADS', os.availableParallelism()),
    prewarmModels: (env.SKYNEWT_MODELS ?? '').split(',').map((model) => model.trim()).filter(Boolean),
    ec2: env.SKYNEWT_EC2 === 'true',
    imdsUrl: env.SKYNEWT_IMDS_URL ?? 'http://169.254.169.254',
    spotPollMs: positiveInteger(env, 'SKYNEWT_SPOT_POLL_MS', 5000),
    uiUrl: env.SKYNEWT_UI_URL ?? 'http://127.0.0.1:8233',
    spotPriceRefreshMs: positiveInteger(env, 'SKYNEWT_SPOT_PRICE_REFRESH_MS', 300_000),
    onDemandPricesFile: env.SKYNEWT_ON_DEMAND_PRICES || null,
    payloadKeyring: loadPayloadKeyring(env),
    codecToken: env.SKYNEWT_CODEC_TOKEN || null,
  };
}
