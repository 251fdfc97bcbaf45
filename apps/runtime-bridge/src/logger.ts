import { pino } from 'pino';

/** The CLIs log JSON lines to stderr, so stdout stays free for what a user asked to see. */
export function cliLogger(level: string): pino.Logger {
  return pino({ name: 'resultity-runtime-bridge', level }, pino.destination(2));
}
