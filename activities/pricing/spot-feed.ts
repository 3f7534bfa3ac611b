/**
 * Spot prices from EC2 DescribeSpotPriceHistory. A SpotPriceFeed keeps the history of one instance
 * type in one availability zone, refreshed on a schedule, and returns the price in force at any
 * instant it has fetched.
 */
import { EC2Client, paginateDescribeSpotPriceHistory, type _InstanceType } from '@aws-sdk/client-ec2';
import { PriceHistory, type PriceFeed, type PriceRecord } from './price-feed';

/** Spot prices are requested for this product only: Linux on EC2-VPC. */
export const SPOT_PRODUCT_DESCRIPTIONS = ['Linux/UNIX'];
/** Default period between refreshes of a SpotPriceFeed: 5 minutes. */
export const DEFAULT_SPOT_REFRESH_MS = 300_000;

/** One record of the EC2 spot price history. */
export interface SpotPriceSample extends PriceRecord {
  instanceType: string;
  availabilityZone: string;
}

export interface SpotPriceQuery {
  instanceTypes: string[];
  /** Limits the result to one zone; without it every zone of the client's region is returned. */
  availabilityZone?: string;
  /** EC2 also returns the price in force at this instant, so the history covers it. */
  startTime: Date;
  endTime?: Date;
  /** Records per page (MaxResults). The SDK's paginator follows NextToken across pages. */
  pageSize?: number;
}

/** Fetches every page of the spot price history that matches the query, oldest first. */
export async function fetchSpotPriceHistory(client: EC2Client, query: SpotPriceQuery): Promise<SpotPriceSample[]> {
  const samples: SpotPriceSample[] = [];
  const pages = paginateDescribeSpotPriceHistory(
    { client, pageSize: query.pageSize },
    {
      InstanceTypes: query.instanceTypes as _InstanceType[],
      ProductDescriptions: SPOT_PRODUCT_DESCRIPTIONS,
      AvailabilityZone: query.availabilityZone,
      StartTime: query.startTime,
      EndTime: query.endTime,
    },
  );
  for await (const page of pages) {
    for (const entry of page.SpotPriceHistory ?? []) {
      const priceUsd = Number(entry.SpotPrice);
      if (!entry.Timestamp || !entry.InstanceType || !entry.AvailabilityZone || !Number.isFinite(priceUsd)) continue;
      // Some EC2 implementations ignore the AvailabilityZone parameter: moto 5 filters only by
      // the `availability-zone` filter (moto/ec2/responses/spot_instances.py).
      if (query.availabilityZone !== undefined && entry.AvailabilityZone !== query.availabilityZone) continue;
      samples.push({
        timestampMs: entry.Timestamp.getTime(),
        priceUsd,
        instanceType: entry.InstanceType,
        availabilityZone: entry.AvailabilityZone,
      });
    }
  }
  return samples.sort((a, b) => a.timestampMs - b.timestampMs);
}

/**
 * Returns the latest spot price of each instance type in the cheapest zone of the client's
 * region, or no entry for a type without any price.
 */
export async function latestSpotPrices(client: EC2Client, instanceTypes: string[], now = new Date()): Promise<Map<string, SpotPriceSample>> {
  const samples = await fetchSpotPriceHistory(client, { instanceTypes, startTime: now });
  const latestByZone = new Map<string, SpotPriceSample>();
  for (const sample of samples) latestByZone.set(`${sample.instanceType} ${sample.availabilityZone}`, sample);
  const cheapest = new Map<string, SpotPriceSample>();
  for (const sample of latestByZone.values()) {
    const best = cheapest.get(sample.instanceType);
    if (best === undefined || sample.priceUsd < best.priceUsd) cheapest.set(sample.instanceType, sample);
  }
  return cheapest;
}

export interface SpotPriceFeedOptions {
  client: EC2Client;
  instanceType: string;
  availabilityZone: string;
  /** Period between refreshes in milliseconds; default 5 minutes. */
  refreshMs?: number;
  /** Price in USD per hour used until the first record arrives, e.g. the on-demand price. */
  fallbackUsd?: number;
  /** Records to start from instead of, or before, the first fetch; tests inject known prices here. */
  history?: PriceRecord[];
  /** Called with every failed refresh; the feed keeps the prices it has. */
  onRefreshError?: (err: unknown) => void;
  now?: () => number;
}

/** The spot price history of one instance type in one availability zone. */
export class SpotPriceFeed implements PriceFeed {
  readonly instanceType: string;
  readonly availabilityZone: string;
  private readonly history: PriceHistory;
  private readonly now: () => number;
  private readonly startedMs: number;
  /** Start of the next fetch; each fetch starts where the last one ended. */
  private fetchFromMs: number;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly options: SpotPriceFeedOptions) {
    this.instanceType = options.instanceType;
    this.availabilityZone = options.availabilityZone;
    this.now = options.now ?? Date.now;
    this.history = new PriceHistory(options.history ?? [], options.fallbackUsd ?? 0);
    this.startedMs = this.now();
    // The first fetch starts an hour back, so the price in force when the worker started is known.
    this.fetchFromMs = this.startedMs - 3_600_000;
  }

  /** Fetches the history once, then refreshes it every `refreshMs` until `stop()`. */
  async start(): Promise<void> {
    await this.refresh().catch((err: unknown) => this.options.onRefreshError?.(err));
    const refreshMs = this.options.refreshMs ?? DEFAULT_SPOT_REFRESH_MS;
    this.timer = setInterval(() => {
      this.refresh().catch((err: unknown) => this.options.onRefreshError?.(err));
    }, refreshMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Fetches the records since the last fetch and merges them; returns how many arrived. */
  async refresh(): Promise<number> {
    const fetchedAtMs = this.now();
    const samples = await fetchSpotPriceHistory(this.options.client, {
      instanceTypes: [this.instanceType],
      availabilityZone: this.availabilityZone,
      startTime: new Date(this.fetchFromMs),
    });
    this.history.add(samples.map(({ timestampMs, priceUsd }) => ({ timestampMs, priceUsd })));
    this.fetchFromMs = fetchedAtMs;
    return samples.length;
  }

  /** Adds known records, as a fetch would. */
  inject(records: PriceRecord[]): void {
    this.history.add(records);
  }

  /** Number of records held. */
  get size(): number {
    return this.history.size;
  }

  priceAt(epochMs: number): number {
    return this.history.priceAt(epochMs);
  }

  changesBetween(startMs: number, endMs: number): number[] {
    return this.history.changesBetween(startMs, endMs);
  }
}
