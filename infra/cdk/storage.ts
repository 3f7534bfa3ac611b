/**
 * S3 buckets: batch inputs, batch results, model artifacts (plus the worker bundle), and an
 * optional audit bucket with Object Lock for exported workflow histories.
 */
import { Duration } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import type { AuditSettings } from './config';

/** Prefix of model artifacts in the artifacts bucket (SKYNEWT_ARTIFACT_URI). */
export const ARTIFACT_PREFIX = 'models';
/** Prefix of batch outputs in the results bucket (SKYNEWT_RESULTS). */
export const RESULTS_PREFIX = 'results';

export interface StorageProps {
  audit: AuditSettings;
}

export class Storage extends Construct {
  readonly inputs: s3.Bucket;
  readonly results: s3.Bucket;
  readonly artifacts: s3.Bucket;
  /** Present only with context auditBucket=true. */
  readonly audit?: s3.Bucket;

  constructor(scope: Construct, id: string, props: StorageProps) {
    super(scope, id);
    this.inputs = new s3.Bucket(this, 'Inputs', secureBucketProps());
    this.results = new s3.Bucket(this, 'Results', {
      ...secureBucketProps(),
      // Retries overwrite shard outputs and the manifest step deletes checkpoint parts, so old
      // versions pile up; 30 days leaves time to recover from a mistake.
      lifecycleRules: [
        { noncurrentVersionExpiration: Duration.days(30), abortIncompleteMultipartUploadAfter: Duration.days(7) },
        { expiredObjectDeleteMarker: true },
      ],
    });
    this.artifacts = new s3.Bucket(this, 'Artifacts', secureBucketProps());

    if (props.audit.enabled) {
      const retention = Duration.days(props.audit.retentionDays);
      this.audit = new s3.Bucket(this, 'Audit', {
        ...secureBucketProps(),
        objectLockEnabled: true,
        objectLockDefaultRetention:
          props.audit.mode === 'compliance' ? s3.ObjectLockRetention.compliance(retention) : s3.ObjectLockRetention.governance(retention),
      });
    }
  }
}

/** SSE-S3 encryption, versioning, all public access blocked, HTTPS only. Buckets are kept when the stack is deleted. */
function secureBucketProps(): s3.BucketProps {
  return {
    encryption: s3.BucketEncryption.S3_MANAGED,
    versioned: true,
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    enforceSSL: true,
    objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
  };
}
