import sodium from 'libsodium-wrappers';

import { decodeBase64, encodeBase64, sha256Hex } from './bytes.js';
import { refuse } from './errors.js';

/** A public key the verifier may trust, with its SPEC §2 keyid. */
export interface PublicKey {
  readonly keyid: string;
  readonly publicKey: Uint8Array;
}

/** A signing key: never printed, never logged. */
export interface SigningKey extends PublicKey {
  readonly secretKey: Uint8Array;
}

/** libsodium is WebAssembly and loads once; every entry point that signs or verifies awaits this. */
export async function cryptoReady(): Promise<void> {
  await sodium.ready;
}

/** keyid = lowercase hex SHA-256 of the raw 32-byte public key (SPEC §2). */
export function keyidOf(publicKey: Uint8Array): string {
  return sha256Hex(publicKey);
}

export function generateSigningKey(): SigningKey {
  const pair = sodium.crypto_sign_keypair();
  return { keyid: keyidOf(pair.publicKey), publicKey: pair.publicKey, secretKey: pair.privateKey };
}

export function sign(message: Uint8Array, key: SigningKey): Uint8Array {
  return sodium.crypto_sign_detached(message, key.secretKey);
}

/** True when `signature` is a valid Ed25519 signature; malformed input is simply not valid. */
export function verifySignature(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  if (signature.byteLength !== sodium.crypto_sign_BYTES || publicKey.byteLength !== sodium.crypto_sign_PUBLICKEYBYTES) {
    return false;
  }
  try {
    return sodium.crypto_sign_verify_detached(signature, message, publicKey);
  } catch {
    return false;
  }
}

export function decodePublicKey(text: string, what: string): PublicKey {
  const publicKey = decodeBase64(text, what);
  if (publicKey.byteLength !== 32) refuse('MALFORMED', `${what} must be 32 bytes, found ${publicKey.byteLength}`);
  return { keyid: keyidOf(publicKey), publicKey };
}

/** The on-disk form of a key (JSON, mode 0600 when it holds the private half). */
export interface KeyFile {
  type: 'ed25519';
  keyid: string;
  public_key: string;
  private_key?: string;
}

export function toKeyFile(key: PublicKey | SigningKey, withPrivate: boolean): KeyFile {
  const file: KeyFile = { type: 'ed25519', keyid: key.keyid, public_key: encodeBase64(key.publicKey) };
  if (withPrivate && 'secretKey' in key) file.private_key = encodeBase64(key.secretKey);
  return file;
}

/** Reads a key file's JSON; the private half is checked against the public one. */
export function fromKeyFile(value: unknown, what: string): PublicKey | SigningKey {
  const file = value as Partial<KeyFile> | null;
  if (file === null || typeof file !== 'object' || file.type !== 'ed25519' || typeof file.public_key !== 'string') {
    refuse('KEY_INVALID', `${what} is not an ed25519 key file`);
  }
  const pub = decodePublicKey(file.public_key, `${what} public_key`);
  if (file.private_key === undefined) return pub;
  if (typeof file.private_key !== 'string') refuse('KEY_INVALID', `${what} private_key must be base64`);
  const secretKey = decodeBase64(file.private_key, `${what} private_key`);
  // libsodium's 64-byte secret key ends with the public key; a mismatch means a corrupt file.
  if (secretKey.byteLength !== 64 || keyidOf(secretKey.slice(32)) !== pub.keyid) {
    refuse('KEY_INVALID', `${what} private_key does not belong to its public_key`);
  }
  return { ...pub, secretKey };
}

export function isSigningKey(key: PublicKey | SigningKey): key is SigningKey {
  return 'secretKey' in key;
}
