/**
 * Whether a URL's host is one agentauth must never fetch from: loopback, private, link-local,
 * shared, metadata and other special-use addresses, given as IP literals or as localhost names.
 * The WHATWG parser has already turned 2130706433, 0x7f.1 and 127.1 into 127.0.0.1.
 *
 * This is the registration-time check. At fetch time oidc-provider checks the address of the
 * connected socket, which also catches names that resolve to such addresses (and DNS rebinding).
 */
import { isIP } from 'node:net';

const V4_BLOCKS: [number, number][] = [
  [0x00000000, 8], [0x0a000000, 8], [0x64400000, 10], [0x7f000000, 8], [0xa9fe0000, 16], [0xac100000, 12],
  [0xc0000000, 24], [0xc0000200, 24], [0xc0a80000, 16], [0xc6120000, 15], [0xc6336400, 24], [0xcb007100, 24], [0xe0000000, 3],
];

function v4ToInt(ip: string): number {
  return ip.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0) >>> 0;
}

function isSpecialV4(ip: string): boolean {
  const n = v4ToInt(ip);
  return V4_BLOCKS.some(([prefix, bits]) => (bits === 0 ? true : n >>> (32 - bits) === prefix >>> (32 - bits)));
}

function isSpecialV6(ip: string): boolean {
  const lower = ip.toLowerCase();
  if (lower === '::' || lower === '::1') return true;
  const mapped = /^::ffff:(?:(\d+\.\d+\.\d+\.\d+)|([0-9a-f]{1,4}):([0-9a-f]{1,4}))$/.exec(lower);
  if (mapped) {
    const v4 = mapped[1] ?? [mapped[2]!, mapped[3]!].map((h) => { const n = parseInt(h, 16); return `${n >> 8}.${n & 255}`; }).join('.');
    return isSpecialV4(v4);
  }
  // Unique local fc00::/7, link-local fe80::/10, documentation 2001:db8::/32, NAT64 64:ff9b::/96.
  return /^f[cd]/.test(lower) || /^fe[89ab]/.test(lower) || lower.startsWith('2001:db8:') || lower.startsWith('64:ff9b:');
}

export function isPrivateHost(url: URL): boolean {
  const host = url.hostname.replace(/\.$/, '').toLowerCase();
  const bare = host.startsWith('[') ? host.slice(1, -1) : host;
  if (bare === 'localhost' || bare.endsWith('.localhost')) return true;
  const family = isIP(bare);
  if (family === 4) return isSpecialV4(bare);
  if (family === 6) return isSpecialV6(bare);
  return false;
}
