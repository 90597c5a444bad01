#!/usr/bin/python3
"""interop.py - the userspace TCP against real Linux TCP, no DPDK needed.

tcp_echo (the stack on an AF_PACKET socket) runs in a namespace of its own
on one end of a veth pair; Linux clients in a second namespace talk to it:
one bulk transfer echoed back byte for byte, many concurrent connections,
and a churn of short ones. Each scenario runs on a clean path and then with
the stack's fault layer dropping 3%, reordering, duplicating and corrupting
1% of the frames both ways. The stack's counters are printed after each.

    sudo bench/tcp/interop.py [--build DIR] [--mbytes N] [--conns N] [--churn N]

Needs root (namespaces, veth). Everything it creates is named vrtcp-* and
removed on exit. The client side's transmit checksum offload is turned off
(`ethtool -K IF tx off`, done here by ioctl): over a veth the kernel leaves
checksums to an offload that never happens, and an AF_PACKET reader sees
them unfinished.
"""
import argparse
import array
import fcntl
import hashlib
import os
import random
import selectors
import socket
import struct
import subprocess
import sys
import time

NS_S, NS_C = 'vrtcp-s', 'vrtcp-c'
IF_S, IF_C = 'vrtcp-s0', 'vrtcp-c0'
STACK_IP, CLIENT_IP, PORT = '10.213.0.1', '10.213.0.2', 7
FAULTS = ['--drop', '3', '--reorder', '1', '--dup', '1', '--corrupt', '1']


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def netns_down():
    for ns in (NS_S, NS_C):
        sh('ip', 'netns', 'del', ns, check=False)


def netns_up():
    netns_down()
    sh('ip', 'netns', 'add', NS_S)
    sh('ip', 'netns', 'add', NS_C)
    sh('ip', 'link', 'add', IF_S, 'netns', NS_S, 'type', 'veth', 'peer', 'name', IF_C,
       'netns', NS_C)
    sh('ip', '-n', NS_S, 'link', 'set', IF_S, 'up')
    sh('ip', '-n', NS_C, 'addr', 'add', CLIENT_IP + '/24', 'dev', IF_C)
    sh('ip', '-n', NS_C, 'link', 'set', IF_C, 'up')
    sh('ip', '-n', NS_C, 'link', 'set', 'lo', 'up')
    sh('ip', 'netns', 'exec', NS_C, sys.executable, __file__, '--tx-csum-off', IF_C)


def tx_csum_off(ifname):
    """ETHTOOL_STXCSUM (0x17) through SIOCETHTOOL (0x8946): `ethtool -K IF tx off`."""
    val = array.array('I', [0x17, 0])
    addr, _ = val.buffer_info()
    ifr = struct.pack('16sP', ifname.encode(), addr)
    fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8946, ifr)


def connect(timeout=10.0):
    end = time.time() + timeout
    while True:
        try:
            return socket.create_connection((STACK_IP, PORT), timeout=5)
        except OSError:
            if time.time() > end:
                raise
            time.sleep(0.1)


def echo_many(n, size, seed):
    """n connections at once, each sends size bytes and must read them back."""
    rnd = random.Random(seed)
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(n):
        s = connect()
        s.setblocking(False)
        data = rnd.randbytes(size)
        st = {'s': s, 'out': memoryview(data), 'want': hashlib.sha256(data).digest(),
              'got': hashlib.sha256(), 'n': 0, 'size': size, 'shut': False}
        conns.append(st)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
    left, deadline = n, time.time() + 300
    while left:
        if time.time() > deadline:
            raise SystemExit('timeout: %d of %d connections unfinished' % (left, n))
        for key, ev in sel.select(timeout=1):
            st = key.data
            if ev & selectors.EVENT_WRITE and st['out']:
                try:
                    k = st['s'].send(st['out'][:65536])
                    st['out'] = st['out'][k:]
                except BlockingIOError:
                    pass
                if not st['out'] and not st['shut']:
                    st['s'].shutdown(socket.SHUT_WR)
                    st['shut'] = True
                    sel.modify(st['s'], selectors.EVENT_READ, st)
            if ev & selectors.EVENT_READ:
                try:
                    b = st['s'].recv(262144)
                except BlockingIOError:
                    continue
                if b:
                    st['got'].update(b)
                    st['n'] += len(b)
                    continue
                if st['n'] != st['size'] or st['got'].digest() != st['want']:
                    raise SystemExit('connection echoed %d of %d bytes, or other bytes'
                                     % (st['n'], st['size']))
                sel.unregister(st['s'])
                st['s'].close()
                left -= 1


def churn(n):
    for i in range(n):
        s = connect()
        msg = b'MAIL FROM:<x%d@example.com>\r\n' % i
        s.sendall(msg)
        got = b''
        while len(got) < len(msg):
            b = s.recv(1024)
            if not b:
                break
            got += b
        if got != msg:
            raise SystemExit('churn: connection %d echoed %r' % (i, got))
        s.close()


def client(args):
    t = time.time()
    echo_many(1, args.mbytes << 20, 1)
    bulk = time.time() - t
    t = time.time()
    echo_many(args.conns, 32 << 10, 2)
    many = time.time() - t
    t = time.time()
    churn(args.churn)
    ch = time.time() - t
    print('bulk %d MB echoed in %.2f s (%.1f Mbit/s each way); %d connections x 32 KB in '
          '%.2f s; %d short connections in %.2f s (%.0f/s)'
          % (args.mbytes, bulk, (args.mbytes << 23) / bulk / 1e6, args.conns, many,
             args.churn, ch, args.churn / ch))


def scenario(args, name, faults):
    echo = os.path.join(args.build, 'bench', 'tcp', 'tcp_echo')
    srv = subprocess.Popen(['ip', 'netns', 'exec', NS_S, echo, '--iface', IF_S,
                            '--ip', STACK_IP + '/24', '--port', str(PORT)] + faults,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r = subprocess.run(['ip', 'netns', 'exec', NS_C, sys.executable, __file__, '--client',
                            '--mbytes', str(args.mbytes), '--conns', str(args.conns),
                            '--churn', str(args.churn)], capture_output=True, text=True)
    finally:
        srv.terminate()
        out, err = srv.communicate(timeout=30)
    stats = dict(line.split() for line in out.splitlines() if line.strip())
    keep = ['segs_in', 'segs_out', 'retransmits', 'fast_retransmits', 'rto_expired',
            'ooo_segs', 'sack_blocks_sent', 'drop_csum', 'resets_out', 'timeouts']
    print('%s: %s' % (name, (r.stdout.strip() or r.stderr.strip())))
    print('  stack: ' + ', '.join('%s %s' % (k, stats.get(k, '?')) for k in keep))
    if err.strip():
        print('  stack stderr: ' + err.strip().replace('\n', '; ')[:500])
    return r.returncode == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', default='build')
    ap.add_argument('--mbytes', type=int, default=16)
    ap.add_argument('--conns', type=int, default=200)
    ap.add_argument('--churn', type=int, default=500)
    ap.add_argument('--client', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--tx-csum-off', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tx_csum_off:
        return tx_csum_off(args.tx_csum_off)
    if args.client:
        return client(args)
    netns_up()
    try:
        ok = scenario(args, 'clean', [])
        ok = scenario(args, 'lossy (3% drop, 1% reorder/dup/corrupt both ways)', FAULTS) and ok
    finally:
        netns_down()
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
