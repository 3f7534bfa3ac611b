/**
 * Turns a segmentation model's probability map into regions and a mask image, both in the
 * original image's pixel coordinates.
 */
import { encodeMaskPng } from './mask-png';
import type { Region } from '../types';

/**
 * Finds 8-connected regions of map pixels whose probability is above `threshold` and returns
 * them sorted by top, then left. Boxes are scaled to the original image and rounded to whole
 * pixels, at least 1×1. `area` counts map pixels scaled by (origWidth × origHeight) /
 * (mapWidth × mapHeight), so it rounds to 0 for a small region of a map larger than the
 * image. `meanScore` is the mean probability over the region's map pixels.
 */
export function findRegions(
  prob: Float32Array,
  mapWidth: number,
  mapHeight: number,
  threshold: number,
  origWidth: number,
  origHeight: number,
): Region[] {
  validateMap(prob, mapWidth, mapHeight, origWidth, origHeight);

  const pixelCount = mapWidth * mapHeight;
  // Flood fill with an explicit stack, because recursion would overflow the call stack on
  // large regions. `visited` marks pixels already pushed, so each pixel is pushed once.
  const visited = new Uint8Array(pixelCount);
  const stack = new Int32Array(pixelCount);
  const scaleX = origWidth / mapWidth;
  const scaleY = origHeight / mapHeight;
  const areaScale = (origWidth * origHeight) / pixelCount;
  const regions: Region[] = [];

  for (let start = 0; start < pixelCount; start++) {
    if (visited[start] !== 0 || !(prob[start] > threshold)) {
      continue;
    }

    let minX = mapWidth;
    let minY = mapHeight;
    let maxX = -1;
    let maxY = -1;
    let count = 0;
    let scoreSum = 0;
    let stackSize = 0;
    stack[stackSize++] = start;
    visited[start] = 1;

    while (stackSize > 0) {
      const index = stack[--stackSize];
      const x = index % mapWidth;
      const y = (index - x) / mapWidth;
      count++;
      scoreSum += prob[index];
      if (x < minX) minX = x;
      if (x > maxX) maxX = x;
      if (y < minY) minY = y;
      if (y > maxY) maxY = y;

      for (let dy = -1; dy <= 1; dy++) {
        const ny = y + dy;
        if (ny < 0 || ny >= mapHeight) {
          continue;
        }
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx;
          if (nx < 0 || nx >= mapWidth) {
            continue;
          }
          const neighbour = ny * mapWidth + nx;
          if (visited[neighbour] === 0 && prob[neighbour] > threshold) {
            visited[neighbour] = 1;
            stack[stackSize++] = neighbour;
          }
        }
      }
    }

    const left = clamp(Math.round(minX * scaleX), 0, origWidth - 1);
    const top = clamp(Math.round(minY * scaleY), 0, origHeight - 1);
    const right = clamp(Math.round((maxX + 1) * scaleX), left + 1, origWidth);
    const bottom = clamp(Math.round((maxY + 1) * scaleY), top + 1, origHeight);
    regions.push({
      box: [left, top, right - left, bottom - top],
      area: Math.max(1, Math.round(count * areaScale)),
      meanScore: scoreSum / count,
    });
  }

  regions.sort((a, b) => a.box[1] - b.box[1] || a.box[0] - b.box[0]);
  return regions;
}

/**
 * Renders the thresholded map as a 1-channel 8-bit PNG of the original image's size: 255
 * where the probability is above `threshold`, 0 elsewhere. Upscaling uses nearest neighbour,
 * so the mask stays binary.
 */
export async function maskPng(
  prob: Float32Array,
  mapWidth: number,
  mapHeight: number,
  threshold: number,
  origWidth: number,
  origHeight: number,
): Promise<Buffer> {
  validateMap(prob, mapWidth, mapHeight, origWidth, origHeight);

  return encodeMaskPng(prob, threshold, mapWidth, mapHeight, origWidth, origHeight);
}

function validateMap(
  prob: Float32Array,
  mapWidth: number,
  mapHeight: number,
  origWidth: number,
  origHeight: number,
): void {
  for (const [name, value] of [
    ['mapWidth', mapWidth],
    ['mapHeight', mapHeight],
    ['origWidth', origWidth],
    ['origHeight', origHeight],
  ] as const) {
    if (!Number.isInteger(value) || value <= 0) {
      throw new RangeError(`${name} must be a positive integer, got ${value}`);
    }
  }
  if (prob.length !== mapWidth * mapHeight) {
    throw new RangeError(
      `probability map has ${prob.length} values but ${mapWidth}x${mapHeight} needs ${mapWidth * mapHeight}`,
    );
  }
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(Math.max(value, min), max);
}
