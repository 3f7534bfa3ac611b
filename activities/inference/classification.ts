/**
 * Ranks a classification model's output scores.
 */
import type { LabelScore } from '../types';

/** Tolerance on the score sum within which the scores are taken as probabilities already. */
const PROBABILITY_SUM_TOLERANCE = 1e-3;

/**
 * Returns the `k` highest-scoring labels, best first, ties in output order. Scores are used
 * as probabilities when they are all in 0..1 and sum to 1 within 1e-3. Otherwise they are
 * treated as logits and passed through softmax. A score without a label is labelled with
 * its index, e.g. `"3"`.
 */
export function topK(scores: Float32Array, labels: string[], k: number): LabelScore[] {
  if (!Number.isInteger(k) || k < 0) {
    throw new RangeError(`k must be a non-negative integer, got ${k}`);
  }

  const probabilities = isProbabilityVector(scores) ? scores : softmax(scores);
  const order = Array.from(probabilities.keys());
  order.sort((a, b) => probabilities[b] - probabilities[a] || a - b);

  return order.slice(0, k).map((index) => ({
    label: labels[index] ?? String(index),
    score: probabilities[index],
  }));
}

function isProbabilityVector(scores: Float32Array): boolean {
  let sum = 0;
  for (const score of scores) {
    if (!(score >= 0 && score <= 1)) {
      return false;
    }
    sum += score;
  }
  return Math.abs(sum - 1) <= PROBABILITY_SUM_TOLERANCE;
}

function softmax(logits: Float32Array): Float32Array {
  // Subtracting the maximum keeps exp() from overflowing; the result is unchanged.
  let max = -Infinity;
  for (const logit of logits) {
    max = Math.max(max, logit);
  }
  const result = new Float32Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    result[i] = Math.exp(logits[i] - max);
    sum += result[i];
  }
  for (let i = 0; i < result.length; i++) {
    result[i] /= sum;
  }
  return result;
}
