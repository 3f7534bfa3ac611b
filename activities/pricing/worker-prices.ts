/**
 * Chooses the price feed an inference worker charges its shards with:
 * - SKYNEWT_HOURLY_RATE_USD set: that rate, on EC2 or off it;
 * - off EC2: the configured rate, 0 by default;
 * - on EC2 with spot capacity: the spot price history of its instance type and zone;
 * - on EC2 otherwise: the on-demand price of its instance type in its region.
 * A worker whose metadata service is not the EC2 one (a fake, as in the chaos drill) never
 * calls the EC2 API unless an EC2 endpoint is configured, and charges the on-demand price.
 */
import { EC2Client } from '@aws-sdk/client-ec2';
import type { Capacity } from '../types';
import { FixedPriceFeed, type PriceFeed } from './price-feed';
import { loadOnDemandPrices, onDemandPrice, regionOfZone } from './on-demand';
import { SpotPriceFeed } from './spot-feed';

/** Host of the EC2 instance metadata service. */
const EC2_METADATA_HOST = '169.254.169.254';

export type PriceSource = 'configured' | 'spot-price-history' | 'on-demand-table';

export interface WorkerPrices {
  feed: PriceFeed;
  source: PriceSource;
  /** The capacity with `hourlyRateUsd` set to the price in force when the worker started. */
  capacity: Capacity;
  /** Stops refreshing the spot price history, if any. */
  stop(): void;
}

export interface WorkerPriceOptions {
  capacity: Capacity;
  /** Whether the worker runs on EC2 (SKYNEWT_EC2=true). */
  ec2: boolean;
  /** Instance metadata base URL; any other than EC2's own marks a simulated host. */
  imdsUrl: string;
  /** Spot price refresh period in milliseconds. */
  spotPriceRefreshMs: number;
  /** JSON file overriding the shipped on-demand prices, or null. */
  onDemandPricesFile: string | null;
  env?: NodeJS.ProcessEnv;
  /** EC2 client for the spot price history; by default one from the SDK's usual environment. */
  ec2Client?: EC2Client;
  /** Receives problems that leave the worker running with a less exact price. */
  warn?: (message: string, fields: Record<string, unknown>) => void;
}

/**
 * Creates an EC2 client from the SDK's usual environment, with the region and endpoint set
 * explicitly: AWS_REGION, else the region of `availabilityZone`, else us-east-1, and
 * AWS_ENDPOINT_URL_EC2 or AWS_ENDPOINT_URL where set.
 */
export function createEc2Client(env: NodeJS.ProcessEnv = process.env, availabilityZone?: string): EC2Client {
  const region = env.AWS_REGION || (availabilityZone ? regionOfZone(availabilityZone) : null) || 'us-east-1';
  const endpoint = env.AWS_ENDPOINT_URL_EC2 || env.AWS_ENDPOINT_URL || undefined;
  return new EC2Client({ region, endpoint });
}

export async function createWorkerPrices(options: WorkerPriceOptions): Promise<WorkerPrices> {
  const env = options.env ?? process.env;
  const warn = options.warn ?? (() => undefined);
  const { capacity } = options;
  const fixed = (feed: FixedPriceFeed, source: PriceSource): WorkerPrices => ({
    feed,
    source,
    capacity: { ...capacity, hourlyRateUsd: feed.hourlyRateUsd },
    stop: () => undefined,
  });

  if ((env.SKYNEWT_HOURLY_RATE_USD ?? '') !== '' || !options.ec2) {
    return fixed(new FixedPriceFeed(capacity.hourlyRateUsd), 'configured');
  }

  const region = regionOfZone(capacity.availabilityZone);
  const listPrice = onDemandPrice(loadOnDemandPrices(options.onDemandPricesFile), region, capacity.instanceType);
  if (listPrice === null) {
    warn('No on-demand price for this instance type and region; set SKYNEWT_ON_DEMAND_PRICES or SKYNEWT_HOURLY_RATE_USD', {
      instanceType: capacity.instanceType,
      region,
    });
  }
  if (capacity.lifecycle !== 'spot') {
    return fixed(new FixedPriceFeed(listPrice ?? 0), 'on-demand-table');
  }
  const simulated = new URL(options.imdsUrl).host !== EC2_METADATA_HOST;
  const endpointConfigured = Boolean(env.AWS_ENDPOINT_URL_EC2 || env.AWS_ENDPOINT_URL);
  if (simulated && !endpointConfigured && options.ec2Client === undefined) {
    warn('Simulated EC2 host (SKYNEWT_IMDS_URL is not the EC2 metadata service) and no EC2 endpoint set; charging the on-demand price', {
      imdsUrl: options.imdsUrl,
    });
    return fixed(new FixedPriceFeed(listPrice ?? 0), 'on-demand-table');
  }

  // Until the first record arrives the on-demand price applies. It is the default maximum price
  // of a spot request, so it bounds the spot price unless a higher maximum was set.
  const spot = new SpotPriceFeed({
    client: options.ec2Client ?? createEc2Client(env, capacity.availabilityZone),
    instanceType: capacity.instanceType,
    availabilityZone: capacity.availabilityZone,
    refreshMs: options.spotPriceRefreshMs,
    fallbackUsd: listPrice ?? 0,
    onRefreshError: (err) => warn('Spot price refresh failed; keeping the prices already fetched', { error: String(err) }),
  });
  await spot.start();
  if (spot.size === 0) {
    warn('No spot price found; charging the on-demand price until one arrives', { instanceType: capacity.instanceType, zone: capacity.availabilityZone });
  }
  return {
    feed: spot,
    source: 'spot-price-history',
    capacity: { ...capacity, hourlyRateUsd: spot.priceAt(Date.now()) },
    stop: () => spot.stop(),
  };
}
