import { defineConfig } from 'vitest/config';

// Test files share one Temporal dev server and one moto server (started in the global setup) and
// this machine's two cores, so they run one at a time.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    fileParallelism: false,
    pool: 'forks',
    testTimeout: 180_000,
    hookTimeout: 180_000,
    env: { AWS_EC2_METADATA_DISABLED: 'true' },
  },
});
