/**
 * `skynewt codec-server`: serves POST /encode and /decode on 127.0.0.1 so the Temporal Web UI
 * can show payloads that SkyNewt's workers encrypted.
 */
import type { Command } from 'commander';
import { AesGcmPayloadCodec } from '../activities/codec/aes-gcm-codec';
import { normalizeOrigin, startCodecServer } from '../activities/codec/codec-server';
import { loadConfig } from '../workers/config';
import { UsageError } from './output';

export const DEFAULT_CODEC_PORT = 8888;

function portOption(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`Invalid --port ${JSON.stringify(value)}: expected a whole number from 0 to 65535.`);
  return port;
}

export function addCodecServerCommand(program: Command): void {
  program
    .command('codec-server')
    .description('Serve POST /encode and /decode on 127.0.0.1 so the Temporal Web UI can show encrypted payloads')
    .option('--port <port>', `TCP port on 127.0.0.1 (default ${DEFAULT_CODEC_PORT}; 0 picks a free one)`)
    .option('--origin <url>', 'the Web UI origin allowed to call the server (default SKYNEWT_UI_URL, http://127.0.0.1:8233)')
    .action(async (options: { port?: string; origin?: string }) => {
      const config = loadConfig();
      if (config.payloadKeyring === null) {
        throw new UsageError('Payload encryption is off, so there is nothing to decode: set SKYNEWT_PAYLOAD_KEY, SKYNEWT_PAYLOAD_KEY_FILE or SKYNEWT_PAYLOAD_KEYS_FILE as for the workers.');
      }
      let origin: string;
      try {
        origin = normalizeOrigin(options.origin ?? config.uiUrl);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }

      const server = await startCodecServer({
        codec: new AesGcmPayloadCodec(config.payloadKeyring),
        port: options.port === undefined ? DEFAULT_CODEC_PORT : portOption(options.port),
        origin,
        token: config.codecToken,
      });
      console.log(
        `Codec server listening on ${server.url} (origin ${origin}, encryption key id ${config.payloadKeyring.encryptionKeyId}, ${config.payloadKeyring.keys.size} key(s), bearer token ${config.codecToken === null ? 'not required' : 'required'}).`,
      );
      console.log(`Point the Web UI at it: temporal server start-dev --ui-codec-endpoint ${server.url}`);

      // The CLI exits once the action resolves, so the action waits for a stop signal.
      const signal = await new Promise<NodeJS.Signals>((resolve) => {
        process.once('SIGINT', () => resolve('SIGINT'));
        process.once('SIGTERM', () => resolve('SIGTERM'));
      });
      await server.close();
      console.log(`Codec server stopped on ${signal}.`);
    });
}
