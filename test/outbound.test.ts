/**
 * The outbound module (src/net): which addresses agentauth dials, table-tested against the IANA
 * special-purpose registries; the lookup contract Node's connect relies on ({ all: true } from
 * autoSelectFamily, { all: false } otherwise); and requests that the policy refuses.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { LookupAddress } from 'node:dns';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { addressKind, parseNetwork, type AddressKind } from '../src/net/addresses.ts';
import { createOutbound, OutboundRefusedError } from '../src/net/outbound.ts';

const production = createOutbound({ development: false, allowedPrivateNetworks: [] });
const development = createOutbound({ development: true, allowedPrivateNetworks: [] });
const internal = createOutbound({ development: false, allowedPrivateNetworks: [parseNetwork('10.20.0.0/16'), parseNetwork('fd12:3456::/32')] });

describe('address kinds (IANA special-purpose registries)', () => {
  const table: [string, AddressKind][] = [
    ['8.8.8.8', 'public'],
    ['1.1.1.1', 'public'],
    ['2606:4700::1111', 'public'],
    ['2a00:1450::1', 'public'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['::1', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['169.254.1.1', 'link-local'],
    ['fe80::1', 'link-local'],
    ['febf::1', 'link-local'],
    ['169.254.169.254', 'metadata'],
    ['169.254.170.2', 'metadata'],
    ['100.100.100.200', 'metadata'],
    ['168.63.129.16', 'metadata'],
    ['fd00:ec2::254', 'metadata'],
    ['::ffff:169.254.169.254', 'metadata'],
    ['10.0.0.1', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'private'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['::ffff:10.1.2.3', 'private'],
    ['172.32.0.1', 'public'],
    ['100.128.0.1', 'public'],
    ['192.169.0.1', 'public'],
    ['0.0.0.0', 'special-use'],
    ['0.1.2.3', 'special-use'],
    ['192.0.0.8', 'special-use'],
    ['192.0.0.170', 'special-use'],
    ['192.0.2.1', 'special-use'],
    ['198.51.100.7', 'special-use'],
    ['203.0.113.9', 'special-use'],
    ['198.18.0.1', 'special-use'],
    ['198.19.255.255', 'special-use'],
    ['192.31.196.1', 'special-use'],
    ['192.52.193.1', 'special-use'],
    ['192.88.99.1', 'special-use'],
    ['192.175.48.1', 'special-use'],
    ['224.0.0.1', 'special-use'],
    ['239.255.255.250', 'special-use'],
    ['240.0.0.1', 'special-use'],
    ['255.255.255.255', 'special-use'],
    ['::', 'special-use'],
    ['::7f00:1', 'special-use'],
    ['::a00:1', 'special-use'],
    ['::808:808', 'special-use'],
    ['64:ff9b::808:808', 'special-use'],
    ['64:ff9b:1::1', 'special-use'],
    ['100::1', 'special-use'],
    ['100:0:0:1::1', 'special-use'],
    ['2001::1', 'special-use'],
    ['2001:2::1', 'special-use'],
    ['2001:10::1', 'special-use'],
    ['2001:1ff::1', 'special-use'],
    ['2001:200::1', 'public'],
    ['2001:db8::1', 'special-use'],
    ['3fff::1', 'special-use'],
    ['2002:7f00:1::1', 'special-use'],
    ['2002:808:808::1', 'special-use'],
    ['2620:4f:8000::1', 'special-use'],
    ['5f00::1', 'special-use'],
    ['fec0::1', 'special-use'],
    ['feff::1', 'special-use'],
    ['ff02::1', 'special-use'],
    ['ff0e::1', 'special-use'],
  ];
  for (const [ip, kind] of table) {
    it(`${ip} is ${kind}`, () => assert.equal(addressKind(ip), kind));
  }
});

describe('ALLOWED_PRIVATE_NETWORKS', () => {
  it('opens only the listed private networks, and never metadata inside them', () => {
    const open = createOutbound({ development: false, allowedPrivateNetworks: [parseNetwork('fd00::/8'), parseNetwork('100.64.0.0/10')] });
    assert.equal(internal.addressRefusal('10.20.3.4'), undefined);
    assert.equal(internal.addressRefusal('::ffff:10.20.3.4'), undefined);
    assert.equal(internal.addressRefusal('fd12:3456::9'), undefined);
    assert.match(internal.addressRefusal('10.21.0.1')!, /outside ALLOWED_PRIVATE_NETWORKS/);
    assert.match(internal.addressRefusal('192.168.0.1')!, /outside ALLOWED_PRIVATE_NETWORKS/);
    assert.match(open.addressRefusal('fd00:ec2::254')!, /metadata/);
    assert.match(open.addressRefusal('100.100.100.200')!, /metadata/);
    assert.match(internal.addressRefusal('127.0.0.1')!, /loopback/);
  });

  it('refuses networks outside private-use space, and malformed ones', () => {
    for (const bad of [
      '127.0.0.0/8',
      '169.254.0.0/16',
      '0.0.0.0/0',
      '10.0.0.0/7',
      '8.8.8.0/24',
      '::/0',
      'fe80::/10',
      '10.0.0.0',
      '10.0.0.0/33',
      'banana/8',
      '10.0.0.0/8/1',
    ]) {
      assert.throws(() => parseNetwork(bad), Error, bad);
    }
    assert.equal(parseNetwork(' 172.20.0.0/14 ').cidr, '172.20.0.0/14');
  });
});

describe('URLs agentauth may call', () => {
  const refusal = (o: typeof production, url: string) => o.urlRefusal(new URL(url));
  it('https to public hosts; http only to loopback and only in development', () => {
    assert.equal(refusal(production, 'https://agent.example.com/events'), undefined);
    assert.match(refusal(production, 'http://agent.example.com/events')!, /only https/);
    assert.match(refusal(production, 'http://127.0.0.1:8080/events')!, /only https/);
    assert.equal(refusal(development, 'http://127.0.0.1:8080/events'), undefined);
    assert.equal(refusal(development, 'http://localhost:8080/events'), undefined);
    assert.match(refusal(development, 'http://agent.example.com/events')!, /only https/);
    assert.match(refusal(production, 'ftp://agent.example.com/x')!, /only https/);
  });
  it('no credentials in URLs; no loopback, private or special-use literals', () => {
    assert.match(refusal(production, 'https://user:pw@agent.example.com/')!, /credentials/);
    assert.match(refusal(production, 'https://localhost/')!, /loopback/);
    assert.match(refusal(production, 'https://app.localhost/')!, /loopback/);
    assert.match(refusal(production, 'https://[::1]/')!, /loopback/);
    assert.match(refusal(production, 'https://2130706433/')!, /loopback/); // 127.0.0.1, as the URL parser reads it
    assert.match(refusal(production, 'https://[::ffff:169.254.169.254]/')!, /metadata/);
    assert.match(refusal(production, 'https://10.20.0.5/')!, /outside ALLOWED_PRIVATE_NETWORKS/);
    assert.equal(refusal(internal, 'https://10.20.0.5/'), undefined);
  });
});

/** Calls an Outbound's lookup the way node:net does. */
function lookup(o: typeof production, host: string, all: boolean): Promise<{ err: Error | null; address: string | LookupAddress[]; family?: number }> {
  return new Promise((resolve) => {
    o.lookup(host, { all, family: 0 }, (err, address, family) => resolve({ err, address, family }));
  });
}

