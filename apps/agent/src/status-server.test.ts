import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';

import { type OperatorControl, type StatusServer, startStatusServer } from './status-server.js';

const OPERATOR = 'operator-token-0123456789abcdef';
const BRIDGE = 'bridge-token-0123456789abcdef00';

/** Records what the control routes were asked to do. */
class RecordingControl implements OperatorControl {
  readonly calls: string[] = [];
  async rollback(to: string | undefined) {
    this.calls.push(`rollback ${to ?? '(previous)'}`);
    return { result: 'applied' };
  }
  async unpin() {
    this.calls.push('unpin');
    return { pinned: null };
  }
}

let server: StatusServer | null = null;
afterEach(async () => {
  await server?.close();
  server = null;
});

async function start(control: OperatorControl): Promise<string> {
  server = await startStatusServer({
    listen: { host: '127.0.0.1', port: 0 },
    registry: new Registry(),
    healthy: () => true,
    status: async () => ({ ok: true }),
    control: { token: OPERATOR, actions: control },
  });
  return server.url;
}

const post = (url: string, token: string | null, body = '{}') =>
  fetch(url, { method: 'POST', body, headers: token === null ? {} : { authorization: `Bearer ${token}` } });

describe('the control routes', () => {
  for (const route of ['/v1/rollback', '/v1/unpin']) {
    describe(route, () => {
      it("refuses the runtime's bridge token, a missing token and a near miss with 401, and does nothing", async () => {
        const control = new RecordingControl();
        const url = `${await start(control)}${route}`;
        expect((await post(url, BRIDGE)).status).toBe(401);
        expect((await post(url, null)).status).toBe(401);
        expect((await post(url, `${OPERATOR}x`)).status).toBe(401);
        expect((await post(url, OPERATOR.slice(0, -1))).status).toBe(401);
        expect(control.calls).toEqual([]);
      });

      it("accepts the operator's token", async () => {
        const control = new RecordingControl();
        const url = `${await start(control)}${route}`;
        const res = await post(url, OPERATOR);
        expect(res.status).toBe(200);
        expect(control.calls).toEqual([route === '/v1/unpin' ? 'unpin' : 'rollback (previous)']);
      });
    });
  }

  it('passes the rollback target on, and answers a refusal with its code', async () => {
    const control = new RecordingControl();
    const url = await start({
      rollback: (to) => control.rollback(to),
      unpin: async () => {
        throw Object.assign(new Error('nothing is pinned'), { code: 'NOT_PINNED' });
      },
    });
    expect((await post(`${url}/v1/rollback`, OPERATOR, JSON.stringify({ to: `sha256:${'a'.repeat(64)}` }))).status).toBe(200);
    expect(control.calls).toEqual([`rollback sha256:${'a'.repeat(64)}`]);
    const refused = await post(`${url}/v1/unpin`, OPERATOR);
    expect(refused.status).toBe(409);
    expect(await refused.json()).toEqual({ code: 'NOT_PINNED', message: 'nothing is pinned' });
    expect((await post(`${url}/v1/rollback`, OPERATOR, '{"to": 5}')).status).toBe(400);
  });

  it('still serves /healthz and /status without a token', async () => {
    const url = await start(new RecordingControl());
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect(await (await fetch(`${url}/status`)).json()).toEqual({ ok: true });
  });
});
