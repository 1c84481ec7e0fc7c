/**
 * What oidc-provider's DPoP proof check costs alone, per proof, in this process (docs/dpop.md,
 * "What it costs"): the steps of its validateDpop (helpers/validate_dpop.js) one by one, with
 * the same jose calls, on ES256 proofs like the bench's: jwtVerify with the embedded key, the
 * JWK thumbprint, the nonce window; and beside them the thumbprint as node:crypto computes it.
 * Proofs are signed ahead; each step runs over all of them, after a warm-up.
 *
 *   node bench/dpop-proof-cost.ts [--proofs 4000] [--rounds 3]
 */
import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { parseArgs } from 'node:util';
import { calculateJwkThumbprint, EmbeddedJWK, jwtVerify, type JWK } from 'jose';
import ServerChallenge from 'oidc-provider/lib/helpers/challenge.js';

const { values } = parseArgs({ options: { proofs: { type: 'string', default: '4000' }, rounds: { type: 'string', default: '3' } } });
const count = Number(values.proofs);

const b64 = (v: string | Buffer) => Buffer.from(v).toString('base64url');
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
const jwk = { kty, crv, x, y } as JWK;
const header = b64(JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk }));
const proofs = Array.from({ length: count }, () => {
  const payload = b64(
    JSON.stringify({ htm: 'POST', htu: 'http://127.0.0.1/token', jti: randomBytes(16).toString('base64url'), iat: Math.floor(Date.now() / 1000) }),
  );
  return `${header}.${payload}.${b64(sign('sha256', Buffer.from(`${header}.${payload}`), { key: privateKey, dsaEncoding: 'ieee-p1363' }))}`;
});
const algorithms = ['ES256', 'EdDSA', 'Ed25519', 'PS256'];
const nonces = new ServerChallenge(randomBytes(32), 'DPoP');

/** A step over every proof, run concurrently as requests would be; ms per proof. */
async function perProof(step: (proof: string) => unknown): Promise<number> {
  await Promise.all(proofs.slice(0, 200).map(step));
  const started = process.cpuUsage();
  await Promise.all(proofs.map(step));
  const used = process.cpuUsage(started);
  return (used.user + used.system) / 1000 / count;
}

const rfc7638 = (key: JWK) =>
  createHash('sha256')
    .update(JSON.stringify({ crv: key.crv, kty: key.kty, x: key.x, y: key.y }))
    .digest('base64url');

const steps: [string, (proof: string) => unknown][] = [
  ['jwtVerify(proof, EmbeddedJWK)', (proof) => jwtVerify(proof, EmbeddedJWK, { algorithms, typ: 'dpop+jwt' })],
  ['calculateJwkThumbprint (jose, WebCrypto digest)', () => calculateJwkThumbprint(jwk)],
  ['nonce: nextChallenge + checkChallenge', () => nonces.checkChallenge(nonces.nextChallenge())],
  [
    'all three, as validateDpop runs them',
    async (proof) => {
      nonces.nextChallenge();
      const { protectedHeader } = await jwtVerify(proof, EmbeddedJWK, { algorithms, typ: 'dpop+jwt' });
      return calculateJwkThumbprint(protectedHeader.jwk!);
    },
  ],
  ['(for comparison) the thumbprint with node:crypto', () => rfc7638(jwk)],
];

process.stdout.write(
  `DPoP proof check, CPU ms per proof (${count} ES256 proofs, Node ${process.version}, median of ${values.rounds} rounds)\n\n| step | ms |\n|---|---|\n`,
);
for (const [name, step] of steps) {
  const rounds: number[] = [];
  for (let i = 0; i < Number(values.rounds); i++) rounds.push(await perProof(step));
  rounds.sort((a, b) => a - b);
  process.stdout.write(`| ${name} | ${rounds[Math.floor(rounds.length / 2)]!.toFixed(3)} |\n`);
}
