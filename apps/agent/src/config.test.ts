import { describe, expect, it } from 'vitest';

import { parseConfig, parseListen } from './config.js';

const minimal = { network: 'testnet', origin: 'http://127.0.0.1:8080', node_id: 'node-1', trust_root: ['root/1.json'], state_dir: 'state' };

describe('parseConfig', () => {
  it('fills safe defaults and resolves paths against the file', () => {
    const config = parseConfig(minimal, '/etc/resultity', '/etc/resultity/agent.json');
    expect(config.trust_root).toEqual(['/etc/resultity/root/1.json']);
    expect(config.state_dir).toBe('/etc/resultity/state');
    expect(config.bridge.token_file).toBe('/etc/resultity/state/bridge.token');
    expect(config.limits).toEqual({ max_snapshot_bytes: 4 * 1024 * 1024, request_timeout_ms: 30_000 });
    expect(config.retry_budget).toBe(5);
    expect(config.downloads).toEqual({
      allow_private_addresses: false,
      min_bytes_per_second: 64 * 1024,
      rate_window_ms: 30_000,
      connections: 8,
      reserve_bytes: 0,
      max_bytes_per_second: 0,
    });
    expect(config.allowed_registries).toEqual([]);
    expect(config.profile).toEqual({ vram_gb: 0, regions: [], gpu: [] });
  });

  it('names the field that is wrong', () => {
    expect(() => parseConfig({ ...minimal, limits: { request_timeout_ms: -1 } }, '/')).toThrow(/limits\.request_timeout_ms/);
    expect(() => parseConfig({ ...minimal, origin: 'file:///x' }, '/')).toThrow(/origin: must be an http\(s\) URL/);
    expect(() => parseConfig({ ...minimal, trust_root: [] }, '/')).toThrow(/trust_root/);
  });

  it('refuses unknown keys, so a typo is never silently ignored', () => {
    expect(() => parseConfig({ ...minimal, retry_budgt: 3 }, '/')).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
  });

  it('refuses a bridge that would listen beyond loopback', () => {
    expect(() => parseConfig({ ...minimal, bridge: { listen: '0.0.0.0:7420' } }, '/')).toThrow(/bridge\.listen/);
  });
});

describe('parseListen', () => {
  it('accepts loopback addresses and unix sockets only', () => {
    expect(parseListen('127.0.0.1:9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseListen('[::1]:1')).toEqual({ host: '::1', port: 1 });
    expect(parseListen('/run/resultity/bridge.sock')).toEqual({ socketPath: '/run/resultity/bridge.sock' });
    expect(parseListen('10.0.0.1:80')).toBeNull();
    expect(parseListen('127.0.0.1:70000')).toBeNull();
  });
});
