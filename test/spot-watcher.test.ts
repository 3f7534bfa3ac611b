import { afterEach, describe, expect, it } from 'vitest';
import { capacityFromMetadata } from '../workers/ec2-capacity';
import { InstanceMetadataClient } from '../workers/instance-metadata';
import { SpotWatcher, type SpotNotice } from '../workers/spot-watcher';
import { startFakeImds, type FakeImds } from '../infra/local/fake-imds';

describe('spot watcher', () => {
  let imds: FakeImds | undefined;
  afterEach(async () => {
    await imds?.close();
  });

  it('reports each notice once', async () => {
    imds = await startFakeImds();
    const notices: SpotNotice[] = [];
    const watcher = new SpotWatcher({ metadata: new InstanceMetadataClient(imds.url), onNotice: (notice) => notices.push(notice) });

    await watcher.poll();
    expect(notices).toEqual([]);
    imds.issueRebalance();
    await watcher.poll();
    await watcher.poll();
    expect(notices.map((notice) => notice.kind)).toEqual(['rebalance']);
    imds.issueTermination('stop');
    await watcher.poll();
    await watcher.poll();
    expect(notices.map((notice) => notice.kind)).toEqual(['rebalance', 'termination']);
    expect(notices[1]).toMatchObject({ kind: 'termination', action: 'stop' });
  });

  it('uses one IMDSv2 token for many reads', async () => {
    imds = await startFakeImds();
    const metadata = new InstanceMetadataClient(imds.url);
    await metadata.get('instance-id');
    await metadata.get('instance-type');
    expect(imds.requests.filter((request) => request === 'PUT /latest/api/token')).toHaveLength(1);
    expect(imds.requests.filter((request) => request.startsWith('GET'))).toHaveLength(2);
  });

  it('renews a rejected token', async () => {
    imds = await startFakeImds();
    const metadata = new InstanceMetadataClient(imds.url);
    await metadata.get('instance-id');
    imds.revokeTokens();
    imds.requests.length = 0;
    expect(await metadata.get('instance-id')).toBe('i-0123456789abcdef0');
    expect(imds.requests).toEqual(['GET /latest/meta-data/instance-id', 'PUT /latest/api/token', 'GET /latest/meta-data/instance-id']);
  });

  it('reports failed polls and goes on', async () => {
    const errors: unknown[] = [];
    // Nothing listens on port 9 of 127.0.0.1, so every request fails at once.
    const watcher = new SpotWatcher({ metadata: new InstanceMetadataClient('http://127.0.0.1:9'), onNotice: () => undefined, onError: (err) => errors.push(err) });
    await watcher.poll();
    await watcher.poll();
    expect(errors).toHaveLength(2);
  });

  it('reads capacity from metadata', async () => {
    imds = await startFakeImds({ 'instance-life-cycle': 'on-demand' });
    const capacity = await capacityFromMetadata(new InstanceMetadataClient(imds.url), { SKYNEWT_HOURLY_RATE_USD: '1.006' });
    expect(capacity).toMatchObject({
      host: 'i-0123456789abcdef0',
      instanceType: 'g5.xlarge',
      availabilityZone: 'us-east-1a',
      lifecycle: 'on-demand',
      hourlyRateUsd: 1.006,
    });
  });
});
