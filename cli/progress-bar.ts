/**
 * A progress bar on stderr while `skynewt run --wait` follows a batch on an interactive
 * terminal. It polls the `progress` query and the running shards' checkpoints once a second.
 */
import { SingleBar } from 'cli-progress';
import type { SkyNewtClient } from '../client/skynewt-client';

const POLL_MS = 1000;

/** Starts polling and drawing; call the returned function to stop and clear the bar. */
export function watchProgress(client: SkyNewtClient, batchId: string): () => void {
  const bar = new SingleBar({
    format: '{bar} {value}/{total} images | {failed} failed | shards {shardsDone}/{shards} | {status}',
    hideCursor: true,
    clearOnComplete: false,
    stream: process.stderr,
  });
  let started = false;
  let stopped = false;

  const poll = async () => {
    try {
      const progress = await client.liveProgress(batchId);
      const payload = { failed: progress.imagesFailed, shardsDone: progress.shardsDone, shards: progress.shards, status: progress.status };
      const done = Math.min(progress.images, progress.imagesDone + progress.imagesInFlight);
      if (!started) {
        bar.start(Math.max(progress.images, 1), done, payload);
        started = true;
      } else {
        bar.setTotal(Math.max(progress.images, 1));
        bar.update(done, payload);
      }
    } catch {
      // The query fails while the first workflow task is pending; the next poll retries.
    }
  };

  const timer = setInterval(() => {
    if (!stopped) void poll();
  }, POLL_MS);
  void poll();

  return () => {
    stopped = true;
    clearInterval(timer);
    if (started) bar.stop();
  };
}
