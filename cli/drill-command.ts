/**
 * `skynewt drill`: the chaos drill on a private local stack; see infra/local/chaos-drill.ts.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { runChaosDrill } from '../infra/local/chaos-drill';
import type { Spread } from '../infra/local/drill-report';
import { loadConfig } from '../workers/config';
import { printJson, printTable, UsageError } from './output';

interface DrillFlags {
  images: string;
  workers: string;
  shardConcurrency: string;
  notices: string;
  kills: string;
  shardSize: string;
  checkpointEvery: string;
  window: string;
  timeout: string;
  seed: string;
  json?: boolean;
}

function count(flag: string, value: string, min: number, max: number): number {
  const number = Number(value);
  if (!Number.isInteger(number) || number < min || number > max) {
    throw new UsageError(`Invalid ${flag} ${JSON.stringify(value)}: expected a whole number from ${min} to ${max}.`);
  }
  return number;
}

function seconds(value: Spread): string {
  return value.count === 0 ? '-' : `median ${value.medianSeconds} s, max ${value.maxSeconds} s (${value.count})`;
}

export function addDrillCommand(program: Command): void {
  program
    .command('drill')
    .description('run a batch on a private local stack while spot notices and SIGKILLs hit its inference workers, then print the figures')
    .option('--images <n>', 'images in the batch', '200')
    .option('--workers <n>', 'inference workers kept running', '3')
    .option('--shard-concurrency <n>', 'shards each worker runs at once', '2')
    .option('--notices <n>', 'spot termination notices to inject', '2')
    .option('--kills <n>', 'SIGKILLs to inject', '2')
    .option('--shard-size <n>', 'images per shard', '50')
    .option('--checkpoint-every <n>', 'images between checkpoints', '10')
    .option('--window <seconds>', 'events happen at random times within this many seconds of the start', '60')
    .option('--timeout <seconds>', 'give up when the batch has not ended after this many seconds', '900')
    .option('--seed <n>', 'seed of the random event schedule', String(Date.now() % 100_000))
    .option('--json', 'print JSON')
    .action(async (flags: DrillFlags) => {
      const report = await runChaosDrill({
        images: count('--images', flags.images, 1, 100_000),
        workers: count('--workers', flags.workers, 1, 16),
        shardConcurrency: count('--shard-concurrency', flags.shardConcurrency, 1, 16),
        notices: count('--notices', flags.notices, 0, 100),
        kills: count('--kills', flags.kills, 0, 100),
        shardSize: count('--shard-size', flags.shardSize, 1, 5000),
        checkpointEvery: count('--checkpoint-every', flags.checkpointEvery, 1, 5000),
        windowSeconds: count('--window', flags.window, 2, 3600),
        timeoutSeconds: count('--timeout', flags.timeout, 10, 86_400),
        seed: count('--seed', flags.seed, 0, 2 ** 31),
        samplesDir: path.join(loadConfig().home, 'samples'),
        log: flags.json ? undefined : (message) => console.error(message),
      });
      if (flags.json) return printJson({ ...report, seed: Number(flags.seed) });
      printTable([{
        batch: `${report.batchId} (${report.status}, ${report.batchSeconds} s, seed ${flags.seed})`,
        events: `${report.notices} spot notices, ${report.kills} SIGKILLs, ${report.attempts} shard attempts`,
        images: report.images,
        duplicates: report.duplicates,
        missing: report.missing,
        'processed more than once': report.processedMoreThanOnce,
        'redone after a notice': report.redoneAfterNotice,
        'redone after a kill (max)': report.redoneAfterKillMax,
        'notice to worker exit': seconds(report.noticeToExit),
        'notice to resume': seconds(report.noticeToResume),
        'kill to resume': seconds(report.killToResume),
        'wasted worker-seconds': report.wastedWorkerSeconds,
      }], true);
      if (report.duplicates > 0 || report.missing > 0) process.exitCode = 2;
    });
}
