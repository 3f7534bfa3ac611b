/**
 * An HTTP proxy on 127.0.0.1 in front of moto that injects storage faults: 5xx responses, reset
 * connections and stalls. Every fault is decided by a plan function of the request number, so a
 * test's faults are repeatable and bounded. The plan also receives the method and path, to fail
 * one chosen write.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type Fault = { kind: 'pass' } | { kind: 'status'; status: number } | { kind: 'reset' } | { kind: 'stall'; ms: number };

export interface FaultProxy {
  endpoint: string;
  /** Faults injected so far, by kind. */
  injected: Record<Fault['kind'], number>;
  close(): Promise<void>;
}

export async function startFaultProxy(target: string, plan: (requestNumber: number, method: string, path: string) => Fault): Promise<FaultProxy> {
  const upstream = new URL(target);
  const injected: FaultProxy['injected'] = { pass: 0, status: 0, reset: 0, stall: 0 };
  const stalls = new Set<NodeJS.Timeout>();
  let count = 0;

  const forward = (request: http.IncomingMessage, response: http.ServerResponse) => {
    const proxied = http.request(
      { host: upstream.hostname, port: upstream.port, method: request.method, path: request.url, headers: request.headers },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    proxied.on('error', () => response.destroy());
    request.pipe(proxied);
  };

  const server = http.createServer((request, response) => {
    count += 1;
    const fault = plan(count, request.method ?? 'GET', request.url ?? '/');
    injected[fault.kind] += 1;
    if (fault.kind === 'status') {
      request.resume();
      response.writeHead(fault.status, { 'content-type': 'application/xml' });
      response.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Injected fault</Message></Error>');
    } else if (fault.kind === 'reset') {
      request.socket.destroy();
    } else if (fault.kind === 'stall') {
      const timer = setTimeout(() => {
        stalls.delete(timer);
        if (!request.socket.destroyed) forward(request, response);
      }, fault.ms);
      stalls.add(timer);
    } else {
      forward(request, response);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    injected,
    close: () => new Promise<void>((resolve) => {
      for (const timer of stalls) clearTimeout(timer);
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
