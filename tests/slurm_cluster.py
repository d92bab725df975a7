"""A real one-node SLURM cluster for tests: munged (as the munge user, with a generated key), slurmctld and slurmd
in the foreground, a generated slurm.conf, every state/spool/log file under one fresh directory and free TCP ports,
so it never touches /etc/slurm, /etc/munge or a cluster another test run has started.

Clients reach it through `SlurmCluster.env` (SLURM_CONF points at the generated config, whose AuthInfo names this
cluster's munge socket). `stop()` cancels every job of this cluster, waits for them to end, then stops the daemons
it started (by pid) and removes the directory.

    python tests/slurm_cluster.py      # bring one up by hand, print its SLURM_CONF, Ctrl-C tears it down
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = "apt-get install -y slurm-wlm munge"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel", "srun")


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here, or None."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"SLURM/munge binaries not installed ({', '.join(missing)} missing); install with: {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "a test SLURM cluster needs root (slurmd runs jobs as the submitting user and munged as munge)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return f"no 'munge' user (the munge package creates it); install with: {INSTALL_HINT}"
    return None


def _die_with_parent() -> None:
    """Popen preexec_fn: the kernel sends SIGTERM to the daemon when the test process dies, however it dies."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """One node (this machine's short hostname), `cpus` CPUs, one default partition `test`."""

    def __init__(self, cpus: int = 2):
        self.cpus = cpus
        self.node = socket.gethostname().split(".")[0]
        self.dir = Path(tempfile.mkdtemp(prefix="svlm-slurm-"))
        self.conf = self.dir / "slurm.conf"
        self._procs: list[subprocess.Popen] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for k in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))]:
            if k != "SLURM_CONF":
                del self.env[k]

    # ---- bring-up ------------------------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "SlurmCluster":
        try:
            self._start_munge()
            self._write_conf()
            for daemon in ("slurmctld", "slurmd"):
                log = open(self.dir / "log" / f"{daemon}.stdout", "w")
                self._procs.append(subprocess.Popen([daemon, "-D", "-f", str(self.conf)], env=self.env,
                                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                                    preexec_fn=_die_with_parent))
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        munge = pwd.getpwnam("munge")
        self.dir.chmod(0o755)  # munged (user munge) must traverse it
        mdir = self.dir / "munge"
        mdir.mkdir()
        mdir.chmod(0o711)  # munged: the socket dir must be searchable by all, writable only by munge
        key = mdir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for p in (mdir, key):
            os.chown(p, munge.pw_uid, munge.pw_gid)
        self.munge_socket = mdir / "munge.socket"
        self._procs.append(subprocess.Popen(
            ["munged", "--foreground", f"--socket={self.munge_socket}", f"--key-file={key}",
             f"--pid-file={mdir / 'munged.pid'}", f"--log-file={mdir / 'munged.log'}",
             f"--seed-file={mdir / 'munged.seed'}"],
            user=munge.pw_uid, group=munge.pw_gid, extra_groups=[], stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "munged.stderr", "w"), start_new_session=True, preexec_fn=_die_with_parent))
        deadline = time.time() + 20
        while not self.munge_socket.exists():
            if self._procs[-1].poll() is not None or time.time() > deadline:
                raise RuntimeError(f"munged did not start: {(self.dir / 'munged.stderr').read_text()}")
            time.sleep(0.05)

    def _write_conf(self) -> None:
        for d in ("state", "spool", "log", "run"):
            (self.dir / d).mkdir()
        (self.dir / "plugstack.conf").write_text("")
        d = self.dir
        self.conf.write_text(f"""\
ClusterName=svlmtest
SlurmctldHost={self.node}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={d}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
KillWait=5
MinJobAge=3600
Waittime=0
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN
PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            for p in self._procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited ({p.returncode}):\n{self.logs()}")
            r = self.run(["sinfo", "-h", "-n", self.node, "-o", "%T"], check=False)
            state = r.stdout.strip()
            if r.returncode == 0 and state == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"node {self.node} not idle after {timeout:.0f}s (state {state!r}):\n{self.logs()}")

    # ---- use -----------------------------------------------------------------------------------------------------
    def run(self, cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
        r = subprocess.run(cmd, env=kw.pop("env", self.env), capture_output=True, text=True,
                           timeout=kw.pop("timeout", 60), **kw)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} -> {r.returncode}: {r.stderr.strip()}")
        return r

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...); {} once the record is gone."""
        r = self.run(["scontrol", "show", "job", "-o", str(job_id)], check=False)
        if r.returncode != 0:
            return {}
        return dict(f.split("=", 1) for f in r.stdout.split() if "=" in f)

    def wait_job(self, job_id: str, timeout: float, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                                            "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL")) -> dict:
        deadline = time.time() + timeout
        info: dict = {}
        while time.time() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} still {info.get('JobState')!r} after {timeout:.0f}s")

    def logs(self) -> str:
        out = []
        for f in sorted((self.dir / "log").glob("*")) + [self.dir / "munged.stderr"]:
            if f.is_file():
                out.append(f"--- {f.name}\n{f.read_text()[-3000:]}")
        return "\n".join(out)

    # ---- tear-down -----------------------------------------------------------------------------------------------
    def stop(self) -> None:
        daemons_up = len(self._procs) == 3 and all(p.poll() is None for p in self._procs)
        if daemons_up:  # end this cluster's jobs (their processes are children of slurmstepd, not ours)
            self.run(["scancel", "--full", "-u", pwd.getpwuid(os.geteuid()).pw_name], check=False)
            deadline = time.time() + 30
            while time.time() < deadline:
                r = self.run(["squeue", "-h", "-o", "%i"], check=False)
                if r.returncode != 0 or not r.stdout.strip():
                    break
                time.sleep(0.5)
        for p in reversed(self._procs):  # slurmd, slurmctld, then munged
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self._procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    reason = unavailable_reason()
    if reason:
        raise SystemExit(reason)
    with SlurmCluster() as cluster:
        print(f"export SLURM_CONF={cluster.conf}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
