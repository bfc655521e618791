"""A private Docker engine for the tests and benchmarks.

Starts its own `dockerd` with its own socket, data root and exec root, no bridge network and
no iptables, so the tests never see or touch a user's engine. The data root is kept between
runs (it caches the base images); the daemon itself lives only as long as the test session.

Plain Python, no pytest: `tests/conftest.py` and the benchmarks both use it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DIR = Path(os.environ.get("HELIO_TEST_ENGINE_DIR", "/var/tmp/helio-test-engine"))
ROOTFS_CACHE = Path(os.environ.get("HELIO_TEST_CACHE_DIR", "/var/cache/helio-test"))
SESSION_LABEL = "io.heliovision.test-session"


class EngineUnavailable(RuntimeError):
    """The private engine cannot be started; the message says what to do."""


@dataclass
class PrivateEngine:
    root: Path = DEFAULT_DIR
    start_timeout_s: float = 60.0
    dockerd: str | None = None  # default: dockerd on PATH, or Debian's /usr/sbin/dockerd
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _lock_fd: int | None = field(default=None, init=False, repr=False)
    _log: object = field(default=None, init=False, repr=False)
    external: bool = field(default=False, init=False)
    base_url: str = field(default="", init=False)

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "docker.pid"

    @property
    def logfile(self) -> Path:
        return self.root / "dockerd.log"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "PrivateEngine":
        explicit = os.environ.get("HELIO_TEST_DOCKER_HOST")
        if explicit:
            # The user asked for their own engine by name: use it, start nothing.
            self.external = True
            self.base_url = explicit
            self._wait_ready(explicit, self.start_timeout_s)
            return self
        dockerd = self.dockerd or shutil.which("dockerd") or "/usr/sbin/dockerd"
        if not Path(dockerd).is_file():
            raise EngineUnavailable(
                "dockerd is not installed. Install the Debian package docker.io "
                "(scripts/run-tests does it when run as root: `sudo scripts/run-tests`), "
                "or set HELIO_TEST_DOCKER_HOST to an engine the tests may use."
            )
        if os.geteuid() != 0:
            raise EngineUnavailable(
                "The engine tests start a private dockerd, which needs root. Run the tests as root "
                "(`sudo scripts/run-tests`), or set HELIO_TEST_DOCKER_HOST=unix:///path/to/docker.sock "
                "to an engine the tests may use."
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self._clean_stale()
        exec_root = self._exec_root()
        self.base_url = f"unix://{self.socket}"
        self._log = open(self.logfile, "ab")
        self._proc = subprocess.Popen(
            [
                dockerd,
                "--host", self.base_url,
                "--data-root", str(self.root / "data"),
                "--exec-root", str(exec_root),
                "--pidfile", str(self.pidfile),
                "--bridge", "none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready(self.base_url, self.start_timeout_s)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the daemon we started, by its own pid; never any other engine."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=10)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        for leftover in (self.socket, self.pidfile):
            leftover.unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.base_url, version="auto", timeout=120)

    # -- helpers ---------------------------------------------------------------------------
    def _exec_root(self) -> Path:
        # containerd's socket path lives under the exec root and must stay below the 108-byte
        # limit of unix socket paths, so keep it short and unique to this engine dir.
        digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:8]
        return Path(f"/run/helio-{digest}")

    def _take_lock(self) -> None:
        fd = os.open(self.root / "engine.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EngineUnavailable(
                f"Another test run is using the private engine in {self.root}. Wait for it, or give "
                "this run its own with HELIO_TEST_ENGINE_DIR=/var/tmp/some-other-dir."
            ) from None
        self._lock_fd = fd

    def _clean_stale(self) -> None:
        """A daemon left over by a killed run (we hold the lock, so it is nobody's) is stopped."""
        pidfiles = [self.pidfile, self._exec_root() / "containerd" / "containerd.pid"]
        for pidfile in pidfiles:
            pid = _read_pid(pidfile)
            if pid and _is_alive(pid) and _cmdline_mentions(pid, ("dockerd", "containerd")):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 15
                while _is_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if _is_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            pidfile.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)

    def _wait_ready(self, base_url: str, timeout_s: float) -> None:
        import docker

        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise EngineUnavailable(
                    f"dockerd exited with code {self._proc.returncode} while starting; "
                    f"its log:\n{_tail(self.logfile)}"
                )
            try:
                client = docker.DockerClient(base_url=base_url, version="auto", timeout=5)
                client.ping()
                client.close()
                return
            except Exception as exc:  # not up yet
                last_error = exc
                time.sleep(0.2)
        raise EngineUnavailable(
            f"The engine at {base_url} did not answer within {timeout_s:.0f} s ({last_error}).\n"
            f"{_tail(self.logfile) if not self.external else ''}"
        )


