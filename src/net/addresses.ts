/**
 * What kind of address an IP is, for deciding whether agentauth may dial it. The blocks are the
 * IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and its updates), plus
 * multicast, the deprecated IPv6 site-local and IPv4-compatible ranges, and the cloud metadata
 * endpoints that sit inside otherwise ordinary ranges. IPv4-mapped IPv6 addresses
 * (::ffff:a.b.c.d) are judged as the IPv4 address they carry (node's BlockList does that).
 */
import { BlockList, isIP } from 'node:net';

/**
 * - `loopback`, `link-local`, `metadata`: never dialled outside development, whatever the allowlist.
 * - `private`: private-use networks (RFC 1918, shared address space, unique local): dialled only
 *   when ALLOWED_PRIVATE_NETWORKS names them.
 * - `special-use`: everything else in the registries (documentation, benchmarking, multicast,
 *   translation, reserved): never dialled outside development.
 * - `public`: anything else.
 */
export type AddressKind = 'public' | 'private' | 'loopback' | 'link-local' | 'metadata' | 'special-use';

type Block = readonly [network: string, prefix: number];

/** Cloud instance metadata services (credentials live there): refused even inside an allowed network. */
const METADATA: Block[] = [
  ['169.254.169.254', 32],
  ['169.254.170.2', 32], // AWS, GCP, Azure, OpenStack; ECS task metadata
  ['100.100.100.200', 32], // Alibaba Cloud (inside the shared address space)
  ['168.63.129.16', 32], // Azure WireServer (a public address, but never a resource server)
  ['fd00:ec2::254', 128], // AWS over IPv6 (inside the unique local range)
];
const LOOPBACK: Block[] = [
  ['127.0.0.0', 8],
  ['::1', 128],
];
const LINK_LOCAL: Block[] = [
  ['169.254.0.0', 16],
  ['fe80::', 10],
];
const PRIVATE: Block[] = [
  ['10.0.0.0', 8],
  ['172.16.0.0', 12],
  ['192.168.0.0', 16], // RFC 1918
  ['100.64.0.0', 10], // shared address space (carrier-grade NAT), RFC 6598
  ['fc00::', 7], // unique local, RFC 4193
];
const SPECIAL_USE: Block[] = [
  ['0.0.0.0', 8], // "this network", RFC 791
  ['192.0.0.0', 24], // IETF protocol assignments, RFC 6890 (DS-Lite, NAT64 discovery, PCP/TURN anycast)
  ['192.0.2.0', 24],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24], // documentation, RFC 5737
  ['192.31.196.0', 24],
  ['192.175.48.0', 24], // AS112, RFC 7535 and RFC 7534
  ['192.52.193.0', 24], // AMT, RFC 7450
  ['192.88.99.0', 24], // deprecated 6to4 relay anycast, RFC 7526
  ['198.18.0.0', 15], // benchmarking, RFC 2544
  ['224.0.0.0', 4], // multicast, RFC 5771
  ['240.0.0.0', 4], // reserved, RFC 1112 (and 255.255.255.255, limited broadcast)
  ['::', 96], // unspecified and the deprecated IPv4-compatible addresses, RFC 4291 §2.5.5.1
  ['64:ff9b::', 96],
  ['64:ff9b:1::', 48], // IPv4/IPv6 translation, RFC 6052 and RFC 8215
  ['100::', 64],
  ['100:0:0:1::', 64], // discard-only, RFC 6666; dummy prefix, RFC 9780
  ['2001::', 23], // IETF protocol assignments (Teredo, benchmarking, ORCHID, AMT …), RFC 2928
  ['2001:db8::', 32],
  ['3fff::', 20], // documentation, RFC 3849 and RFC 9637
  ['2002::', 16], // 6to4, RFC 3056 (it embeds an IPv4 address)
  ['2620:4f:8000::', 48], // AS112, RFC 7534
  ['5f00::', 16], // SRv6 SIDs, RFC 9602
  ['fec0::', 10], // deprecated site-local, RFC 3879
  ['ff00::', 8], // multicast, RFC 4291
];

function blockList(blocks: Block[]): BlockList {
  const list = new BlockList();
  for (const [network, prefix] of blocks) list.addSubnet(network, prefix, isIP(network) === 6 ? 'ipv6' : 'ipv4');
  return list;
}

/** Checked in this order: the first list an address is on decides its kind. */
const KINDS: [AddressKind, BlockList][] = [
  ['metadata', blockList(METADATA)],
  ['loopback', blockList(LOOPBACK)],
  ['link-local', blockList(LINK_LOCAL)],
  ['private', blockList(PRIVATE)],
  ['special-use', blockList(SPECIAL_USE)],
];

/** An IP literal without brackets or zone (fe80::1%eth0 → fe80::1), or undefined if it is none. */
export function ipLiteral(host: string): { address: string; family: 'ipv4' | 'ipv6' } | undefined {
  const bare = (host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host).replace(/%.*$/, '');
  const family = isIP(bare);
  if (family === 0) return undefined;
  return { address: bare, family: family === 4 ? 'ipv4' : 'ipv6' };
}

export function addressKind(ip: string): AddressKind {
  const literal = ipLiteral(ip);
  if (!literal) throw new TypeError(`not an IP address: ${ip}`);
  for (const [kind, list] of KINDS) if (list.check(literal.address, literal.family)) return kind;
  return 'public';
}

/** A network in CIDR notation, as ALLOWED_PRIVATE_NETWORKS lists them. */
export interface Network {
  cidr: string;
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
}

/** Parses "10.20.0.0/16" or "fd12:3456::/48"; throws a message fit for a configuration error. */
export function parseNetwork(cidr: string): Network {
  const [address = '', prefixText, extra] = cidr.trim().split('/');
  const literal = ipLiteral(address);
  const prefix = Number(prefixText);
  const width = literal?.family === 'ipv6' ? 128 : 32;
  if (!literal || extra !== undefined || !/^\d{1,3}$/.test(prefixText ?? '') || prefix > width) {
    throw new Error(`${JSON.stringify(cidr)} is not a network in CIDR notation (like 10.20.0.0/16)`);
  }
  const network = { cidr: cidr.trim(), address: literal.address, prefix, family: literal.family };
  // Only private-use space can be opened: an allowlist must never reach loopback or metadata.
  if (addressKind(literal.address) !== 'private' || !insidePrivateUse(network)) {
    throw new Error(`${network.cidr} is not inside a private-use network (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7)`);
  }
  return network;
}

/** Whether the whole network lies inside one private-use block (its first address does, and it is no wider). */
function insidePrivateUse(network: Network): boolean {
  return PRIVATE.some(([address, prefix]) => {
    if ((isIP(address) === 6 ? 'ipv6' : 'ipv4') !== network.family || network.prefix < prefix) return false;
    return blockList([[address, prefix]]).check(network.address, network.family);
  });
}

export function networkList(networks: readonly Network[]): BlockList {
  const list = new BlockList();
  for (const n of networks) list.addSubnet(n.address, n.prefix, n.family);
  return list;
}
