/**
 * Drives the Temporal Web UI with a real browser after a real batch, to check that an operator can
 * find a batch by model and see its model and shard activities there. It starts its own dev server
 * with the UI, because the shared one from the global setup is headless.
 */
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelVersion } from '../activities/types';
import { startDevServer, type DevServer } from '../infra/local/dev-server';
import { findFreePort } from '../infra/local/ports';
import { registerDetector, sampleFolder, startTestStack, tempDir, type TestStack } from './helpers';

// Debian's chromium package installs this path, and `node infra/local/bootstrap.js` installs that package when run as root.
const CHROMIUM_PATH = '/usr/bin/chromium';
const HAS_CHROMIUM = existsSync(CHROMIUM_PATH);
const SUITE_NAME = HAS_CHROMIUM
  ? 'Temporal Web UI'
  : `Temporal Web UI (skipped because ${CHROMIUM_PATH} is missing, which node infra/local/bootstrap.js installs when run as root)`;

const WAIT_MS = 60_000;
const LOOPBACK_HOST = '127.0.0.1';

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Rejects with a message naming `label` when `promise` does not settle within WAIT_MS. */
async function withTimeout<T>(promise: Promise<T>, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label} timed out after ${WAIT_MS / 1000} s.`)), WAIT_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits until the page's visible text contains `expected` and returns that text. The UI renders
 * JSON as one element per token, so a single-element text locator cannot match a `"key": "value"` line.
 */
async function waitForBodyText(page: Page, expected: string): Promise<string> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const text = await page.locator('body').innerText();
    if (text.includes(expected)) return text;
    if (Date.now() > deadline) {
      throw new Error(`${page.url()} did not show "${expected}" within ${WAIT_MS / 1000} s.`);
    }
    await sleep(250);
  }
}

describe.skipIf(!HAS_CHROMIUM)(SUITE_NAME, () => {
  let dir: string;
  let server: DevServer | undefined;
  let stack: TestStack | undefined;
  let browser: Browser | undefined;
  let page: Page;
  let detector: ModelVersion;
  let batchId: string;
  let runId: string;

  const modelRef = (): string => `${detector.name}@${detector.version}`;
  // Temporal UI 2.x reads a visibility query from the `query` parameter of the workflow list.
  const workflowListUrl = (query: string): string =>
    `${server!.uiUrl}/namespaces/default/workflows?query=${encodeURIComponent(query)}`;
  const workflowUrl = (): string =>
    `${server!.uiUrl}/namespaces/default/workflows/${encodeURIComponent(batchId)}/${encodeURIComponent(runId)}`;

  beforeAll(async () => {
    dir = tempDir('web-ui');
    server = await startDevServer({
      headless: false,
      grpcPort: await findFreePort(),
      uiPort: await findFreePort(),
      logFile: path.join(dir, 'temporal.log'),
    });
    stack = await startTestStack({ address: server.address });
    detector = await registerDetector(stack.registry);

    const started = await stack.client.startBatch({
      input: sampleFolder(2),
      model: `${detector.name}@${detector.version}`,
      shardSize: 2,
      taskQueue: stack.gpuTaskQueue,
    });
    batchId = started.batchId;
    const summary = await withTimeout(stack.client.result(batchId), `Batch ${batchId}`);
    expect(summary.status).toBe('completed');

    // The list page loads its rows once, so wait until visibility lists the batch before opening it.
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const listed = await stack.client.batchesUsingModel(detector.name, detector.version);
      const batch = listed.find((entry) => entry.batchId === batchId);
      if (batch !== undefined) {
        runId = batch.runId;
        break;
      }
      if (Date.now() > deadline) throw new Error(`Batch ${batchId} is not listed by SkyNewtModel within ${WAIT_MS / 1000} s.`);
      await sleep(250);
    }

    browser = await chromium.launch({
      executablePath: CHROMIUM_PATH,
      timeout: WAIT_MS,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        // Host names resolve to nothing, so the browser's own requests (Chromium 156 tries Google
        // services at start), which context.route does not see, fail before they connect.
        `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE ${LOOPBACK_HOST}`,
      ],
    });
    const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
    await context.route('**/*', async (route) => {
      if (new URL(route.request().url()).hostname === LOOPBACK_HOST) {
        await route.continue();
      } else {
        await route.abort('blockedbyclient');
      }
    });
    context.setDefaultTimeout(WAIT_MS);
    page = await context.newPage();
  });

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
    await server?.stop();
  });

  it('lists the batch filtered by model', async () => {
    await page.goto(workflowListUrl(`SkyNewtModel="${modelRef()}"`));
    await page.getByText(batchId).first().waitFor({ state: 'visible' });
    await page.screenshot({ path: path.join(dir, 'workflow-list.png') });

    const text = await page.locator('body').innerText();
    expect(text).toContain(`SkyNewtModel = "${modelRef()}"`);
    expect(text).toContain(batchId);
    expect(text).toContain('batchInference');
    expect(text).toContain('COMPLETED');
  });

  it('applies the query parameter to the list', async () => {
    await page.goto(workflowListUrl('SkyNewtModel="no-such-model@v0"'));
    await waitForBodyText(page, 'SkyNewtModel = "no-such-model@v0"');
    // The filter chip renders before the list request returns, so also wait for the empty-list
    // message that UI 2.54.1 shows for a filter that matches nothing.
    await waitForBodyText(page, 'No Workflows Found');
    await page.screenshot({ path: path.join(dir, 'workflow-list-empty.png') });

    expect(await page.locator('body').innerText()).not.toContain(batchId);
  });

  it('shows shard activities in the event history', async () => {
    await page.goto(`${workflowUrl()}/history`);
    await waitForBodyText(page, 'runShard');
    const text = await waitForBodyText(page, 'shard 0:');
    await page.getByText('runShard').first().scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(dir, 'event-history.png') });

    expect(text).toContain(batchId);
    expect(text).toContain('Activity Task Scheduled');
    expect(text).toContain('runShard');
    expect(text).toContain(`shard 0: images 0–1, attempt 1 on ${stack!.gpuTaskQueue}`);
  });

  it('shows the model in search attributes and memo', async () => {
    await page.goto(`${workflowUrl()}/history`);
    await page.getByTestId('search-attributes-tab').click();
    await page.waitForURL(/\/search-attributes$/);
    const attributes = await waitForBodyText(page, '"SkyNewtModel"');
    await page.screenshot({ path: path.join(dir, 'search-attributes.png') });
    expect(attributes).toContain(`"SkyNewtModel": "${modelRef()}"`);
    expect(attributes).toContain(`"SkyNewtBatchId": "${batchId}"`);
    expect(attributes).toContain(`"SkyNewtModelSha256": "${detector.sha256}"`);
    expect(attributes).toContain('"SkyNewtImages": 2');

    await page.getByTestId('memo-tab').click();
    await page.waitForURL(/\/memo$/);
    const memo = await waitForBodyText(page, '"manifest"');
    await page.screenshot({ path: path.join(dir, 'memo.png') });
    expect(memo).toContain(`"model": "${modelRef()}"`);
    expect(memo).toContain(`"manifest": "file://`);
  });
});
