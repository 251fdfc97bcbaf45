import pkg from '../package.json' with { type: 'json' };

/** This Agent's version, as published; compared with a snapshot's `updates.agent.version`. */
export const AGENT_VERSION: string = pkg.version;
