/**
 * A small EC2 instance metadata client using the IMDSv2 flow: PUT a session token, then send it
 * with every GET. Workers create it only when configured for EC2, and tests point its base URL at
 * a fake on 127.0.0.1, so nothing contacts the metadata address off EC2.
 */

/** Lifetime requested for a session token, in seconds (IMDSv2 accepts 1 to 21,600). */
const TOKEN_TTL_SECONDS = 21_600;
/** A token is renewed this long before it expires, in milliseconds. */
const TOKEN_RENEW_MARGIN_MS = 60_000;
/** Timeout of one metadata request, in milliseconds. On EC2 the service responds in microseconds. */
const REQUEST_TIMEOUT_MS = 2_000;

export class InstanceMetadataClient {
  private token: { value: string; expiresAtMs: number } | null = null;

  /** @param baseUrl e.g. `http://169.254.169.254` on EC2, or a loopback fake in tests. */
  constructor(readonly baseUrl: string) {}

  /**
   * Reads one metadata path under `/latest/meta-data/`. Returns null when the path does not
   * exist (404), which is how the service reports "no spot notice".
   */
  async get(path: string): Promise<string | null> {
    let response = await this.request(path, await this.sessionToken());
    if (response.status === 401) {
      // The token expired or the service restarted: fetch a new one and retry once.
      this.token = null;
      response = await this.request(path, await this.sessionToken());
    }
    if (response.status === 404) return null;
    if (!response.ok) throw new Error(`Instance metadata ${path} returned HTTP ${response.status} from ${this.baseUrl}.`);
    return response.text();
  }

  private async request(path: string, token: string): Promise<Response> {
    return fetch(new URL(`/latest/meta-data/${path}`, this.baseUrl), {
      headers: { 'X-aws-ec2-metadata-token': token },
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  }

  private async sessionToken(): Promise<string> {
    if (this.token && this.token.expiresAtMs - TOKEN_RENEW_MARGIN_MS > Date.now()) return this.token.value;
    const response = await fetch(new URL('/latest/api/token', this.baseUrl), {
      method: 'PUT',
      headers: { 'X-aws-ec2-metadata-token-ttl-seconds': String(TOKEN_TTL_SECONDS) },
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    if (!response.ok) throw new Error(`Instance metadata token request to ${this.baseUrl} returned HTTP ${response.status}.`);
    this.token = { value: await response.text(), expiresAtMs: Date.now() + TOKEN_TTL_SECONDS * 1000 };
    return this.token.value;
  }
}
