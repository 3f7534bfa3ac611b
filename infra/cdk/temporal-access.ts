/**
 * Temporal connection settings for the workers. `temporalMode=cloud`: a Temporal Cloud namespace endpoint with
 * mTLS, the client certificate and key in a Secrets Manager secret. `temporalMode=self-hosted`:
 * a plain `host:port`, with mTLS only when `temporalSecretArn` is given.
 *
 * The secret is a JSON object `{"tlsCert": "<PEM>", "tlsKey": "<PEM>"}`. Workers receive the
 * PEM text in SKYNEWT_TEMPORAL_TLS_CERT and SKYNEWT_TEMPORAL_TLS_KEY.
 */
import { SecretValue } from 'aws-cdk-lib';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import type { TemporalMode, TemporalSettings } from './config';

export const TLS_CERT_FIELD = 'tlsCert';
export const TLS_KEY_FIELD = 'tlsKey';

export class TemporalAccess extends Construct {
  readonly mode: TemporalMode;
  readonly address: string;
  readonly namespace: string;
  /** The mTLS secret, or undefined for a self-hosted server without TLS. */
  readonly tlsSecret?: secretsmanager.ISecret;

  constructor(scope: Construct, id: string, settings: TemporalSettings) {
    super(scope, id);
    this.mode = settings.mode;
    this.address = settings.address;
    this.namespace = settings.namespace;

    if (settings.secretArn !== undefined) {
      this.tlsSecret = secretsmanager.Secret.fromSecretCompleteArn(this, 'TlsSecret', settings.secretArn);
    } else if (settings.mode === 'cloud') {
      // Created with empty fields, so the stack deploys before the certificate exists. Workers
      // exit with an error naming this secret until its fields are filled in.
      this.tlsSecret = new secretsmanager.Secret(this, 'TlsSecret', {
        description: `Temporal Cloud mTLS client certificate and key for namespace ${settings.namespace}: JSON {"${TLS_CERT_FIELD}": PEM, "${TLS_KEY_FIELD}": PEM}.`,
        secretObjectValue: {
          [TLS_CERT_FIELD]: SecretValue.unsafePlainText(''),
          [TLS_KEY_FIELD]: SecretValue.unsafePlainText(''),
        },
      });
    }
  }
}
