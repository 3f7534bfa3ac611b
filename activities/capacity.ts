/**
 * The capacity a worker process runs on, read once at start from configuration. On EC2 these
 * values come from the launch template's user data; off EC2 they describe the local machine.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import type { Capacity } from './types';

const LIFECYCLES = ['spot', 'on-demand', 'local'] as const;

export function capacityFromEnv(env: NodeJS.ProcessEnv = process.env): Capacity {
  const lifecycle = env.SKYNEWT_LIFECYCLE ?? 'local';
  if (!(LIFECYCLES as readonly string[]).includes(lifecycle)) {
    throw new Error(`Invalid SKYNEWT_LIFECYCLE ${JSON.stringify(lifecycle)}: expected one of ${LIFECYCLES.join(', ')}.`);
  }
  const rate = Number(env.SKYNEWT_HOURLY_RATE_USD ?? '0');
  if (!Number.isFinite(rate) || rate < 0) {
    throw new Error(`Invalid SKYNEWT_HOURLY_RATE_USD ${JSON.stringify(env.SKYNEWT_HOURLY_RATE_USD)}: expected a price in USD per hour, 0 or more.`);
  }
  return {
    host: env.SKYNEWT_INSTANCE_ID ?? os.hostname(),
    instanceType: env.SKYNEWT_INSTANCE_TYPE ?? 'local',
    availabilityZone: env.SKYNEWT_AVAILABILITY_ZONE ?? 'local',
    lifecycle: lifecycle as Capacity['lifecycle'],
    buildId: env.SKYNEWT_BUILD_ID ?? gitCommit() ?? 'unknown',
    hourlyRateUsd: rate,
  };
}

/** Short commit of the checkout the worker runs from, or null outside a git checkout. */
function gitCommit(): string | null {
  try {
    const root = path.resolve(__dirname, '..');
    return execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    return null;
  }
}
