/**
 * Watches for EC2 spot interruption notices. A termination notice (`spot/instance-action`)
 * arrives two minutes before the instance is stopped or terminated; a rebalance recommendation
 * (`events/recommendations/rebalance`) means the instance is at elevated risk of one.
 */
import type { InstanceMetadataClient } from './instance-metadata';

export type SpotNotice =
  | { kind: 'termination'; action: string; time: string }
  | { kind: 'rebalance'; noticeTime: string };

export interface SpotWatcherOptions {
  metadata: InstanceMetadataClient;
  /** Poll period in milliseconds. @default 5000 */
  intervalMs?: number;
  /** Called once per kind of notice. */
  onNotice(notice: SpotNotice): void;
  /** Called for a failed poll; polling goes on. */
  onError?(err: unknown): void;
}

export class SpotWatcher {
  private timer: NodeJS.Timeout | null = null;
  private polling = false;
  private sawTermination = false;
  private sawRebalance = false;

  constructor(private readonly options: SpotWatcherOptions) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.poll(), this.options.intervalMs ?? 5000);
    // The watcher alone must not keep the worker process alive.
    this.timer.unref();
    void this.poll();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Checks both notice paths once; skipped while an earlier check is still running. */
  async poll(): Promise<void> {
    if (this.polling || this.sawTermination) return;
    this.polling = true;
    try {
      const action = await this.options.metadata.get('spot/instance-action');
      if (action !== null) {
        this.sawTermination = true;
        const parsed = parseJson(action);
        this.options.onNotice({ kind: 'termination', action: String(parsed.action ?? 'terminate'), time: String(parsed.time ?? '') });
        return;
      }
      if (!this.sawRebalance) {
        const rebalance = await this.options.metadata.get('events/recommendations/rebalance');
        if (rebalance !== null) {
          this.sawRebalance = true;
          this.options.onNotice({ kind: 'rebalance', noticeTime: String(parseJson(rebalance).noticeTime ?? '') });
        }
      }
    } catch (err) {
      this.options.onError?.(err);
    } finally {
      this.polling = false;
    }
  }
}

function parseJson(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}
