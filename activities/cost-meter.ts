/**
 * Splits a host's price among the shards running on it at the same time: between any two
 * changes of the running set, each of the n running shards is charged the host's cost over that
 * interval ÷ n. The host's cost is the integral of its price feed, so a spot price change
 * inside an interval is charged from the instant it took effect.
 */
import { costBetween, FixedPriceFeed, type PriceFeed } from './pricing/price-feed';

export interface LeaseFigures {
  seconds: number;
  costUsd: number;
  /**
   * Cost of the host while it ran no shard, from the end of its previous shard (or the worker's
   * start) until this lease began. It is charged to the shard that ends the idle time.
   */
  idleCostUsd: number;
}

export interface CostLease {
  /** Figures charged to this lease so far. */
  read(): LeaseFigures;
  /** Stops charging this lease and returns its final figures. */
  stop(): LeaseFigures;
}

interface Account {
  startedMs: number;
  costUsd: number;
  idleCostUsd: number;
}

export class CostMeter {
  private readonly accounts = new Set<Account>();
  private readonly prices: PriceFeed;
  private lastChangeMs: number;
  /** Host cost accrued while no shard ran, not yet charged to a shard. */
  private idleCostUsd = 0;

  /**
   * @param prices price of the whole host in USD per hour: a feed, or a fixed rate (0 for local runs).
   * @param now clock in milliseconds, replaceable in tests.
   */
  constructor(
    prices: PriceFeed | number,
    private readonly now: () => number = Date.now,
  ) {
    this.prices = typeof prices === 'number' ? new FixedPriceFeed(prices) : prices;
    this.lastChangeMs = now();
  }

  start(): CostLease {
    this.settle();
    const account: Account = { startedMs: this.now(), costUsd: 0, idleCostUsd: this.idleCostUsd };
    this.idleCostUsd = 0;
    this.accounts.add(account);
    const figures = () => ({ seconds: (this.now() - account.startedMs) / 1000, costUsd: account.costUsd, idleCostUsd: account.idleCostUsd });
    return {
      read: () => {
        this.settle();
        return figures();
      },
      stop: () => {
        this.settle();
        this.accounts.delete(account);
        return figures();
      },
    };
  }

  /**
   * Charges the time since the last change to every running account.
   *
   * NOTE: an interval keeps the price it was settled at, so when a spot price change is fetched
   * late, up to one refresh period after it took effect may be charged at the previous price.
   */
  private settle(): void {
    const nowMs = this.now();
    const hostCostUsd = costBetween(this.prices, this.lastChangeMs, nowMs);
    this.lastChangeMs = nowMs;
    if (this.accounts.size === 0) {
      this.idleCostUsd += hostCostUsd;
      return;
    }
    const share = hostCostUsd / this.accounts.size;
    for (const account of this.accounts) account.costUsd += share;
  }
}
