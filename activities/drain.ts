/**
 * The inference worker's drain switch. When the host is about to go (a spot termination notice,
 * or SIGTERM), running shards checkpoint and end with a retryable `SpotInterruption` failure so
 * another worker resumes them at once instead of after the heartbeat timeout.
 */

export class Drain {
  private readonly controller = new AbortController();
  private why: string | null = null;

  /** Aborted once the worker drains; shards check it between images. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get reason(): string | null {
    return this.why;
  }

  trigger(reason: string): void {
    if (this.why !== null) return;
    this.why = reason;
    this.controller.abort(reason);
  }
}
