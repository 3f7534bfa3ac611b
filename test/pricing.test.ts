import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { EC2Client } from '@aws-sdk/client-ec2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { CostMeter } from '../activities/cost-meter';
import { loadOnDemandPrices, onDemandPrice, regionOfZone } from '../activities/pricing/on-demand';
import { costBetween, FixedPriceFeed, PriceHistory, SharedPriceFeed } from '../activities/pricing/price-feed';
import { fetchSpotPriceHistory, latestSpotPrices, SpotPriceFeed } from '../activities/pricing/spot-feed';
import { createWorkerPrices } from '../activities/pricing/worker-prices';
import type { Capacity } from '../activities/types';
import { tempDir } from './helpers';

const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 0, 1);

function ec2Client(endpoint: string): EC2Client {
  return new EC2Client({ endpoint, region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' }, maxAttempts: 1 });
}

describe('price history', () => {
  const history = new PriceHistory([
    { timestampMs: T0 + HOUR, priceUsd: 0.5 },
    { timestampMs: T0, priceUsd: 0.3 },
    { timestampMs: T0 + 2 * HOUR, priceUsd: 0.4 },
  ]);

  it('returns the latest record at or before t', () => {
    expect(history.priceAt(T0)).toBe(0.3);
    expect(history.priceAt(T0 + HOUR - 1)).toBe(0.3);
    expect(history.priceAt(T0 + HOUR)).toBe(0.5);
    expect(history.priceAt(T0 + 10 * HOUR)).toBe(0.4);
  });

  it('uses the earliest price before the first record', () => {
    expect(history.priceAt(T0 - HOUR)).toBe(0.3);
    expect(new PriceHistory([], 1.006).priceAt(T0)).toBe(1.006);
  });

  it('lists changes strictly inside an interval', () => {
    expect(history.changesBetween(T0, T0 + 3 * HOUR)).toEqual([T0 + HOUR, T0 + 2 * HOUR]);
    expect(history.changesBetween(T0 + HOUR, T0 + 2 * HOUR)).toEqual([]);
    expect(history.changesBetween(T0 - HOUR, T0 + HOUR / 2)).toEqual([T0]);
  });

  it('integrates the price over intervals', () => {
    expect(costBetween(history, T0, T0 + HOUR)).toBeCloseTo(0.3, 12);
    expect(costBetween(history, T0 + HOUR / 2, T0 + 2.5 * HOUR)).toBeCloseTo(0.15 + 0.5 + 0.2, 12);
    expect(costBetween(history, T0 + HOUR, T0 + HOUR)).toBe(0);
  });

  it('replaces a record at the same timestamp', () => {
    const copy = new PriceHistory([{ timestampMs: T0, priceUsd: 0.3 }]);
    copy.add([{ timestampMs: T0, priceUsd: 0.35 }]);
    expect(copy.size).toBe(1);
    expect(copy.priceAt(T0)).toBe(0.35);
  });

  it('rejects a negative price', () => {
    expect(() => new PriceHistory([{ timestampMs: T0, priceUsd: -1 }])).toThrow(/Invalid price record/);
    expect(() => new FixedPriceFeed(-1)).toThrow(/Invalid hourly rate/);
  });
});

describe('cost meter', () => {
  it('charges a fixed rate divided among running shards', () => {
    let now = T0;
    const meter = new CostMeter(3.6, () => now);
    const first = meter.start();
    now += 1000;
    const second = meter.start();
    now += 2000;
    expect(second.stop().costUsd).toBeCloseTo(0.001, 12);
    now += 1000;
    const figures = first.stop();
    expect(figures.seconds).toBe(4);
    expect(figures.costUsd).toBeCloseTo(0.001 + 0.001 + 0.001, 12);
  });

  it('charges a price change from the instant it took effect', () => {
    let now = T0;
    const prices = new PriceHistory([
      { timestampMs: T0 - HOUR, priceUsd: 1 },
      { timestampMs: T0 + 30 * 60_000, priceUsd: 3 },
    ]);
    const meter = new CostMeter(prices, () => now);
    const lease = meter.start();
    now = T0 + HOUR;
    const read = lease.read();
    expect(read.costUsd).toBeCloseTo(0.5 * 1 + 0.5 * 3, 12);
    const other = meter.start();
    now = T0 + 2 * HOUR;
    expect(other.stop().costUsd).toBeCloseTo(1.5, 12);
    expect(lease.stop().costUsd).toBeCloseTo(2 + 1.5, 12);
  });

  it('charges each worker its share of a shared host', () => {
    let now = T0;
    const host = new PriceHistory([
      { timestampMs: T0 - HOUR, priceUsd: 4 },
      { timestampMs: T0 + 30 * 60_000, priceUsd: 8 },
    ]);
    const meter = new CostMeter(new SharedPriceFeed(host, 4), () => now);
    const lease = meter.start();
    now = T0 + HOUR;
    expect(lease.stop().costUsd).toBeCloseTo((0.5 * 4 + 0.5 * 8) / 4, 12);
    expect(() => new SharedPriceFeed(host, 0)).toThrow('Invalid number of workers sharing a host: 0');
  });

  it('charges nothing while no shard runs', () => {
    let now = T0;
    const meter = new CostMeter(new FixedPriceFeed(10), () => now);
    now += HOUR;
    const lease = meter.start();
    now += 360_000;
    expect(lease.stop().costUsd).toBeCloseTo(1, 12);
  });
});

describe('on-demand prices', () => {
  it('finds list prices by zone and type', () => {
    const table = loadOnDemandPrices(null);
    expect(regionOfZone('us-east-1a')).toBe('us-east-1');
    expect(regionOfZone('us-west-2-lax-1a')).toBe('us-west-2');
    expect(regionOfZone('local')).toBeNull();
    expect(onDemandPrice(table, 'us-east-1', 'g5.xlarge')).toBe(1.006);
    expect(onDemandPrice(table, 'us-east-1', 'x99.huge')).toBeNull();
    expect(onDemandPrice(table, null, 'g5.xlarge')).toBeNull();
  });

  it('merges an override file over the table', () => {
    const file = path.join(tempDir('prices'), 'prices.json');
    writeFileSync(file, JSON.stringify({ regions: { 'us-east-1': { 'g5.xlarge': 2.5 }, 'ap-south-1': { 'g6.xlarge': 0.9 } } }));
    const table = loadOnDemandPrices(file);
    expect(onDemandPrice(table, 'us-east-1', 'g5.xlarge')).toBe(2.5);
    expect(onDemandPrice(table, 'us-east-1', 'g4dn.xlarge')).toBe(0.526);
    expect(onDemandPrice(table, 'ap-south-1', 'g6.xlarge')).toBe(0.9);
  });

  it('rejects an invalid override file', () => {
    const file = path.join(tempDir('prices'), 'bad.json');
    writeFileSync(file, JSON.stringify({ regions: { 'us-east-1': { 'g5.xlarge': 'cheap' } } }));
    expect(() => loadOnDemandPrices(file)).toThrow(/Invalid on-demand price "cheap" for g5.xlarge in us-east-1/);
    expect(() => loadOnDemandPrices(path.join(tempDir('prices'), 'missing.json'))).toThrow(/Cannot read on-demand prices/);
  });
});

describe('spot price history from moto', () => {
  it('parses records for one type and zone', async () => {
    const samples = await fetchSpotPriceHistory(ec2Client(inject('motoEndpoint')), {
      instanceTypes: ['g5.xlarge'],
      availabilityZone: 'us-east-1a',
      startTime: new Date(T0),
    });
    expect(samples.length).toBeGreaterThan(0);
    for (const sample of samples) {
      expect(sample.instanceType).toBe('g5.xlarge');
      expect(sample.availabilityZone).toBe('us-east-1a');
      expect(sample.priceUsd).toBeGreaterThan(0);
      expect(Number.isFinite(sample.timestampMs)).toBe(true);
    }
  });

  it('feeds fetched and injected records', async () => {
    const feed = new SpotPriceFeed({ client: ec2Client(inject('motoEndpoint')), instanceType: 'g5.xlarge', availabilityZone: 'us-east-1a' });
    expect(await feed.refresh()).toBeGreaterThan(0);
    // moto's stub history is one record in 2006; injected records model later changes.
    feed.inject([{ timestampMs: T0, priceUsd: 0.4 }, { timestampMs: T0 + HOUR, priceUsd: 0.6 }]);
    expect(feed.priceAt(T0 + HOUR / 2)).toBe(0.4);
    expect(feed.priceAt(T0 + 2 * HOUR)).toBe(0.6);
    expect(costBetween(feed, T0, T0 + 2 * HOUR)).toBeCloseTo(1.0, 12);
  });

  it('returns the cheapest zone per type', async () => {
    const latest = await latestSpotPrices(ec2Client(inject('motoEndpoint')), ['g5.xlarge', 'g4dn.xlarge']);
    expect(latest.get('g5.xlarge')?.availabilityZone).toMatch(/^us-east-1[a-z]$/);
    expect(latest.get('g4dn.xlarge')?.priceUsd).toBeGreaterThan(0);
  });
});

/** Starts a loopback EC2 endpoint that serves DescribeSpotPriceHistory in pages of two records. */
function startPagedEc2(records: Array<{ zone: string; price: string; time: string }>) {
  const requests: URLSearchParams[] = [];
  const server = http.createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => {
      const params = new URLSearchParams(body);
      requests.push(params);
      const start = Number(params.get('NextToken') ?? '0');
      const page = records.slice(start, start + 2);
      const next = start + 2 < records.length ? `<nextToken>${start + 2}</nextToken>` : '';
      const items = page
        .map((record) => `<item><availabilityZone>${record.zone}</availabilityZone><instanceType>g5.xlarge</instanceType><productDescription>Linux/UNIX</productDescription><spotPrice>${record.price}</spotPrice><timestamp>${record.time}</timestamp></item>`)
        .join('');
      response.writeHead(200, { 'content-type': 'text/xml' });
      response.end(`<DescribeSpotPriceHistoryResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><spotPriceHistorySet>${items}</spotPriceHistorySet>${next}</DescribeSpotPriceHistoryResponse>`);
    });
  });
  return { server, requests };
}

