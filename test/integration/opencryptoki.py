# SPDX-License-Identifier: BSD-3-Clause
"""An openCryptoki software token (Debian's opencryptoki 3.8.1, PKCS11_SW) of a
test's own, served by a pkcsslotd that the test starts and stops itself.

openCryptoki's paths are compiled in, with no variable to move them: the slot
daemon and the library read /etc/opencryptoki/opencryptoki.conf, keep the token
in /var/lib/opencryptoki/<tokname>, lock in /var/lock/opencryptoki, talk over
/var/run/pkcsslotd.socket, log to /var/log/opencryptoki (pkcsslotd makes it), and
share the slot table in a System V segment whose key is ftok("/usr/sbin/pkcsslotd",
'b') - the same key for every daemon on the host, which a second pkcsslotd
"reclaims" (destroys) if it finds it taken. So the token lives in a mount and IPC
namespace of its own (unshare --mount --ipc, private propagation): tmpfs over /run
(hence /var/run and /var/lock), /dev/shm (the token's POSIX segment) and
/var/log, and the test's directories bound over /etc/opencryptoki and
/var/lib/opencryptoki. Nothing of it reaches the host or a system pkcsslotd, and
it all goes when the namespace's last process ends. Every process that uses the
token - pkcsconf, pkcs11-tool, the relay - enters the namespace through nsenter
(wrapper). Needs root, as the tests run."""

import os
import re
import select
import signal
import subprocess

from relaytest import ToolToken

OPENCRYPTOKI_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so"
# The software token's library, which libopencryptoki unloads at C_Finalize,
# preloaded into the relays (relay_env) so that it stays mapped: LeakSanitizer
# then names it in the stacks of what it leaks, and test/lsan.supp suppresses
# those. (The relay keeps each module itself mapped.) It defines no C_ function,
# so a SoftHSM beside it in the same relay is not interposed.
STDLL = "/usr/lib/x86_64-linux-gnu/opencryptoki/stdll/libpkcs11_sw.so.0"
PKCSSLOTD = "/usr/sbin/pkcsslotd"
DEFAULT_SO_PIN = "87654321"  # a fresh PKCS11_SW token's
TIMEOUT = 30  # seconds for any one step

# The namespace's first process: makes the private mounts and runs pkcsslotd in
# the foreground. On a "restart" line it restarts the daemon (to read a new
# opencryptoki.conf); on "wipe" it also removes every token's files and shared
# memory in between (C_InitToken on a PKCS11_SW token that has been initialised
# once leaves its SO unable to log in: CKR_FUNCTION_FAILED). When its standard
# input closes - the test ends it, or the test process dies - it stops the daemon
# and exits, and the namespace goes with it.
HOLDER = r"""
set -eu
d=$1
mount -t tmpfs -o mode=0755,size=16m kmip-relay-ock-run /run
mkdir -m 1777 /run/lock
mount -t tmpfs -o mode=1777,size=64m kmip-relay-ock-shm /dev/shm
mount -t tmpfs -o mode=0755,size=16m kmip-relay-ock-log /var/log
mount --bind "$d/etc" /etc/opencryptoki
mount --bind "$d/lib" /var/lib/opencryptoki
start() {
	rm -f /run/pkcsslotd.pid
	/usr/sbin/pkcsslotd -f >>"$d/pkcsslotd.log" 2>&1 &
	daemon=$!
	# The pid file comes after the socket and the shared memory.
	while [ ! -e /run/pkcsslotd.pid ]; do
		kill -0 "$daemon" 2>/dev/null || { echo "pkcsslotd exited"; exit 1; }
		sleep 0.02
	done
	echo ready
}
stop() {
	kill -TERM "$daemon" 2>/dev/null || true
	# pkcsslotd ignores SIGTERM while a process it knows still runs.
	i=0
	while kill -0 "$daemon" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
	kill -KILL "$daemon" 2>/dev/null || true
	wait "$daemon" 2>/dev/null || true
}
start
while read -r command; do
	case $command in
	restart) stop; start ;;
	wipe) stop; rm -rf "$d"/lib/* /dev/shm/*; start ;;
	esac
done
stop
"""


def ftok(path, proj_id):
    """glibc's ftok()."""
    st = os.stat(path)
    return (st.st_ino & 0xFFFF) | ((st.st_dev & 0xFF) << 16) | ((proj_id & 0xFF) << 24)


# The places a pkcsslotd on the host would use or leave; host_state() must not
# change while the tests run.
HOST_DIRS = ("/etc/opencryptoki", "/var/lib/opencryptoki", "/var/lock/opencryptoki",
             "/var/log/opencryptoki")
HOST_FILES = ("/var/run/pkcsslotd.pid", "/var/run/pkcsslotd.socket")


def host_state():
    """What the host has where openCryptoki keeps its state: every file and
    directory under HOST_DIRS (mode, owner, size, modification time), whether
    HOST_FILES exist, /dev/shm's openCryptoki segments (named after their token
    directory) and whether the slot daemon's System V segment exists."""
    state = {}
    for top in HOST_DIRS + HOST_FILES:
        if not os.path.lexists(top):
            state[top] = None
            continue
        for root, dirs, files in os.walk(top):
            for name in [""] + dirs + files:
                path = os.path.join(root, name) if name else root
                st = os.lstat(path)
                state[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)
    state["/dev/shm"] = sorted(n for n in os.listdir("/dev/shm") if "opencryptoki" in n)
    state["sysvipc"] = ftok(PKCSSLOTD, ord("b")) in sysv_shm_keys()
    return state


