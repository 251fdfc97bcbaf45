export declare function testConfig(overrides?: Record<string, unknown>): { test: Record<string, unknown> };
