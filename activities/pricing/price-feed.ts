/**
 * Hourly host prices over time. Cost is the integral of the price over the time a shard runs, so
 * a feed exposes both the price in force at an instant and the instants where that price changes.
 */

/** The price of one host in USD per hour, as a step function of time. */
export interface PriceFeed {
  /** Returns the price in force at `epochMs`, in USD per hour. */
  priceAt(epochMs: number): number;
  /** Returns the instants strictly between `startMs` and `endMs` where the price changes, ascending. */
  changesBetween(startMs: number, endMs: number): number[];
}

/** One step of a price history: the price in force from `timestampMs` until the next record. */
export interface PriceRecord {
  timestampMs: number;
  /** USD per hour. */
  priceUsd: number;
}

/** A price that never changes: a configured rate, an on-demand list price, or 0 for local runs. */
export class FixedPriceFeed implements PriceFeed {
  constructor(readonly hourlyRateUsd: number) {
    if (!Number.isFinite(hourlyRateUsd) || hourlyRateUsd < 0) {
      throw new RangeError(`Invalid hourly rate ${hourlyRateUsd}: expected a price in USD per hour, 0 or more.`);
    }
  }

  priceAt(): number {
    return this.hourlyRateUsd;
  }

  changesBetween(): number[] {
    return [];
  }
}

/**
 * The part of a host's price one worker pays when it shares the host with others: with N
 * inference workers on a host (one per GPU, say), each is charged 1/N of the host's price.
 */
export class SharedPriceFeed implements PriceFeed {
  constructor(
    private readonly host: PriceFeed,
    readonly workers: number,
  ) {
    if (!Number.isInteger(workers) || workers < 1) {
      throw new RangeError(`Invalid number of workers sharing a host: ${workers}; expected a whole number of 1 or more.`);
    }
  }

  priceAt(epochMs: number): number {
    return this.host.priceAt(epochMs) / this.workers;
  }

  changesBetween(startMs: number, endMs: number): number[] {
    return this.host.changesBetween(startMs, endMs);
  }
}

/**
 * A price history as a step function: the price at t is that of the latest record at or before t.
 * Before the first record the first record's price applies, and with no records `fallbackUsd`.
 */
export class PriceHistory implements PriceFeed {
  /** Records sorted by time, at most one per timestamp. */
  private records: PriceRecord[] = [];

  constructor(records: PriceRecord[] = [], private readonly fallbackUsd = 0) {
    this.add(records);
  }

  /** Merges records into the history; a record at an existing timestamp replaces the old one. */
  add(records: PriceRecord[]): void {
    if (records.length === 0) return;
    const byTime = new Map(this.records.map((record) => [record.timestampMs, record]));
    for (const record of records) {
      if (!Number.isFinite(record.timestampMs) || !Number.isFinite(record.priceUsd) || record.priceUsd < 0) {
        throw new RangeError(`Invalid price record ${JSON.stringify(record)}: expected a timestamp and a price of 0 or more.`);
      }
      byTime.set(record.timestampMs, record);
    }
    this.records = [...byTime.values()].sort((a, b) => a.timestampMs - b.timestampMs);
  }

  get size(): number {
    return this.records.length;
  }

  /** Returns the latest record, or null for an empty history. */
  latest(): PriceRecord | null {
    return this.records.at(-1) ?? null;
  }

  priceAt(epochMs: number): number {
    if (this.records.length === 0) return this.fallbackUsd;
    // NOTE: before the first known record the earliest known price is used, because nothing
    // earlier was fetched. Fetch from before the charged period to avoid relying on this.
    const index = this.lastIndexAtOrBefore(epochMs);
    return this.records[Math.max(index, 0)].priceUsd;
  }

  changesBetween(startMs: number, endMs: number): number[] {
    const changes: number[] = [];
    for (let i = this.lastIndexAtOrBefore(startMs) + 1; i < this.records.length; i++) {
      const time = this.records[i].timestampMs;
      if (time >= endMs) break;
      if (time > startMs) changes.push(time);
    }
    return changes;
  }

  /** Binary search: index of the latest record at or before `epochMs`, or -1 when none is. */
  private lastIndexAtOrBefore(epochMs: number): number {
    let low = 0;
    let high = this.records.length - 1;
    let found = -1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      if (this.records[middle].timestampMs <= epochMs) {
        found = middle;
        low = middle + 1;
      } else {
        high = middle - 1;
      }
    }
    return found;
  }
}

/** Returns the cost in USD of one host from `startMs` to `endMs`: the integral of the price over time. */
export function costBetween(feed: PriceFeed, startMs: number, endMs: number): number {
  if (endMs <= startMs) return 0;
  let costUsd = 0;
  let from = startMs;
  for (const change of [...feed.changesBetween(startMs, endMs), endMs]) {
    costUsd += (feed.priceAt(from) * (change - from)) / 3_600_000;
    from = change;
  }
  return costUsd;
}
