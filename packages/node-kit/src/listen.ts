import { isIP } from 'node:net';

/** A loopback TCP address or a unix socket path: where a local endpoint may listen. */
export type ListenAddress = { host: '127.0.0.1' | '::1' | 'localhost'; port: number } | { socketPath: string };

/**
 * Parses `host:port` or an absolute socket path. Only the three spellings 127.0.0.1, ::1 (bare
 * or bracketed) and localhost are taken, stricter than `isLoopbackHost`: a configuration names
 * one of them, and anything else is more likely a mistake than another 127/8 address.
 */
export function parseListen(value: string): ListenAddress | null {
  if (value.startsWith('/')) return { socketPath: value };
  const match = /^(127\.0\.0\.1|localhost|\[::1\]|::1):(\d{1,5})$/.exec(value);
  if (!match) return null;
  const port = Number(match[2]);
  if (port > 65535) return null;
  const host = match[1] === '[::1]' ? '::1' : (match[1] as '127.0.0.1' | '::1' | 'localhost');
  return { host, port };
}

const LOOPBACK_NAMES = new Set(['localhost', '::1']);

/**
 * True for addresses no other host can reach: 127.0.0.0/8, ::1 and `localhost`. The host is
 * as a URL's hostname gives it without brackets; the one rule the endpoint, the bridge and
 * the sidecar all had.
 */
export function isLoopbackHost(host: string): boolean {
  if (LOOPBACK_NAMES.has(host)) return true;
  return isIP(host) === 4 && host.startsWith('127.');
}