describe('the lookup contract (issue 12: Node 22 asks for { all: true })', () => {
  it('answers an array when asked for all addresses', async () => {
    const { err, address } = await lookup(development, 'localhost', true);
    assert.equal(err, null);
    assert.ok(Array.isArray(address) && address.length > 0);
    assert.ok(address.every((a) => typeof a.address === 'string' && (a.family === 4 || a.family === 6)));
  });
  it('answers one address and its family when asked for one', async () => {
    const { err, address, family } = await lookup(development, 'localhost', false);
    assert.equal(err, null);
    assert.equal(typeof address, 'string');
    assert.ok(family === 4 || family === 6);
  });
  it('refuses a name whose addresses are all refused, in both shapes', async () => {
    for (const all of [true, false]) {
      const { err } = await lookup(production, 'localhost', all);
      assert.ok(err instanceof OutboundRefusedError);
      assert.match(err.message, /localhost resolves to a refused address: .* loopback address/);
    }
  });
});

describe('requests', () => {
  let server: http.Server;
  let port: number;
  let connections = 0;
  before(async () => {
    server = http.createServer((req, res) => {
      if (req.url === '/moved') res.writeHead(302, { location: 'http://127.0.0.1:1/' }).end();
      else if (req.url === '/big') res.end(Buffer.alloc(70 * 1024));
      else res.writeHead(202, { 'x-seen-method': req.method ?? '' }).end('ok');
    });
    server.on('connection', () => {
      connections += 1;
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(() => server.close());

  it('reaches a loopback name through the module in development: regression for the { all: false } lookup', async () => {
    // Through a host name, so node:net calls our lookup (with all: true on Node 22).
    const answer = await development.request(`http://localhost:${port}/events`, { method: 'POST', body: 'x' });
    assert.equal(answer.status, 202);
    assert.equal(answer.headers['x-seen-method'], 'POST');
  });

  it('never connects to a refused address in production', async () => {
    const before = connections;
    await assert.rejects(production.request(`https://localhost:${port}/`), OutboundRefusedError);
    await assert.rejects(production.request(`https://127.0.0.1:${port}/`), OutboundRefusedError);
    assert.equal(connections, before);
  });

  it('does not follow redirects and bounds the response size', async () => {
    await assert.rejects(development.request(`http://localhost:${port}/moved`), /redirects are not followed/);
    await assert.rejects(development.request(`http://localhost:${port}/big`, { maxBytes: 64 * 1024 }), /larger than 65536 bytes/);
  });

  it('answers fetch-shaped calls with a Response', async () => {
    const response = await development.fetch(`http://localhost:${port}/x`, {
      method: 'POST',
      body: 'a=1',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    assert.equal(response.status, 202);
    assert.equal(await response.text(), 'ok');
  });
});
