import * as net from 'node:net';

const LOOPBACK = '127.0.0.1';

/**
 * Finds a TCP port on 127.0.0.1 that is free right now by letting the OS pick one.
 * Another process may take the port before the caller binds it, so callers still handle EADDRINUSE.
 */
export function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, LOOPBACK, () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error(`Expected a TCP address from the probe listener, got ${String(address)}`));
        return;
      }
      const port = address.port;
      server.close((closeError) => (closeError ? reject(closeError) : resolve(port)));
    });
  });
}

/** Checks whether a listener can bind 127.0.0.1:port now; any bind error other than EADDRINUSE is raised. */
export function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE') {
        resolve(false);
      } else {
        reject(error);
      }
    });
    server.listen(port, LOOPBACK, () => {
      server.close(() => resolve(true));
    });
  });
}

/** Resolves true when a TCP connection to 127.0.0.1:port opens within `timeoutMs`; the connection is closed at once. */
export function acceptsConnections(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: LOOPBACK, port });
    const finish = (accepted: boolean): void => {
      socket.destroy();
      resolve(accepted);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}