# -- base images without a registry ---------------------------------------------------------
def busybox_image(client) -> str:
    """A ~2 MB image made from Debian's busybox-static, cached by the binary's hash."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise EngineUnavailable("busybox-static is not installed (apt-get install busybox-static).")
    tag = "helio-test/busybox:" + _file_digest(busybox)[:12]
    if _has_image(client, tag):
        return tag
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        (root / "bin").mkdir(parents=True)
        for sub in ("tmp", "proc", "sys", "dev", "etc", "data"):
            (root / sub).mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in ("sh", "sleep", "echo", "cat", "ls", "wget", "httpd", "true", "false", "kill", "date", "env"):
            (root / "bin" / applet).symlink_to("busybox")
        _import_dir(client, root, tag)
    return tag


def debian_base_image(client, suite: str = "bookworm", include: tuple[str, ...] = ("python3", "python3-venv", "ca-certificates")) -> str:
    """A Debian base made with debootstrap, cached as a rootfs tarball and as an image tag."""
    key = hashlib.sha256(f"{suite}|minbase|{','.join(include)}|v1".encode()).hexdigest()[:12]
    tag = f"helio-test/debian-{suite}:{key}"
    if _has_image(client, tag):
        return tag
    tarball = _debootstrap_tarball(suite, include, key)
    client.api.import_image(src=str(tarball), repository=tag.split(":")[0], tag=key)
    if not _has_image(client, tag):
        raise EngineUnavailable(f"Importing {tarball} did not produce {tag}.")
    return tag


def _debootstrap_tarball(suite: str, include: tuple[str, ...], key: str) -> Path:
    ROOTFS_CACHE.mkdir(parents=True, exist_ok=True)
    tarball = ROOTFS_CACHE / f"debian-{suite}-{key}.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise EngineUnavailable("debootstrap is not installed (apt-get install debootstrap; scripts/run-tests does it as root).")
    lock_fd = os.open(ROOTFS_CACHE / f"{key}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # another run may be making the same one
        if tarball.exists():
            return tarball
        with tempfile.TemporaryDirectory(dir=ROOTFS_CACHE) as tmp:
            root = Path(tmp) / "rootfs"
            mirror = os.environ.get("HELIO_DEBIAN_MIRROR", "http://deb.debian.org/debian")
            cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(include)}", suite, str(root), mirror]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise EngineUnavailable(f"debootstrap failed ({' '.join(cmd)}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
            # Keep the image small and reproducible: no apt lists or caches.
            for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for child in (root / sub).glob("*"):
                    if child.is_file():
                        child.unlink()
            partial = tarball.with_suffix(".partial")
            with tarfile.open(partial, "w") as tar:
                tar.add(root, arcname=".")
            partial.rename(tarball)
        return tarball
    finally:
        os.close(lock_fd)


def remove_labelled(client, label: str) -> int:
    """Force-remove every container carrying `label` (key or key=value)."""
    removed = 0
    for container in client.containers.list(all=True, filters={"label": label}):
        try:
            container.remove(force=True, v=True)
            removed += 1
        except Exception:
            pass
    return removed


def _import_dir(client, root: Path, tag: str) -> None:
    with tempfile.NamedTemporaryFile(suffix=".tar") as buf:
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(root, arcname=".")
        buf.flush()
        repo, _, version = tag.partition(":")
        client.api.import_image(src=buf.name, repository=repo, tag=version)


def _has_image(client, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and ") Z" in stat.read_text())


def _cmdline_mentions(pid: int, names: tuple[str, ...]) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return any(name in cmdline for name in names)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
