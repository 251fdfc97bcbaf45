import { type BridgeAck, type BridgeEndpoint, ensureTokenFile, startBridgeEndpoint } from '@resultity/bridge-endpoint';

import type { ListenAddress } from './config.js';
import type { Logger, NotifyResult, RuntimeNotifier } from './ports.js';

/** The runtime bridge endpoint the Agent hosts, as a RuntimeNotifier. */
export interface BridgeNotifier extends RuntimeNotifier {
  readonly address: string;
  readonly endpoint: BridgeEndpoint;
}

/**
 * Starts the endpoint on a loopback address or unix socket with the token from the 0600 token
 * file (created when there is none). No runtime connected means the apply is recorded as
 * "none", not refused: a node may run its runtime later.
 */
export async function startBridgeNotifier(options: {
  listen: ListenAddress;
  tokenFile: string;
  logger: Logger;
  ackTimeoutMs: number;
  /** Answers that arrive outside an apply: a runtime that (re)connected and was sent the current environment. */
  onLateAck?: (ack: BridgeAck) => void;
}): Promise<BridgeNotifier> {
  const token = await ensureTokenFile(options.tokenFile);
  const endpoint = await startBridgeEndpoint({ listen: options.listen, token, logger: options.logger, ackTimeoutMs: options.ackTimeoutMs });
  let notifying = 0;
  endpoint.on('ack', (ack) => {
    if (notifying === 0) options.onLateAck?.(ack);
  });
  return {
    address: endpoint.address,
    endpoint,
    async notify(env): Promise<NotifyResult> {
      notifying += 1;
      let acks: BridgeAck[];
      try {
        acks = await endpoint.setEnvironment(env);
      } finally {
        notifying -= 1;
      }
      if (acks.length === 0) return { outcome: 'none', acks, message: 'no runtime is connected to the bridge' };
      const refused = acks.find((a) => !a.ok);
      if (refused) {
        return { outcome: 'nack', acks, code: refused.code ?? 'NACK', message: `${refused.runtimeId}: ${refused.message ?? 'refused'}` };
      }
      return { outcome: 'ack', acks };
    },
    connected: () => endpoint.connected(),
    close: () => endpoint.close(),
  };
}
