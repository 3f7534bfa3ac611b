/**
 * Connection options for reaching Temporal: plain on 127.0.0.1 for the local stack, mTLS for
 * Temporal Cloud or a self-hosted cluster with TLS. The certificate and key are PEM text in
 * SKYNEWT_TEMPORAL_TLS_CERT and SKYNEWT_TEMPORAL_TLS_KEY (as the AWS launch template writes them
 * from Secrets Manager), or files named by SKYNEWT_TEMPORAL_TLS_CERT_FILE and _KEY_FILE.
 */
import { readFileSync } from 'node:fs';
import type { TLSConfig } from '@temporalio/common/lib/internal-non-workflow';

export interface TemporalConnectionOptions {
  address: string;
  tls?: TLSConfig;
}

function pem(env: NodeJS.ProcessEnv, name: string): Buffer | undefined {
  if (env[name]) return Buffer.from(env[name]!);
  const file = env[`${name}_FILE`];
  if (!file) return undefined;
  try {
    return readFileSync(file);
  } catch (err) {
    throw new Error(`Cannot read ${name}_FILE ${file}: ${(err as Error).message}`);
  }
}

export function temporalConnectionOptions(address: string, env: NodeJS.ProcessEnv = process.env): TemporalConnectionOptions {
  const crt = pem(env, 'SKYNEWT_TEMPORAL_TLS_CERT');
  const key = pem(env, 'SKYNEWT_TEMPORAL_TLS_KEY');
  if ((crt === undefined) !== (key === undefined)) {
    throw new Error('Set both SKYNEWT_TEMPORAL_TLS_CERT and SKYNEWT_TEMPORAL_TLS_KEY (or their _FILE forms) for mTLS, or neither.');
  }
  if (crt === undefined || key === undefined) return { address };
  return { address, tls: { clientCertPair: { crt, key } } };
}
