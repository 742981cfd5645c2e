# SPDX-License-Identifier: BSD-3-Clause
"""What one P-256 Sign costs the serving process beyond the round trip: the relay
against minimal_handler --loop, one connection each, one request at a time.

Serves quickstart's state directory (its config, PKI and token) through the
relay and through minimal_handler --loop, as scripts/bench does, makes a P-256
key pair through the relay, and then, for each, signs --requests times on one
connection and reports the server process's CPU time per request (from
/proc/PID/stat) and, in a second pass under strace -c, its system calls per
request. Destroys the key pair at the end.

    /usr/bin/python3 test/bench/profile_persistent.py --state-dir DIR \\
        --relay build/dev/kmip-relay --handler build/dev/test/bench/minimal_handler
"""

import argparse
import collections
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from relaytest import (ALG_EC, BYTES, CESSATION_OF_OPERATION, CURVE_P256, OP_ACTIVATE, OP_CREATE_KEY_PAIR, OP_DESTROY, OP_REVOKE,  # noqa: E402
                       OP_SIGN, T, V1, KmipClient, crypto_parameters, find, free_port, item, pair_payload,
                       recv_exact, request, revoke_payload, uid_item, wait_listening)

HASH_SHA256, ALG_ECDSA = 6, 6
DATA = bytes(range(16)) * 32  # what the loop signs for a 48-byte request: its 16 bytes 32 times


def serve(cmd, port, env):
    p = subprocess.Popen(["systemd-socket-activate", "--accept", "--inetd", "-l", "127.0.0.1:%d" % port,
                          "-E", "SOFTHSM2_CONF"] + cmd, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_listening(port)
    return p


def child_of(pid):
    """The per-connection process systemd-socket-activate started last."""
    for _ in range(100):
        kids = open("/proc/%d/task/%d/children" % (pid, pid)).read().split()
        if kids:
            return int(kids[-1])
        time.sleep(0.01)
    raise SystemExit("no connection process under %d" % pid)


def cpu_ticks(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def run(ctx, port, ssa, req, requests, strace):
    """requests answers on one connection; CPU µs per request, or the strace -c
    counts per request."""
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def exchange():
        sock.sendall(req)
        hdr = recv_exact(sock, 8)
        n = struct.unpack(">I", hdr[4:8])[0]
        recv_exact(sock, n + (-n % 8) if len(req) == 48 else n)

    with sock:
        exchange()  # the process has loaded the module and logged in
        pid = child_of(ssa.pid)
        tracer = None
        if strace:
            out = tempfile.NamedTemporaryFile(suffix=".strace")
            tracer = subprocess.Popen(["strace", "-c", "-p", str(pid), "-o", out.name],
                                      stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        start, t0 = cpu_ticks(pid), time.monotonic()
        for _ in range(requests):
            exchange()
        ticks, seconds = cpu_ticks(pid) - start, time.monotonic() - t0
    if not tracer:
        return requests / seconds, ticks / os.sysconf("SC_CLK_TCK") / requests * 1e6
    tracer.wait(timeout=30)
    calls = collections.Counter()
    for line in open(out.name):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            calls[f[-1]] += int(f[3])
    return {name: n / requests for name, n in calls.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--relay", required=True)
    ap.add_argument("--handler", required=True)
    ap.add_argument("--requests", type=int, default=5000)
    o = ap.parse_args()
    d = os.path.abspath(o.state_dir)
    cfg = json.load(open(os.path.join(d, "config.json")))
    p11 = cfg["pkcs11"]
    env = dict(os.environ, SOFTHSM2_CONF=os.path.join(d, "softhsm2.conf"))
    token = [line.split("=", 1)[1].strip() for line in open(os.path.join(d, "env"))
             if line.startswith("export KMIP_TOKEN=")][0]
    relay_port, loop_port = free_port(), free_port()
    procs = [serve([os.path.abspath(o.relay), "--config", os.path.join(d, "config.json")], relay_port, env),
             serve([os.path.abspath(o.handler), "--cert", os.path.join(d, "server.pem"), "--key",
                    os.path.join(d, "server.key"), "--ca", os.path.join(d, "ca.pem"), "--ticket-key",
                    os.path.join(d, "ticket.key"), "--module", p11["module"], "--token", token, "--pin-file",
                    p11["pin_file"], "--lock-file", p11["lock_file"], "--log", os.devnull, "--loop"],
                   loop_port, env)]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(d, "ca.pem"))
    ctx.load_cert_chain(os.path.join(d, "client.pem"), os.path.join(d, "client.key"))
    ctx.check_hostname = False
    admin = KmipClient(ctx.wrap_socket(socket.create_connection(("127.0.0.1", relay_port))))
    try:
        payload = admin.ok(OP_CREATE_KEY_PAIR, pair_payload(V1, ALG_EC, None, CURVE_P256), V1)
        priv = find(payload, T["PrivateKeyUniqueIdentifier"])[0]
        pub = find(payload, T["PublicKeyUniqueIdentifier"])[0]
        admin.ok(OP_ACTIVATE, [uid_item(priv)], V1)
        reqs = {"relay": request(OP_SIGN, [uid_item(priv), crypto_parameters(None, HASH_SHA256, ALG_ECDSA),
                                           item(T["Data"], BYTES, DATA)]),
                "minimal loop": bytes.fromhex(priv.split("_")[0]) + DATA[:16]}
        ports = {"relay": (relay_port, procs[0]), "minimal loop": (loop_port, procs[1])}
        cpu, calls = {}, {}
        for name in reqs:
            cpu[name] = run(ctx, *ports[name], reqs[name], o.requests, False)
        for name in reqs:
            calls[name] = run(ctx, *ports[name], reqs[name], min(o.requests, 2000), True)
        print("P-256 Sign, one connection, one request at a time, %d requests" % o.requests)
        print("  %-14s %10s %16s" % ("", "requests/s", "CPU µs/request"))
        for name in reqs:
            print("  %-14s %10.0f %16.1f" % (name, cpu[name][0], cpu[name][1]))
        print("System calls per request (strace -c; its own cost slows both alike)")
        names = sorted(set(calls["relay"]) | set(calls["minimal loop"]),
                       key=lambda n: -calls["relay"].get(n, 0))
        print("  %-16s %8s %14s" % ("", "relay", "minimal loop"))
        for n in names:
            r, m = calls["relay"].get(n, 0), calls["minimal loop"].get(n, 0)
            if r >= 0.5 or m >= 0.5:
                print("  %-16s %8.1f %14.1f" % (n, r, m))
        admin.ok(OP_REVOKE, revoke_payload(priv, CESSATION_OF_OPERATION), V1)
        for uid in (priv, pub):
            admin.ok(OP_DESTROY, [uid_item(uid)], V1)
    finally:
        admin.sock.close()
        for p in procs:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
