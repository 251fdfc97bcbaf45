import { describe, expect, it } from 'vitest';

import { isLoopbackHost, parseListen } from './listen.js';

describe('parseListen', () => {
  it('accepts loopback addresses and unix sockets only', () => {
    expect(parseListen('127.0.0.1:9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseListen('[::1]:1')).toEqual({ host: '::1', port: 1 });
    expect(parseListen('/run/resultity/bridge.sock')).toEqual({ socketPath: '/run/resultity/bridge.sock' });
    expect(parseListen('10.0.0.1:80')).toBeNull();
    expect(parseListen('127.0.0.1:70000')).toBeNull();
  });
});

describe('isLoopbackHost', () => {
  it('accepts 127.0.0.0/8, ::1 and localhost, and nothing else', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', 'localhost']) expect(isLoopbackHost(host)).toBe(true);
    for (const host of ['0.0.0.0', '10.0.0.1', '::', '[::1]', '127.example', 'localhost.example']) expect(isLoopbackHost(host)).toBe(false);
  });
});
