export * from './fixtures.ts';
export * from './signer.ts';
export * from './tempdir.ts';
