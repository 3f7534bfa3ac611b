/**
 * On-demand prices: the list-price table shipped in on-demand-prices.json, merged with an
 * optional override file named by SKYNEWT_ON_DEMAND_PRICES that has the same shape.
 */
import { readFileSync } from 'node:fs';
import shipped from './on-demand-prices.json';

/** USD per hour by region, then by instance type. */
export type OnDemandPrices = Record<string, Record<string, number>>;

/** Returns the shipped table merged with the override file, whose entries win. */
export function loadOnDemandPrices(overrideFile: string | null = process.env.SKYNEWT_ON_DEMAND_PRICES || null): OnDemandPrices {
  const table = cloneTable(shipped.regions);
  if (overrideFile === null) return table;

  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(overrideFile, 'utf8'));
  } catch (err) {
    throw new Error(`Cannot read on-demand prices from ${overrideFile} (SKYNEWT_ON_DEMAND_PRICES): ${(err as Error).message}`);
  }
  const regions = (parsed as { regions?: unknown } | null)?.regions;
  if (typeof regions !== 'object' || regions === null) {
    throw new Error(`Invalid on-demand prices in ${overrideFile}: expected {"regions": {"us-east-1": {"g5.xlarge": 1.006}}}.`);
  }
  for (const [region, prices] of Object.entries(regions as Record<string, unknown>)) {
    if (typeof prices !== 'object' || prices === null) {
      throw new Error(`Invalid on-demand prices in ${overrideFile}: region ${region} must map instance types to USD per hour.`);
    }
    for (const [instanceType, price] of Object.entries(prices as Record<string, unknown>)) {
      if (typeof price !== 'number' || !Number.isFinite(price) || price < 0) {
        throw new Error(`Invalid on-demand price ${JSON.stringify(price)} for ${instanceType} in ${region} in ${overrideFile}: expected USD per hour, 0 or more.`);
      }
      (table[region] ??= {})[instanceType] = price;
    }
  }
  return table;
}

/**
 * Returns the region of an availability zone name, e.g. `us-east-1` for `us-east-1a` and
 * `us-west-2` for the local zone `us-west-2-lax-1a`, or null for a name that is no zone (`local`).
 */
export function regionOfZone(availabilityZone: string): string | null {
  return /^([a-z]{2}(?:-[a-z]+)+-\d+)(?:[a-z]|-)/.exec(availabilityZone)?.[1] ?? null;
}

/** Returns the on-demand price in USD per hour, or null when the table has none. */
export function onDemandPrice(table: OnDemandPrices, region: string | null, instanceType: string): number | null {
  if (region === null) return null;
  // NOTE: local zones and Wavelength zones are priced differently from their parent region,
  // but this table is keyed by region only.
  return table[region]?.[instanceType] ?? null;
}

function cloneTable(table: OnDemandPrices): OnDemandPrices {
  return Object.fromEntries(Object.entries(table).map(([region, prices]) => [region, { ...prices }]));
}
