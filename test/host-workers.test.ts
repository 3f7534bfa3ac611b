import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseExecutionProviders, visibleGpuCount } from '../activities/inference/execution-providers';
import { planInferenceWorkers } from '../workers/host-plan';
import { loadConfig } from '../workers/config';
import { tempDir } from './helpers';

/** Creates a /proc tree whose NVIDIA driver lists `gpus` devices. */
function procWithGpus(gpus: number): string {
  const root = tempDir('proc');
  for (let i = 0; i < gpus; i++) mkdirSync(path.join(root, 'driver', 'nvidia', 'gpus', `0000:0${i}:00.0`), { recursive: true });
  return root;
}

describe('execution providers', () => {
  it('parses an ordered list', () => {
    expect(parseExecutionProviders(' CUDA, cpu ', '--execution-provider')).toEqual(['cuda', 'cpu']);
  });

  it.each([
    ['rocm', 'rocm is not one of cpu, cuda, tensorrt'],
    [' , ', 'name at least one of cpu, cuda, tensorrt'],
  ])('rejects %j naming the source', (raw, message) => {
    expect(() => parseExecutionProviders(raw, '--execution-provider')).toThrow(`Invalid --execution-provider ${JSON.stringify(raw)}: ${message}`);
  });

  it('leaves the worker list unset by default', () => {
    expect(loadConfig({}).executionProviders).toBeNull();
    expect(loadConfig({ SKYNEWT_EXECUTION_PROVIDER: 'tensorrt,cuda,cpu' }).executionProviders).toEqual(['tensorrt', 'cuda', 'cpu']);
  });

  it.each([
    [0, undefined, 0],
    [2, undefined, 2],
    [4, '1,3', 2],
    [4, '0,-1,2', 1],
    [4, '-1', 0],
    [4, '', 0],
    [1, '0,1,2', 1],
  ])('counts %i installed GPUs with CUDA_VISIBLE_DEVICES=%j as %i', (installed, visible, expected) => {
    const env = visible === undefined ? {} : { CUDA_VISIBLE_DEVICES: visible };
    expect(visibleGpuCount(env, procWithGpus(installed))).toBe(expected);
  });

  it('counts no GPUs without the NVIDIA driver', () => {
    expect(visibleGpuCount({}, tempDir('proc-empty'))).toBe(0);
  });
});

describe('worker configuration', () => {
  it.each(['0', '0x2', '1e3', ' 2', '-1'])('rejects SKYNEWT_SHARD_CONCURRENCY=%j', (raw) => {
    expect(() => loadConfig({ SKYNEWT_SHARD_CONCURRENCY: raw })).toThrow(`Invalid SKYNEWT_SHARD_CONCURRENCY ${JSON.stringify(raw)}: expected a whole number of 1 or more.`);
  });
});

describe('inference workers per host', () => {
  it('runs one worker with every core on a CPU host', () => {
    expect(planInferenceWorkers({ gpus: 0, cores: 8, env: {} })).toEqual([{ name: 'inference', env: { SKYNEWT_WORKERS_ON_HOST: '1', SKYNEWT_INTRA_OP_THREADS: '8' } }]);
  });

  it('splits the cores between CPU workers', () => {
    const plan = planInferenceWorkers({ workers: 3, gpus: 0, cores: 8, env: {} });
    expect(plan.map((worker) => worker.name)).toEqual(['inference-1', 'inference-2', 'inference-3']);
    expect(plan.map((worker) => worker.env.SKYNEWT_INTRA_OP_THREADS)).toEqual(['2', '2', '2']);
    expect(plan.every((worker) => worker.env.SKYNEWT_WORKERS_ON_HOST === '3')).toBe(true);
    expect(plan.every((worker) => worker.env.CUDA_VISIBLE_DEVICES === undefined)).toBe(true);
  });

  it('gives each GPU its own worker', () => {
    const plan = planInferenceWorkers({ gpus: 4, cores: 16, env: {} });
    expect(plan.map((worker) => worker.env.CUDA_VISIBLE_DEVICES)).toEqual(['0', '1', '2', '3']);
    expect(plan.map((worker) => worker.env.SKYNEWT_INTRA_OP_THREADS)).toEqual(['4', '4', '4', '4']);
  });

  it('maps workers onto an inherited device list', () => {
    const plan = planInferenceWorkers({ workers: 4, gpus: 2, cores: 2, env: { CUDA_VISIBLE_DEVICES: '5,7', SKYNEWT_INTRA_OP_THREADS: '3' } });
    expect(plan.map((worker) => worker.env.CUDA_VISIBLE_DEVICES)).toEqual(['5', '7', '5', '7']);
    // A thread count the caller set is inherited, not overridden.
    expect(plan.every((worker) => worker.env.SKYNEWT_INTRA_OP_THREADS === undefined)).toBe(true);
  });

  it('gives at least one thread per worker', () => {
    expect(planInferenceWorkers({ workers: 4, gpus: 0, cores: 2, env: {} })[0].env.SKYNEWT_INTRA_OP_THREADS).toBe('1');
  });

  it('rejects zero workers', () => {
    expect(() => planInferenceWorkers({ workers: 0, gpus: 0, cores: 2, env: {} })).toThrow('Invalid number of inference workers 0');
  });
});
