import { describe, expect, inject, it } from 'vitest';
import { runChaosDrill } from '../infra/local/chaos-drill';

describe('chaos drill', () => {
  it('loses and duplicates nothing', async () => {
    const report = await runChaosDrill({
      images: 40,
      workers: 2,
      shardConcurrency: 2,
      notices: 1,
      kills: 1,
      shardSize: 10,
      checkpointEvery: 5,
      windowSeconds: 4,
      timeoutSeconds: 170,
      seed: 11,
      samplesDir: inject('samplesDir'),
      workflowBundle: { codePath: inject('workflowBundlePath') },
    });

    expect(report.status).toBe('completed');
    expect(report.notices).toBe(1);
    expect(report.kills).toBe(1);
    expect(report.duplicates).toBe(0);
    expect(report.missing).toBe(0);
    expect(report.redoneAfterNotice).toBe(0);
    expect(report.redoneAfterKillMax).toBeLessThanOrEqual(5);
    expect(report.noticeToExit.maxSeconds).toBeLessThan(30);
    if (report.noticeToResume.maxSeconds !== null) expect(report.noticeToResume.maxSeconds).toBeLessThan(10);
  });
});
