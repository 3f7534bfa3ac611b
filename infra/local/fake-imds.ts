/**
 * A fake EC2 instance metadata service on 127.0.0.1 for tests and the chaos drill: it serves IMDSv2 tokens, the
 * instance identity paths, and spot notices once a test issues them.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeImds {
  url: string;
  /** Requests seen, as `METHOD path`. */
  requests: string[];
  issueTermination(action?: 'terminate' | 'stop'): void;
  issueRebalance(): void;
  /** Forgets every token issued, as a restarted metadata service would. */
  revokeTokens(): void;
  close(): Promise<void>;
}

export async function startFakeImds(identity: Record<string, string> = {}): Promise<FakeImds> {
  const tokens = new Set<string>();
  const paths: Record<string, string> = {
    'instance-id': 'i-0123456789abcdef0',
    'instance-type': 'g5.xlarge',
    'placement/availability-zone': 'us-east-1a',
    'instance-life-cycle': 'spot',
    ...identity,
  };
  const requests: string[] = [];

  const server = http.createServer((request, response) => {
    const path = request.url ?? '';
    requests.push(`${request.method} ${path}`);
    if (request.method === 'PUT' && path === '/latest/api/token') {
      if (!request.headers['x-aws-ec2-metadata-token-ttl-seconds']) return void response.writeHead(400).end();
      const token = randomUUID();
      tokens.add(token);
      return void response.writeHead(200).end(token);
    }
    if (!tokens.has(String(request.headers['x-aws-ec2-metadata-token'] ?? ''))) return void response.writeHead(401).end();
    const key = path.replace('/latest/meta-data/', '');
    if (request.method === 'GET' && key in paths) return void response.writeHead(200).end(paths[key]);
    response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port: listening } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${listening}`,
    requests,
    issueTermination(action = 'terminate') {
      const time = new Date(Date.now() + 120_000).toISOString().replace(/\.\d+Z$/, 'Z');
      paths['spot/instance-action'] = JSON.stringify({ action, time });
    },
    issueRebalance() {
      paths['events/recommendations/rebalance'] = JSON.stringify({ noticeTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') });
    },
    revokeTokens() {
      tokens.clear();
    },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