def sysv_shm_keys():
    """The keys of the System V shared memory segments of the caller's IPC namespace."""
    with open("/proc/sysvipc/shm") as f:
        return [int(line.split()[0]) for line in f.readlines()[1:]]


def run(cmd, input=None):
    return subprocess.run(cmd, check=True, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=TIMEOUT)


class OpenCryptokiToken(ToolToken):
    """An openCryptoki software token (PKCS11_SW) in directory, initialised with
    pkcsconf: label, user PIN pin, SO PIN so_pin (4 to 8 characters each). The same
    interface as relaytest.Token: module, label, pin, pin_file, env, wrapper (the
    command prefix that runs a program in the token's namespace), tool(), keypair(),
    objects(), usage(), slots(), add_token(), reset(), close()."""

    module = OPENCRYPTOKI_MODULE
    kind = "opencryptoki"

    def __init__(self, directory, label="kmip-relay", pin="1234", so_pin="123456"):
        self.dir, self.label, self.pin, self.so_pin = directory, label, pin, so_pin
        self.env = dict(os.environ)
        self.relay_env = {"LD_PRELOAD": STDLL}
        self.tokens = []  # [(slot, label, pin, so_pin)], in slot order
        self.pin_file = os.path.join(directory, "pin")
        os.makedirs(os.path.join(directory, "etc"), exist_ok=True)
        os.makedirs(os.path.join(directory, "lib"), exist_ok=True)
        with open(self.pin_file, "w") as f:
            f.write(pin + "\n")
        os.chmod(self.pin_file, 0o600)
        self.holder = None
        self.tokens.append((0, label, pin, so_pin))
        self._write_conf()
        try:
            self._start()
            self._init(0, label, pin, so_pin)
        except BaseException:
            self.close()
            raise

    def _write_conf(self):
        with open(os.path.join(self.dir, "etc", "opencryptoki.conf"), "w") as f:
            f.write("version opencryptoki-3.1\n")
            for slot, *_ in self.tokens:
                f.write("slot %d\n{\nstdll = libpkcs11_sw.so\ntokname = tok%d\n}\n" % (slot, slot))

    def _start(self):
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--ipc", "--propagation", "private", "/bin/sh", "-c", HOLDER, "sh",
             self.dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.wrapper = ["nsenter", "--target", str(self.holder.pid), "--mount", "--ipc"]
        self._ready()

    def _ready(self):
        """Waits for the holder's "ready" (pkcsslotd serves)."""
        ready, _, _ = select.select([self.holder.stdout], [], [], TIMEOUT)
        line = self.holder.stdout.readline().decode() if ready else ""
        if line.strip() != "ready":
            log = ""
            if os.path.exists(os.path.join(self.dir, "pkcsslotd.log")):
                with open(os.path.join(self.dir, "pkcsslotd.log")) as f:
                    log = f.read()
            raise RuntimeError("pkcsslotd did not start: %r %s" % (line, log))

    def _init(self, slot, label, pin, so_pin):
        """A new token's C_InitToken with the default SO PIN, its SO PIN, C_InitPIN."""
        conf = self.wrapper + ["pkcsconf", "-c", str(slot)]
        run(conf + ["-I", "-S", DEFAULT_SO_PIN], input=(label + "\n").encode())
        if so_pin != DEFAULT_SO_PIN:
            run(conf + ["-P", "-S", DEFAULT_SO_PIN, "-n", so_pin])
        run(conf + ["-u", "-S", so_pin, "-n", pin])

    def _command(self, command):
        self.holder.stdin.write(command.encode() + b"\n")
        self.holder.stdin.flush()
        self._ready()

    def reset(self):
        """Every token made afresh: no objects, the same labels and PINs. Only
        while no process uses the token (pkcsslotd is restarted)."""
        self._command("wipe")
        for token in self.tokens:
            self._init(*token)

    def add_token(self, label, pin, so_pin="123456"):
        """Another software token in another slot of the same pkcsslotd (which
        restarts to read its new opencryptoki.conf)."""
        slot = len(self.tokens)
        self.tokens.append((slot, label, pin, so_pin))
        self._write_conf()
        self._command("restart")
        self._init(slot, label, pin, so_pin)

    def close(self):
        """Stops pkcsslotd; the namespace and its mounts end with the last process
        in it. Idempotent."""
        if self.holder is None:
            return
        holder, self.holder = self.holder, None
        try:
            holder.stdin.close()
        except OSError:
            pass
        try:
            holder.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(timeout=TIMEOUT)
        holder.stdout.close()

    def tool(self, *args):
        """pkcs11-tool on this token, logged in."""
        return run(self.wrapper + ["pkcs11-tool", "--module", self.module, "--token-label", self.label,
                                   "--login", "--pin", self.pin] + list(args))

    def slots(self):
        """[(slot ID, token label)] of the slots with a token, in the module's order."""
        out = run(self.wrapper + ["pkcs11-tool", "--module", self.module, "--list-token-slots"]).stdout.decode()
        return [(int(m.group(1), 16), m.group(2).strip())
                for m in re.finditer(r"^Slot \d+ \(0x([0-9a-f]+)\):.*\n(?:.*\n)*?\s*token label\s*:\s*(.*)$",
                                     out, flags=re.M)]


class OnOpenCryptoki:
    """Mixed in before a TokenTestCase (class X(OnOpenCryptoki, SomeTest)): the
    same tests on an openCryptoki token of their own; each test also checks that
    the host's openCryptoki state (host_state) is as it was."""

    token_class = OpenCryptokiToken

    def setUp(self):
        self.host_before = host_state()
        super().setUp()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.assertEqual(host_state(), self.host_before, "the host's openCryptoki state changed")