describe('spot price pagination', () => {
  const records = [
    { zone: 'us-east-1a', price: '0.4100', time: '2026-01-01T03:00:00.000Z' },
    { zone: 'us-east-1b', price: '0.3900', time: '2026-01-01T02:30:00.000Z' },
    { zone: 'us-east-1a', price: '0.4500', time: '2026-01-01T02:00:00.000Z' },
    { zone: 'us-east-1a', price: '0.4300', time: '2026-01-01T01:00:00.000Z' },
    { zone: 'us-east-1a', price: '0.4000', time: '2026-01-01T00:00:00.000Z' },
  ];
  const fake = startPagedEc2(records);
  let endpoint: string;

  beforeAll(async () => {
    await new Promise<void>((resolve) => fake.server.listen(0, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${(fake.server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => fake.server.close(() => resolve())));

  it('follows NextToken across pages', async () => {
    fake.requests.length = 0;
    const samples = await fetchSpotPriceHistory(ec2Client(endpoint), {
      instanceTypes: ['g5.xlarge'],
      availabilityZone: 'us-east-1a',
      startTime: new Date(T0),
      pageSize: 2,
    });
    expect(fake.requests).toHaveLength(3);
    expect(fake.requests.map((params) => params.get('NextToken'))).toEqual([null, '2', '4']);
    const first = fake.requests[0];
    expect(first.get('Action')).toBe('DescribeSpotPriceHistory');
    expect(first.get('InstanceType.1')).toBe('g5.xlarge');
    expect(first.get('ProductDescription.1')).toBe('Linux/UNIX');
    expect(first.get('AvailabilityZone')).toBe('us-east-1a');
    expect(first.get('MaxResults')).toBe('2');
    expect(samples.map((sample) => sample.priceUsd)).toEqual([0.4, 0.43, 0.45, 0.41]);
  });

  it('prices a worker from the paged history', async () => {
    const capacity: Capacity = { host: 'i-1', instanceType: 'g5.xlarge', availabilityZone: 'us-east-1a', lifecycle: 'spot', buildId: 'test', hourlyRateUsd: 0 };
    const prices = await createWorkerPrices({
      capacity,
      ec2: true,
      imdsUrl: 'http://127.0.0.1:1',
      spotPriceRefreshMs: 60_000,
      onDemandPricesFile: null,
      env: {},
      ec2Client: ec2Client(endpoint),
    });
    try {
      expect(prices.source).toBe('spot-price-history');
      expect(prices.feed.priceAt(Date.parse('2026-01-01T01:30:00Z'))).toBe(0.43);
      expect(prices.capacity.hourlyRateUsd).toBe(0.41);
    } finally {
      prices.stop();
    }
  });
});

describe('worker price choice', () => {
  const capacity: Capacity = { host: 'i-1', instanceType: 'g5.xlarge', availabilityZone: 'us-east-1a', lifecycle: 'spot', buildId: 'test', hourlyRateUsd: 0.7 };
  const choose = (overrides: Partial<Parameters<typeof createWorkerPrices>[0]>) =>
    createWorkerPrices({ capacity, ec2: true, imdsUrl: 'http://169.254.169.254', spotPriceRefreshMs: 60_000, onDemandPricesFile: null, env: {}, ...overrides });

  it('uses the configured rate off EC2 or when set', async () => {
    expect((await choose({ ec2: false })).feed.priceAt(T0)).toBe(0.7);
    const pinned = await choose({ env: { SKYNEWT_HOURLY_RATE_USD: '0.7' } });
    expect(pinned.source).toBe('configured');
  });

  it('uses the list price for on-demand hosts', async () => {
    const prices = await choose({ capacity: { ...capacity, lifecycle: 'on-demand' } });
    expect(prices.source).toBe('on-demand-table');
    expect(prices.capacity.hourlyRateUsd).toBe(1.006);
  });

  it('never calls EC2 from a simulated host', async () => {
    const warnings: string[] = [];
    const prices = await choose({ imdsUrl: 'http://127.0.0.1:9', warn: (message) => warnings.push(message) });
    expect(prices.source).toBe('on-demand-table');
    expect(prices.feed.priceAt(T0)).toBe(1.006);
    expect(warnings.join('\n')).toContain('Simulated EC2 host');
  });
});
