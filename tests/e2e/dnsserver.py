"""Real DNS servers on loopback for the end-to-end tests.

Nsd is nsd (authoritative) on 127.0.0.1:<free port> serving zones given as
text; Unbound is an optional validating recursive unbound on another port
with a stub-zone per nsd zone. Both run from a private temporary directory
and are stopped (and the directory removed) by stop() or by leaving a with
block.

A zone is given as its records, relative names allowed, e.g.

    with Nsd({"mx.example": '''
            @      MX 10 mx1
            @      MX 20 mx2
            mx1    A  127.0.0.11
            mx2    A  127.0.0.12
            '''}) as dns:
        relay_config["delivery"]["resolver"] = dns.address   # "127.0.0.1@PORT"

Name zones under example. (or any name that is not special-use): unbound
and libunbound answer test., invalid., localhost. and onion. themselves.

$ORIGIN, $TTL (60), a SOA and an NS record are added unless the text has
its own SOA. Zones named in signed= are signed (ldns-keygen, ECDSA P-256,
one KSK and one ZSK; ldns-signzone) and dns.trust_anchor is a file of their
DS records for libunbound or unbound. tamper= lists (owner, type) RRsets of
a signed zone whose signature is then broken, so a validator finds them
bogus.

set_zone() rewrites a zone (new serial), signals nsd to reload and waits
until nsd answers with the new serial.

libunbound may forward straight to Nsd (dns.address): nsd answers what it
serves authoritatively, which is all a test asks. Unbound is there for tests
that want a recursive server in between (its address likewise).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

NSD = "/usr/sbin/nsd"
UNBOUND = "/usr/sbin/unbound"


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


def dig(port, name, rtype, server="127.0.0.1", dnssec=False):
    """dig +short against server:port; the answer lines."""
    args = ["dig", "@" + server, "-p", str(port), "+short", "+time=1", "+tries=2",
            name, rtype]
    if dnssec:
        args.insert(1, "+dnssec")
    out = subprocess.run(args, capture_output=True, text=True, timeout=10)
    return [line for line in out.stdout.splitlines() if line and not line.startswith(";")]


def _wait(cond, what, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what)


class _Daemon:
    """A server process (self.proc) with a private directory (self.dir):
    stopped, and the directory removed, on leaving a with block."""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Nsd(_Daemon):
    def __init__(self, zones, signed=(), tamper=(), ip="127.0.0.1"):
        self.dir = tempfile.mkdtemp(prefix="vr-nsd-")
        self.ip = ip
        self.port = free_port()
        self.address = "%s@%d" % (ip, self.port)
        self.zones = {}
        self.signed = {z.rstrip(".").lower() for z in signed}
        self.tamper = [(o.rstrip(".").lower(), t.upper()) for o, t in tamper]
        self.serial = int(time.time())
        self.trust_anchor = os.path.join(self.dir, "trust-anchor")
        self.proc = None
        self._keys = {}
        for name, text in zones.items():
            self.zones[name.rstrip(".").lower()] = text
        self._write_all()
        self._write_conf()

    # --- zone files ---

    def _zone_text(self, name, text):
        head = "$ORIGIN %s.\n$TTL 60\n" % name
        if not re.search(r"\bSOA\b", text):
            head += ("@ IN SOA ns.%s. hostmaster.%s. %d 3600 600 86400 60\n"
                     "@ IN NS ns.%s.\nns IN A %s\n" % (name, name, self.serial, name, self.ip))
        lines = [line.strip() for line in text.strip().splitlines()]
        return head + "\n".join(lines) + "\n"

    def _zone_path(self, name):
        return os.path.join(self.dir, name + ".zone")

    def _write_zone(self, name):
        path = self._zone_path(name)
        with open(path + ".tmp", "w") as f:
            f.write(self._zone_text(name, self.zones[name]))
        os.replace(path + ".tmp", path)
        if name in self.signed:
            self._sign(name, path)
        # nsd reloads a zone whose mtime changed: make sure it did.
        served = path + ".signed" if name in self.signed else path
        t = time.time() + 1
        os.utime(served, (t, t))

    def _sign(self, name, path):
        if name not in self._keys:
            keys = []
            for extra in (["-k"], []):   # KSK, then ZSK
                out = subprocess.run(["ldns-keygen", "-a", "ECDSAP256SHA256"] + extra + [name],
                                     cwd=self.dir, capture_output=True, text=True, check=True)
                keys.append(os.path.join(self.dir, out.stdout.strip()))
            self._keys[name] = keys
        subprocess.run(["ldns-signzone", "-f", path + ".signed", path] + self._keys[name],
                       cwd=self.dir, check=True, capture_output=True)
        if self.tamper:
            self._tamper(path + ".signed")

    def _tamper(self, signed):
        """Breaks the RRSIG over each (owner, type) in self.tamper: one base64
        character of the signature changes, so validation fails."""
        out = []
        with open(signed) as f:
            for line in f:
                fields = line.split()
                if (len(fields) > 5 and fields[3] == "RRSIG" and
                        (fields[0].rstrip(".").lower(), fields[4]) in self.tamper):
                    sig = fields[-1]
                    fields[-1] = ("B" if sig[0] != "B" else "C") + sig[1:]
                    line = "\t".join(fields) + "\n"
                out.append(line)
        with open(signed, "w") as f:
            f.writelines(out)

    def _write_all(self):
        for name in self.zones:
            self._write_zone(name)
        with open(self.trust_anchor, "w") as f:
            for name in sorted(self.signed):
                with open(self._keys[name][0] + ".ds") as ds:
                    f.write(ds.read())

    def _write_conf(self):
        zones = "".join('zone:\n\tname: "%s"\n\tzonefile: "%s"\n' %
                        (n, self._zone_path(n) + (".signed" if n in self.signed else ""))
                        for n in self.zones)
        self.conf = os.path.join(self.dir, "nsd.conf")
        with open(self.conf, "w") as f:
            f.write('server:\n\tip-address: %s\n\tport: %d\n\tserver-count: 1\n'
                    '\tusername: ""\n\tchroot: ""\n\tzonesdir: "%s"\n'
                    '\tdatabase: ""\n\tzonelistfile: "%s/zone.list"\n'
                    '\txfrdfile: "%s/xfrd.state"\n\tpidfile: "%s/nsd.pid"\n'
                    '\tlogfile: "%s/nsd.log"\n\tverbosity: 1\n\thide-version: yes\n'
                    'remote-control:\n\tcontrol-enable: no\n%s'
                    % (self.ip, self.port, self.dir, self.dir, self.dir, self.dir,
                       self.dir, zones))

    # --- process ---

    def start(self):
        # a configuration error goes to stderr, not to the log file
        with open(os.path.join(self.dir, "nsd.log"), "ab") as log:
            self.proc = subprocess.Popen([NSD, "-d", "-c", self.conf],
                                         stdout=subprocess.DEVNULL, stderr=log)
        first = next(iter(self.zones))
        _wait(lambda: self.proc.poll() is not None or dig(self.port, first, "SOA", self.ip),
              "nsd to answer for " + first)
        if self.proc.poll() is not None:
            raise RuntimeError("nsd exited: " + self.log())
        return self

    def set_zone(self, name, text):
        """Serves text as zone name from now on (reload, new serial)."""
        name = name.rstrip(".").lower()
        self.zones[name] = text
        self.serial += 1
        self._write_zone(name)
        self.proc.send_signal(signal.SIGHUP)
        serial = str(self.serial)
        _wait(lambda: any(line.split()[2] == serial
                          for line in dig(self.port, name, "SOA", self.ip)
                          if len(line.split()) > 2),
              "nsd to serve serial %s of %s" % (serial, name))

    def log(self):
        try:
            with open(os.path.join(self.dir, "nsd.log")) as f:
                return f.read()
        except OSError:
            return ""


class Unbound(_Daemon):
    """A validating recursive unbound on 127.0.0.1:<free port>: stub-zones to
    nsd's zones, nsd's trust anchor, nothing else reachable."""

    def __init__(self, nsd):
        self.dir = tempfile.mkdtemp(prefix="vr-unbound-")
        self.port = free_port()
        self.address = "127.0.0.1@%d" % self.port
        self.proc = None
        stubs = "".join('stub-zone:\n\tname: "%s"\n\tstub-addr: %s\n' % (z, nsd.address)
                        for z in nsd.zones)
        # unbound answers special-use names (test., invalid., ...) itself.
        tlds = sorted({z.rsplit(".", 1)[-1] for z in nsd.zones})
        anchor = "".join('\tlocal-zone: "%s." nodefault\n' % t for t in tlds)
        if nsd.signed:
            anchor += '\ttrust-anchor-file: "%s"\n' % nsd.trust_anchor
        self.conf = os.path.join(self.dir, "unbound.conf")
        with open(self.conf, "w") as f:
            f.write('server:\n\tinterface: 127.0.0.1\n\tport: %d\n\tusername: ""\n'
                    '\tchroot: ""\n\tdirectory: "%s"\n\tpidfile: "%s/unbound.pid"\n'
                    '\tlogfile: "%s/unbound.log"\n\tuse-syslog: no\n\tdo-ip6: no\n'
                    '\taccess-control: 127.0.0.0/8 allow\n\tdo-not-query-localhost: no\n'
                    '\tmodule-config: "validator iterator"\n\tval-log-level: 2\n'
                    '\tnum-threads: 1\n\tcache-max-ttl: 1\n\tcache-max-negative-ttl: 1\n'
                    '\tharden-dnssec-stripped: yes\n%s'
                    'remote-control:\n\tcontrol-enable: no\n%s'
                    % (self.port, self.dir, self.dir, self.dir, anchor, stubs))

    def start(self):
        self.proc = subprocess.Popen([UNBOUND, "-d", "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: self.proc.poll() is not None or self._answers(), "unbound to answer")
        if self.proc.poll() is not None:
            raise RuntimeError("unbound exited")
        return self

    def _answers(self):
        """Any reply at all (NXDOMAIN included) means it is serving."""
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(self.port), "+time=1",
                              "+tries=1", "localhost", "A"], capture_output=True, text=True)
        return "status:" in out.stdout


class Silent:
    """A UDP and TCP port on 127.0.0.1 that takes queries and never answers:
    a resolver asking it times out."""

    def __init__(self):
        while True:     # the UDP port's TCP twin may be taken: try another
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        self.tcp.listen(16)
        self.address = "127.0.0.1@%d" % self.port

    def stop(self):
        self.udp.close()
        self.tcp.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
