import { describe, expect, it } from 'vitest';

import { refusedAddress } from './address.js';

describe('refusedAddress', () => {
  it('refuses loopback, private, shared, link-local, multicast and unspecified addresses', () => {
    for (const address of [
      '127.0.0.1',
      '127.255.0.9',
      '10.1.2.3',
      '172.16.0.1',
      '172.31.255.255',
      '192.168.1.1',
      '100.64.0.1',
      '100.127.255.254',
      '169.254.169.254',
      '0.0.0.0',
      '224.0.0.1',
      '255.255.255.255',
      '::',
      '::1',
      '[::1]',
      'fc00::1',
      'fd12:3456::1',
      'fe80::1',
      'fe80::1%eth0',
      'ff02::1',
      '::ffff:127.0.0.1',
      '::ffff:7f00:1',
      '::ffff:10.0.0.1',
      '::ffff:169.254.169.254',
      '::127.0.0.1',
      '64:ff9b::a9fe:a9fe',
    ]) {
      expect(refusedAddress(address), address).not.toBeNull();
    }
  });

  it('lets public addresses through, IPv4-mapped ones included', () => {
    for (const address of ['1.1.1.1', '8.8.8.8', '172.32.0.1', '100.128.0.1', '192.169.0.1', '2606:4700::1111', '::ffff:1.1.1.1', '2a00:1450:4001::200e']) {
      expect(refusedAddress(address), address).toBeNull();
    }
  });

  it('refuses anything that is not an IP address', () => {
    for (const address of ['localhost', 'example.com', '', '1.2.3', '::ffff:1.2.3.4.5']) {
      expect(refusedAddress(address), address).not.toBeNull();
    }
  });
});
