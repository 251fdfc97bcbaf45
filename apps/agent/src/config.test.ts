import { describe, expect, it } from 'vitest';

import { bridgeMountDir, parseConfig } from './config.js';

const minimal = { network: 'testnet', origin: 'http://127.0.0.1:8080', node_id: 'node-1', trust_root: ['root/1.json'], state_dir: 'state' };

describe('parseConfig', () => {
  it('fills safe defaults and resolves paths against the file', () => {
    const config = parseConfig(minimal, '/etc/resultity', '/etc/resultity/agent.json');
    expect(config.trust_root).toEqual(['/etc/resultity/root/1.json']);
    expect(config.state_dir).toBe('/etc/resultity/state');
    expect(config.bridge.listen).toBe('/etc/resultity/state/run/bridge.sock');
    expect(config.bridge.token_file).toBe('/etc/resultity/state/run/bridge.token');
    expect(config.control.token_file).toBe('/etc/resultity/state/operator.token');
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
    expect(config.long_poll).toEqual({ enabled: true, wait_s: 30, spread_ms: 100, recheck_s: 600 });
  });

  it('keeps a long-poll wait within the 1 to 60 seconds SPEC §5 allows', () => {
    expect(() => parseConfig({ ...minimal, long_poll: { wait_s: 61 } }, '/')).toThrow(/long_poll\.wait_s/);
    expect(parseConfig({ ...minimal, long_poll: { enabled: false } }, '/').long_poll).toMatchObject({ enabled: false, wait_s: 30 });
  });

  it('names the field that is wrong', () => {
    expect(() => parseConfig({ ...minimal, limits: { request_timeout_ms: -1 } }, '/')).toThrow(/limits\.request_timeout_ms/);
    expect(() => parseConfig({ ...minimal, origin: 'file:///x' }, '/')).toThrow(/origin: must be an http\(s\) URL/);
    expect(() => parseConfig({ ...minimal, trust_root: [] }, '/')).toThrow(/trust_root/);
  });

  it('refuses unknown keys, so a typo is never silently ignored', () => {
    expect(() => parseConfig({ ...minimal, retry_budgt: 3 }, '/')).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
  });

  it('keeps a TCP loopback bridge when configured', () => {
    const config = parseConfig({ ...minimal, bridge: { listen: '127.0.0.1:7420' } }, '/etc/resultity');
    expect(config.bridge.listen).toBe('127.0.0.1:7420');
    expect(config.bridge.token_file).toBe('/etc/resultity/state/run/bridge.token');
  });

  it("refuses an operator token a runtime could read: the bridge token's directory or under the socket's", () => {
    const refused = [
      { control: { token_file: 'state/run/bridge.token' } },
      { control: { token_file: 'state/run/operator.token' } },
      { bridge: { listen: '/srv/bridge/bridge.sock' }, control: { token_file: '/srv/bridge/sub/operator.token' } },
      { bridge: { token_file: '/srv/tokens/bridge.token' }, control: { token_file: '/srv/tokens/operator.token' } },
    ];
    for (const extra of refused) {
      expect(() => parseConfig({ ...minimal, ...extra }, '/etc/resultity')).toThrow(
        expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringContaining('control.token_file') }),
      );
    }
    expect(parseConfig({ ...minimal, control: { token_file: '/etc/resultity/operator.token' } }, '/').control.token_file).toBe('/etc/resultity/operator.token');
  });

  it('refuses a bridge that would listen beyond loopback', () => {
    expect(() => parseConfig({ ...minimal, bridge: { listen: '0.0.0.0:7420' } }, '/')).toThrow(/bridge\.listen/);
  });
});

describe('bridgeMountDir', () => {
  const at = (bridge: object) => bridgeMountDir(parseConfig({ ...minimal, bridge }, '/etc/resultity'));

  it('is the default run directory, which holds bridge.sock and bridge.token', () => {
    expect(at({})).toBe('/etc/resultity/state/run');
    expect(at({ listen: '/srv/bridge/bridge.sock', token_file: '/srv/bridge/bridge.token' })).toBe('/srv/bridge');
  });

  it('is null when no mount could show a container the bridge at /run/resultity/bridge.sock and bridge.token', () => {
    expect(at({ enabled: false })).toBeNull();
    expect(at({ listen: '127.0.0.1:7420' })).toBeNull();
    expect(at({ listen: '/srv/bridge/agent.sock', token_file: '/srv/bridge/bridge.token' })).toBeNull();
    expect(at({ listen: '/srv/bridge/bridge.sock' })).toBeNull();
  });
});

describe('containers', () => {
  it('marks containers io.resultity.* and names them resultity-* unless told otherwise', () => {
    expect(parseConfig(minimal, '/').containers).toMatchObject({
      label_prefix: 'io.resultity',
      name_prefix: 'resultity',
      allow_host_network: false,
      check_shared_paths: 'auto',
    });
    expect(parseConfig({ ...minimal, containers: { label_prefix: 'io.resultity.node-b', name_prefix: 'node-b' } }, '/').containers).toMatchObject({
      label_prefix: 'io.resultity.node-b',
      name_prefix: 'node-b',
    });
  });

  it('refuses prefixes the engine would not take as label keys or names', () => {
    expect(() => parseConfig({ ...minimal, containers: { label_prefix: 'IO Resultity' } }, '/')).toThrow(/containers\.label_prefix/);
    expect(() => parseConfig({ ...minimal, containers: { name_prefix: '-x/y' } }, '/')).toThrow(/containers\.name_prefix/);
  });
});
