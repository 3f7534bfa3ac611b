/**
 * SkyNewt's custom search attributes. The local stack registers them when the dev server starts;
 * on a hosted namespace, register them once with `temporal operator search-attribute create`.
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const BATCH_ID = defineSearchAttributeKey('SkyNewtBatchId', SearchAttributeType.KEYWORD);
/** `name@version` of the pinned model. */
export const MODEL = defineSearchAttributeKey('SkyNewtModel', SearchAttributeType.KEYWORD);
export const MODEL_SHA256 = defineSearchAttributeKey('SkyNewtModelSha256', SearchAttributeType.KEYWORD);
export const IMAGES = defineSearchAttributeKey('SkyNewtImages', SearchAttributeType.INT);
export const IMAGES_FAILED = defineSearchAttributeKey('SkyNewtImagesFailed', SearchAttributeType.INT);
export const COST_USD = defineSearchAttributeKey('SkyNewtCostUsd', SearchAttributeType.DOUBLE);
