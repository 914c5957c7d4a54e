"""Hosts on one machine, for the multi-host tests and benchmarks: Linux network namespaces joined by a veth pair.

Each "host" is a network namespace with its own loopback and one interface (``ptnet0``) on a private /24 that
exists only inside these namespaces (nothing is routed to or from the machine's own network), its own host name
(a UTS namespace per process started on it), and optionally a private disk: a tmpfs mounted over given
directories for every process started there, so that it sees none of the first host's files there, as on a
cluster without a shared file system. Launchers reach the hosts as they reach cluster nodes: through an `ssh`
(OpenMPI's plm_rsh_agent, horovodrun's ssh) that runs the command on the host with a login's bare environment.

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and `ip`, `unshare`; `Hosts.unavailable()` says why not, for a skip.
Everything made is removed on exit: the namespaces (with their interfaces and any process left in them) and
their /etc/netns entries.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

INTERFACE = "ptnet0"

_SSH = """#!/bin/sh
# The ssh of these hosts: [options] HOST COMMAND... runs COMMAND through sh on HOST (a network namespace), with
# the bare environment of a login (PATH, HOME): what a launcher passes on, it passes on itself.
host=
while [ $# -gt 0 ]; do  # options before and after the host (horovodrun puts -o ConnectTimeout=N after it)
  case "$1" in
    -o|-p|-i|-l|-F) shift 2 ;;
    -*) shift ;;
    *) if [ -n "$host" ]; then break; fi; host="$1"; shift ;;
  esac
done
case "$host" in
{cases}
  *) echo "ssh: Could not resolve hostname $host" >&2; exit 255 ;;
esac
"""
_CASE = """  {name}) exec env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME" ip netns exec {namespace} \\
         unshare --uts --mount --propagation private sh -c '{setup} exec sh -c "$0"' "$*" ;;"""


class Hosts:
    """`count` hosts named pt-0, pt-1, ... (a context manager). private: directories that every host but the
    first sees empty (a tmpfs of its own over each)."""

    def __init__(self, count: int = 2, private=()):
        if count != 2:
            raise ValueError(f"Hosts joins exactly 2 namespaces (a veth pair), got count={count}")
        tag = f"{os.getpid() % 100000}"
        self.names = [f"pt-{i}" for i in range(count)]
        self.namespaces = [f"ptf{tag}h{i}" for i in range(count)]
        subnet = 16 + os.getpid() % 200
        self.addresses = [f"10.231.{subnet}.{i + 1}" for i in range(count)]
        self.private = [os.path.abspath(p) for p in private]
        self.bin = tempfile.mkdtemp(prefix="poisson_tf_hosts_")
        self.ssh = os.path.join(self.bin, "ssh")
        self._made = []

    @staticmethod
    def unavailable() -> str:
        """Why hosts cannot be made here ("" when they can)."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        for tool in ("ip", "unshare", "mpirun"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed"
        probe = f"ptprobe{os.getpid() % 100000}"
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if made.returncode != 0:
            return f"cannot create a network namespace: {made.stderr.strip()}"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return ""

    def __enter__(self) -> Hosts:
        try:
            self._create()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _ip(self, *args) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    def _create(self) -> None:
        for namespace in self.namespaces:
            self._ip("netns", "add", namespace)
            self._made.append(namespace)
            self._ip("-n", namespace, "link", "set", "lo", "up")
            os.makedirs(f"/etc/netns/{namespace}", exist_ok=True)  # ip netns exec mounts it over /etc/hosts
            with open(f"/etc/netns/{namespace}/hosts", "w") as f:
                f.write("127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for a, n in zip(self.addresses, self.names)))
        ends = [f"ptf{os.getpid() % 100000}v{i}" for i in range(2)]
        self._ip("link", "add", ends[0], "type", "veth", "peer", "name", ends[1])
        for end, namespace, address in zip(ends, self.namespaces, self.addresses):
            self._ip("link", "set", end, "netns", namespace)
            self._ip("-n", namespace, "link", "set", end, "name", INTERFACE)
            self._ip("-n", namespace, "addr", "add", f"{address}/24", "dev", INTERFACE)
            self._ip("-n", namespace, "link", "set", INTERFACE, "up")
        cases = []
        for i, (name, namespace) in enumerate(zip(self.names, self.namespaces)):
            setup = f"hostname {name};" + "".join(f" mount -t tmpfs tmpfs {shlex.quote(p)};"
                                                  for p in (self.private if i else ()))
            cases.append(_CASE.format(name=name, namespace=namespace, setup=setup))
        with open(self.ssh, "w") as f:
            f.write(_SSH.format(cases="\n".join(cases)))
        os.chmod(self.ssh, 0o755)

    def command(self, host: int, argv: list) -> list:
        """argv as a process on host `host` (its namespace and name; the first host's disk), environment kept:
        for the launcher, started by hand as on a cluster's first node."""
        return ["ip", "netns", "exec", self.namespaces[host], "unshare", "--uts", "sh", "-c",
                f'hostname {self.names[host]}; exec "$@"', "sh", *map(str, argv)]

    def launcher(self, kind: str, per_host: int, argv: list) -> tuple:
        """(command, environment) that runs argv on `per_host` ranks on each host, started on the first as on a
        cluster's first node: kind "mpi" (mpirun, this ssh as its plm_rsh_agent, TCP on INTERFACE, PATH and
        PYTHONPATH forwarded) or "gloo" (horovodrun --gloo next to this Python, this ssh first on PATH; it
        exports the environment itself)."""
        ranks, spread = str(len(self.names) * per_host), ",".join(f"{name}:{per_host}" for name in self.names)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        if kind == "mpi":
            forward = [arg for name in ("PATH", "PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL") if name in env
                       for arg in ("-x", name)]
            command = ["mpirun", "--allow-run-as-root", "-np", ranks, "-H", spread, "--oversubscribe", "--bind-to",
                       "none", "--mca", "plm_rsh_agent", self.ssh, "--mca", "oob_tcp_if_include", INTERFACE,
                       "--mca", "btl_tcp_if_include", INTERFACE, *forward, *map(str, argv)]
        elif kind == "gloo":
            command = [os.path.join(os.path.dirname(sys.executable), "horovodrun"), "--gloo", "-np", ranks, "-H",
                       spread, *map(str, argv)]
            env["PATH"] = self.bin + os.pathsep + env["PATH"]
        else:
            raise ValueError(f"kind must be mpi or gloo, got {kind!r}")
        return self.command(0, command), env

    def processes(self, host: int) -> list:
        """The pids of the processes in host `host`'s namespace."""
        out = subprocess.run(["ip", "netns", "pids", self.namespaces[host]], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def __exit__(self, *exc) -> bool:
        for _ in range(2):  # whatever a test left running there first, then the namespaces themselves
            pids = [p for i in range(len(self._made)) for p in self.processes(i)]
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not pids:
                break
            time.sleep(0.5)
        for namespace in self._made:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
            shutil.rmtree(f"/etc/netns/{namespace}", ignore_errors=True)
        self._made = []
        shutil.rmtree(self.bin, ignore_errors=True)
        return False
