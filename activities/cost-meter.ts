/**
 * Splits a host's hourly price among the shards running on it at the same time: between any two
 * changes of the running set, each of the n running shards is charged elapsed × rate ÷ n.
 */

export interface CostLease {
  /** Seconds and USD charged to this lease so far. */
  read(): { seconds: number; costUsd: number };
  /** Stops charging this lease and returns its final figures. */
  stop(): { seconds: number; costUsd: number };
}

interface Account {
  startedMs: number;
  costUsd: number;
}

export class CostMeter {
  private readonly accounts = new Set<Account>();
  private lastChangeMs: number;

  /**
   * @param hourlyRateUsd price of the whole host in USD per hour; 0 for local runs.
   * @param now clock in milliseconds, replaceable in tests.
   */
  constructor(
    readonly hourlyRateUsd: number,
    private readonly now: () => number = Date.now,
  ) {
    this.lastChangeMs = now();
  }

  start(): CostLease {
    this.settle();
    const account: Account = { startedMs: this.now(), costUsd: 0 };
    this.accounts.add(account);
    const figures = () => ({ seconds: (this.now() - account.startedMs) / 1000, costUsd: account.costUsd });
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

  /** Charges the time since the last change to every running account. */
  private settle(): void {
    const nowMs = this.now();
    const elapsedHours = (nowMs - this.lastChangeMs) / 3_600_000;
    this.lastChangeMs = nowMs;
    if (this.accounts.size === 0) return;
    const share = (elapsedHours * this.hourlyRateUsd) / this.accounts.size;
    for (const account of this.accounts) account.costUsd += share;
  }
}
