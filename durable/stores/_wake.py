"""Cross-process wake-ups for processes sharing one store on one host.

Workers waiting for work and clients waiting for a result would otherwise poll
the store. Instead, every process-part that waits opens a :class:`Listener`,
and whoever changes the store calls :meth:`Waker.notify` (or
:func:`notify_once`): the waiter wakes within a millisecond and looks again.
A wake-up carries no state of its own. It only says "something of this kind
changed, look again", so losing one costs only latency: waiters must keep a
(long) poll timeout as a fallback, and nothing here is ever required for
correctness.

Design
------

- **Rendezvous directory.** All processes using one store meet in
  :func:`wake_dir`: ``<tempdir>/durable-wake-<uid>/<sha256(realpath(store))[:16]>``.
  It is short because an ``AF_UNIX`` socket path is limited to about 107
  bytes while store paths can be long, and it is per user: both levels are
  created with mode ``0o700``, and a directory that is not ours or that others
  may write to is refused (its sockets could belong to another user, who
  would then read our wake-ups or fill the directory).
- **One datagram socket per listener.** A :class:`Listener` binds a
  non-blocking ``AF_UNIX`` ``SOCK_DGRAM`` socket at
  ``<wake_dir>/<kind>+<kind>....<pid>.<counter>``: the file name says which
  kinds of wake-up it wants (``work``, ``signal``, ``end``, ``events``...), and
  the pid and a per-process counter make it unique among live processes. A
  file already at that name was left by a dead process with our pid and is
  replaced, unless a socket still answers there (another pid namespace
  sharing the temp directory): then the next counter is tried.
- **Sending is a directory listing plus one ``sendto`` per listener.** A
  :class:`Waker` owns one unbound non-blocking datagram socket and sends
  ``kind + b" " + detail`` to every socket file whose kinds include ``kind``.
  The listing is cached, keyed on the directory's inode and ``st_mtime_ns``,
  so a notify with no change in listeners costs one ``lstat`` plus the sends.
  Directory timestamps come from a coarse clock (a few milliseconds), so, as
  with git's "racily clean" index entries, a listing taken less than
  ``_SETTLE_NS`` after the directory last changed is not trusted: a listener
  bound in the same clock tick would not change the key.
- **Datagrams are never waited for.** A receiver whose buffer is full makes
  ``sendto`` fail with ``EAGAIN`` (Linux queues ``net.unix.max_dgram_qlen``,
  often 10, datagrams per socket): the wake-up is not sent, but it is not lost
  either, since a wake-up's detail may name the one instance it is about (a
  signal's). The waker remembers that this listener is owed a bare wake-up of
  that kind, ``kind + b" "`` with an empty detail, which receivers take as
  "look at everything of this kind", and a timer thread sends it as soon as
  the socket takes it again (retrying after 1 ms, then backing off to 1 s, for
  at most ``_OWED_FOR`` seconds). A socket file nobody is bound to
  any more (its process was killed, or closed it without unlinking) refuses
  the datagram: the sender unlinks it, so dead listeners are swept by the next
  notify. The sender never raises on I/O errors; it logs them at debug level.
- **Degrading.** Where ``AF_UNIX`` (or a uid) does not exist, e.g. on
  Windows, or when the directory is unsafe or a path too long, a listener
  never wakes before its timeout and a waker reaches nobody: callers fall
  back to polling.

Stores without a directory wake their waiters their own way: a store's
``listener(kinds)`` method returns an object with this module's
:class:`WakeListener` interface (the PostgreSQL store's ``LISTEN``), and
:func:`store_listener` is how the engine and the clients get one, whatever
the store (``None``: it has none, they only poll).

One narrow race is accepted: if a listener dies and a new process with the
same pid (and counter) binds the same path just between a sender's refused
``sendto`` and its ``unlink``, the new listener loses its file and falls back
to polling.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import math
import os
import re
import socket
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Protocol

import trio

__all__ = ["Listener", "WakeListener", "WakeUnavailable", "Waker", "notify_once", "split_wakeup", "store_listener",
           "wake_dir"]

log = logging.getLogger("durable.wake")

#: Whether this platform has datagram Unix sockets and user ids at all.
SUPPORTED: bool = hasattr(socket, "AF_UNIX") and hasattr(os, "getuid")

#: The longest ``detail`` a wake-up may carry.
MAX_DETAIL = 200

#: A receive buffer comfortably above the largest datagram sent here.
_RECV_SIZE = 4096

#: How many queued datagrams one :meth:`Listener.wait` returns at most.
_MAX_DRAIN = 1024

#: A listing is trusted only once the directory has not changed for this long
#: (filesystem timestamps tick in jiffies, up to 10 ms; some filesystems are coarser).
_SETTLE_NS = 100_000_000

#: Retrying an owed bare wake-up: the first delay, the longest, and how long before giving up (the receiver's poll
#: then covers it: a listener that has not drained its socket for that long is stuck or gone).
_OWED_FIRST = 0.001
_OWED_MAX_DELAY = 1.0
_OWED_FOR = 300.0

_KIND = re.compile(r"[A-Za-z0-9_-]{1,32}\Z")

_counter = itertools.count(1)
_counter_lock = threading.Lock()


class WakeUnavailable(OSError):
    """Wake-ups cannot be used here: no ``AF_UNIX``, or an unsafe wake directory."""


def _check_kind(kind: str) -> str:
    """Return ``kind`` if it is a short ascii word, else raise :class:`ValueError`."""
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(f"a wake-up kind is 1 to 32 of [A-Za-z0-9_-], not {kind!r}")
    return kind


def _dir_path(store_path: str) -> str:
    """The wake directory of ``store_path``, computed only (nothing is created or checked)."""
    if not SUPPORTED:
        raise WakeUnavailable("wake-ups need AF_UNIX sockets and user ids, which this platform lacks")
    digest = hashlib.sha256(os.path.realpath(os.fspath(store_path)).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"durable-wake-{os.getuid()}", digest)


def _check_safe(path: str, st: os.stat_result) -> None:
    """Raise :class:`WakeUnavailable` unless ``st`` (an ``lstat`` of ``path``) is a directory only we may write."""
    if not stat.S_ISDIR(st.st_mode):
        raise WakeUnavailable(f"wake directory {path!r} is not a directory")
    if st.st_uid != os.getuid():
        raise WakeUnavailable(f"wake directory {path!r} belongs to uid {st.st_uid}, not to us ({os.getuid()})")
    if st.st_mode & 0o022:
        raise WakeUnavailable(f"wake directory {path!r} is writable by others (mode {st.st_mode & 0o777:o})")


def _make_safe_dir(path: str) -> None:
    """Create ``path`` with mode 0o700 unless it exists, then check it is ours alone."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    else:
        os.chmod(path, 0o700)  # in case the umask took bits we need
    _check_safe(path, os.lstat(path))


def wake_dir(store_path: str) -> str:
    """The wake-up directory shared by every process using ``store_path``, created if needed.

    ``<tempdir>/durable-wake-<uid>/<first 16 hex digits of sha256(realpath(store_path))>``,
    both levels created with mode ``0o700``. Raises :class:`WakeUnavailable` (an
    :class:`OSError`) where ``AF_UNIX`` is missing, or when either level is not
    a directory, not owned by this user, or writable by group or others; other
    :class:`OSError` if it cannot be created.
    """
    path = _dir_path(store_path)
    _make_safe_dir(os.path.dirname(path))
    _make_safe_dir(path)
    return path


class WakeListener(Protocol):
    """What waits for a store's wake-ups: :class:`Listener` (LMDB), ``PostgresListener`` (PostgreSQL)."""

    async def open(self) -> None:
        """Start listening (wake-ups sent from then on are received); never fails for want of wake-ups."""

    async def wait(self, timeout: float | None = None) -> list[bytes]:
        """The wake-ups received (``kind + b" " + detail``; an empty detail: some change of that kind), at least
        one, or ``[]`` after ``timeout`` seconds."""
        ...

    def close(self) -> None:
        """Stop listening; idempotent."""


def store_listener(store: Any, kinds: Iterable[str]) -> WakeListener | None:
    """A new listener for ``store``'s wake-ups of ``kinds`` (not opened yet), or ``None`` if the store has none
    (a :class:`~durable.stores.MemoryStore`). A store with no ``listener`` method but a ``path`` gets the
    :class:`Listener` of that path."""
    make = getattr(store, "listener", None)
    if not callable(make):
        path = getattr(store, "path", None)  # a store of a directory: its wake-ups come through the directory
        return Listener(path, kinds) if isinstance(path, str) else None
    made: WakeListener | None = make(list(kinds))
    return made


def split_wakeup(datagram: bytes) -> tuple[str, bytes]:
    """Split a datagram returned by :meth:`Listener.wait` into its kind and detail."""
    kind, _, detail = datagram.partition(b" ")
    return kind.decode("ascii", "replace"), detail


def _is_live(path: str) -> bool:
    """Whether a socket is bound at ``path`` (a datagram ``connect`` to a dead socket file is refused)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


def _drain(std: socket.socket) -> list[bytes]:
    """Every datagram queued on non-blocking ``std`` (at most ``_MAX_DRAIN``), without blocking."""
    got: list[bytes] = []
    while len(got) < _MAX_DRAIN:
        try:
            got.append(std.recv(_RECV_SIZE))
        except BlockingIOError:
            break
    return got


def _next_counter() -> int:
    """A number unique within this process (across threads)."""
    with _counter_lock:
        return next(_counter)


class Listener:
    """Receives the wake-ups of some kinds sent to one store (one per waiting process-part).

    ``Listener(store_path, kinds)`` binds nothing until :meth:`open` (or ``async
    with``); :meth:`wait` then returns the queued wake-ups, and :meth:`close`
    unlinks the socket. When wake-ups are unavailable (see :attr:`available`)
    the listener is a no-op: :meth:`wait` just sleeps out its timeout.
    """

    def __init__(self, store_path: str, kinds: Iterable[str]) -> None:
        """Prepare a listener for ``kinds`` (short ascii words) on ``store_path``; nothing is bound yet."""
        if isinstance(kinds, str):
            raise TypeError("kinds is an iterable of words, not a single string")
        self.kinds: tuple[str, ...] = tuple(dict.fromkeys(_check_kind(k) for k in kinds))
        if not self.kinds:
            raise ValueError("a listener needs at least one kind")
        self.store_path = os.fspath(store_path)
        self._counter = _next_counter()
        self._path: str | None = None
        self._std: socket.socket | None = None
        self._sock: trio.socket.SocketType | None = None
        self._opened = False
        self._closed = False

    @property
    def path(self) -> str | None:
        """The bound socket's path, or ``None`` when not open or unavailable."""
        return self._path

    @property
    def available(self) -> bool:
        """Whether this listener is bound and can be woken (``False``: callers only poll)."""
        return self._sock is not None and not self._closed

    async def open(self) -> None:
        """Bind the socket (in trio). Idempotent; degrades to a no-op if wake-ups are unavailable.

        Raises :class:`trio.ClosedResourceError` once :meth:`close` was called.
        """
        if self._closed:
            raise trio.ClosedResourceError("this wake-up listener is closed")
        if self._opened:
            return
        self._opened = True
        try:
            directory = wake_dir(self.store_path)
        except OSError as exc:
            log.debug("wake-ups unavailable for %r, polling only: %s", self.store_path, exc)
            return
        try:
            std = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except OSError as exc:
            log.debug("cannot create a wake-up socket, polling only: %s", exc)
            return
        std.setblocking(False)
        sock = trio.socket.from_stdlib_socket(std)
        path = ""
        try:
            for _ in range(5):
                path = os.path.join(directory, f"{'+'.join(self.kinds)}.{os.getpid()}.{self._counter}")
                try:
                    await sock.bind(path)
                    break
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
                if _is_live(path):
                    # Another pid namespace (a container) on the same /tmp: try another name.
                    self._counter = _next_counter()
                else:
                    # Left by a dead process that had our pid.
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            else:
                raise OSError(errno.EADDRINUSE, "no free wake-up socket name", path)
        except BaseException as exc:
            # Nothing of ours is left at ``path``: a bind that succeeded returns
            # (trio's bind thread is not abandoned on cancellation).
            sock.close()
            if not isinstance(exc, OSError):
                raise
            log.debug("cannot bind wake-up socket %r, polling only: %s", path, exc)
            return
        self._std, self._sock, self._path = std, sock, path
        if self._closed:  # closed by another task while binding
            self.close()

    async def wait(self, timeout: float | None = None) -> list[bytes]:
        """Wait for wake-ups: every datagram queued (at least one), or ``[]`` after ``timeout`` seconds.

        After the first datagram the queue is drained without blocking (at most
        ``_MAX_DRAIN`` datagrams per call). Each datagram is ``kind + b" " +
        detail`` (see :func:`split_wakeup`). Raises :class:`RuntimeError` before
        :meth:`open`, and :class:`trio.ClosedResourceError` once closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("this wake-up listener is closed")
        if not self._opened:
            raise RuntimeError("call Listener.open() (or use `async with`) before wait()")
        deadline = math.inf if timeout is None else trio.current_time() + max(timeout, 0.0)
        sock, std = self._sock, self._std
        if sock is None or std is None:
            await trio.sleep_until(deadline)
            return []
        # Already queued: return it even with no time left (a checkpoint that
        # cannot be cancelled after draining, so nothing drained is lost).
        await trio.lowlevel.checkpoint_if_cancelled()
        got = _drain(std)
        if got:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return got
        with trio.move_on_at(deadline):
            while True:
                await trio.lowlevel.wait_readable(std)  # ClosedResourceError if closed meanwhile
                got = _drain(std)
                if got:
                    return got
        return []

    def close(self) -> None:
        """Close the socket and unlink its file. Idempotent; safe inside or outside trio."""
        self._closed = True
        sock, std, path = self._sock, self._std, self._path
        self._sock = self._std = None
        self._path = None
        if sock is not None and std is not None:
            try:
                sock.close()  # wakes a task blocked in wait() with ClosedResourceError
            except RuntimeError:  # outside trio: nobody can be waiting
                std.close()
        if path is not None:
            try:
                os.unlink(path)
            except OSError:
                pass

    async def __aenter__(self) -> Listener:
        """Open the listener."""
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the listener."""
        self.close()

    def __repr__(self) -> str:
        """The kinds and the socket path."""
        return f"Listener(kinds={'+'.join(self.kinds)!r}, path={self._path!r})"


_all_wakers: weakref.WeakSet[Waker] = weakref.WeakSet()


class Waker:
    """Sends wake-ups to the listeners of one store (thread-safe, synchronous, never blocks).

    Owns one unbound non-blocking datagram socket, created on first use. Never
    raises on I/O errors: a wake-up is best effort.
    """

    def __init__(self, store_path: str, *, skip_own: bool = False) -> None:
        """A waker for the listeners of ``store_path``; nothing is opened yet.

        ``skip_own``: never wake this process's own listeners (a store's commits
        wake other processes; this one knows what it wrote).
        """
        self.store_path = os.fspath(store_path)
        self._skip = f".{os.getpid()}." if skip_own else None
        try:
            self._dir: str | None = _dir_path(self.store_path)
        except OSError as exc:
            log.debug("wake-ups unavailable for %r: %s", self.store_path, exc)
            self._dir = None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._closed = False
        # The cached listing: (st_ino, st_mtime_ns) of the directory -> [(path, kinds)].
        self._key: tuple[int, int] | None = None
        self._entries: list[tuple[str, frozenset[str]]] = []
        # Listeners whose socket was full: the kinds each is owed a bare wake-up of; the timer retrying them.
        self._owed: dict[str, set[str]] = {}
        self._owed_since = 0.0
        self._retry: threading.Timer | None = None
        self._delay = _OWED_FIRST
        _all_wakers.add(self)

    def notify(self, kind: str, detail: bytes = b"") -> int:
        """Send ``kind.encode() + b" " + detail`` to every listener of ``kind``; return how many it reached.

        A listener whose buffer is full counts as reached: it is owed a bare
        wake-up of ``kind`` (an empty detail: "look at everything"), sent
        by a timer as soon as its socket takes it again. A socket file nobody is bound to any
        more is unlinked. ``detail`` is at most :data:`MAX_DETAIL` bytes;
        a bad ``kind`` or ``detail`` raises :class:`ValueError`, I/O never raises.
        """
        _check_kind(kind)
        if len(detail) > MAX_DETAIL:
            raise ValueError(f"a wake-up detail is at most {MAX_DETAIL} bytes, not {len(detail)}")
        if self._dir is None:
            return 0
        datagram = kind.encode("ascii") + b" " + bytes(detail)
        with self._lock:
            if self._closed:
                return 0
            entries = self._listing()
            if not entries:
                return 0
            sock = self._socket()
            if sock is None:
                return 0
            reached = 0
            dead: list[str] = []
            for path, kinds in entries:
                if kind not in kinds:
                    continue
                try:
                    sock.sendto(datagram, path)
                except BlockingIOError:
                    reached += 1  # its buffer is full: owed a bare wake-up, sent once it takes one again
                    self._owe(path, kind)
                except (ConnectionRefusedError, FileNotFoundError) as exc:
                    dead.append(path)
                    if isinstance(exc, ConnectionRefusedError):
                        self._unlink(path)
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:  # some kernels report a full buffer so
                        reached += 1
                        self._owe(path, kind)
                    else:
                        log.debug("wake-up %r to %r failed: %s", kind, path, exc)
                else:
                    reached += 1
            if dead:
                self._entries = [e for e in self._entries if e[0] not in dead]
                for path in dead:
                    self._owed.pop(path, None)
            return reached

    def _owe(self, path: str, kind: str) -> None:
        """(With the lock held) ``path``'s socket is full: send it ``kind + b" "`` once it takes datagrams again."""
        if not self._owed:
            self._owed_since = time.monotonic()
        self._owed.setdefault(path, set()).add(kind)
        if self._retry is None:
            self._delay = _OWED_FIRST
            self._schedule()

    def _schedule(self) -> None:
        """(With the lock held) retry the owed wake-ups after the current delay."""
        timer = threading.Timer(self._delay, self._pay)
        timer.daemon = True
        self._retry = timer
        timer.start()

    def _pay(self) -> None:
        """(The timer's thread) send the owed bare wake-ups their sockets take now; retry the rest, backing off."""
        with self._lock:
            self._retry = None
            sock = self._sock
            if self._closed or sock is None or not self._owed:
                self._owed.clear()
                return
            for path, kinds in list(self._owed.items()):
                for kind in sorted(kinds):
                    try:
                        sock.sendto(kind.encode("ascii") + b" ", path)
                    except BlockingIOError:
                        break  # still full: later
                    except OSError as exc:
                        if exc.errno == errno.ENOBUFS:
                            break
                        kinds.clear()  # gone (or broken): nobody left to wake
                        break
                    kinds.discard(kind)
                if not kinds:
                    del self._owed[path]
            if not self._owed:
                return
            if time.monotonic() - self._owed_since > _OWED_FOR:
                log.debug("giving up owed wake-ups to %s: their sockets stayed full", sorted(self._owed))
                self._owed.clear()
                return
            self._delay = min(self._delay * 2, _OWED_MAX_DELAY)
            self._schedule()

    def listens(self, kind: str) -> bool:
        """Whether any listener of ``kind`` is registered (a stat of the directory when it did not change)."""
        if self._dir is None:
            return False
        with self._lock:
            return not self._closed and any(kind in kinds for _, kinds in self._listing())

    def close(self) -> None:
        """Close the socket; later notifies reach nobody. Idempotent."""
        with self._lock:
            self._closed = True
            sock, self._sock = self._sock, None
            self._entries = []
            self._key = None
            self._owed.clear()
            retry, self._retry = self._retry, None
        if retry is not None:
            retry.cancel()
        if sock is not None:
            sock.close()

    def __enter__(self) -> Waker:
        """The waker itself; it is closed on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the waker."""
        self.close()

    def _socket(self) -> socket.socket | None:
        """The sending socket, created on first use (call with the lock held)."""
        if self._sock is None:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
            except OSError as exc:
                log.debug("cannot create a wake-up socket: %s", exc)
                return None
            self._sock = sock
        return self._sock

    def _listing(self) -> list[tuple[str, frozenset[str]]]:
        """The listeners in the wake directory, re-listed only when it changed (call with the lock held)."""
        directory = self._dir
        assert directory is not None
        try:
            st = os.lstat(directory)
        except OSError:
            self._key, self._entries = None, []
            return []  # no listener ever opened here
        key = (st.st_ino, st.st_mtime_ns)
        if key == self._key:
            return self._entries
        try:
            _check_safe(directory, st)
            _check_safe(os.path.dirname(directory), os.lstat(os.path.dirname(directory)))
            entries: list[tuple[str, frozenset[str]]] = []
            with os.scandir(directory) as it:
                for entry in it:
                    kinds_part, dot, _ = entry.name.partition(".")
                    if dot and (self._skip is None or self._skip not in entry.name):
                        entries.append((entry.path, frozenset(kinds_part.split("+"))))
        except OSError as exc:
            log.debug("cannot list wake-up listeners in %r: %s", directory, exc)
            self._key, self._entries = None, []
            return []
        # A listing taken in the same timestamp tick as the last change may miss
        # a listener bound later in that tick: trust it only once settled.
        settled = time.time_ns() - st.st_mtime_ns > _SETTLE_NS
        self._key = key if settled else None
        self._entries = entries
        return entries

    @staticmethod
    def _unlink(path: str) -> None:
        """Remove a dead listener's socket file, ignoring errors."""
        try:
            os.unlink(path)
        except OSError as exc:
            log.debug("cannot remove dead wake-up socket %r: %s", path, exc)
        else:
            log.debug("removed dead wake-up socket %r", path)

    def __repr__(self) -> str:
        """The wake directory."""
        return f"Waker(dir={self._dir!r})"


_wakers: dict[str, Waker] = {}
_wakers_lock = threading.Lock()


def notify_once(store_path: str, kind: str, detail: bytes = b"") -> int:
    """:meth:`Waker.notify` through a waker cached per ``store_path`` (thread-safe)."""
    key = os.fspath(store_path)
    with _wakers_lock:
        waker = _wakers.get(key)
        if waker is None:
            waker = _wakers[key] = Waker(key)
    return waker.notify(kind, detail)


def _after_fork_in_child() -> None:
    """Replace locks a thread of the parent may have held at ``fork()``: they would never be released."""
    global _counter_lock, _wakers_lock
    _counter_lock = threading.Lock()
    _wakers_lock = threading.Lock()
    for waker in list(_all_wakers):
        waker._lock = threading.Lock()
        waker._retry = None  # (its timer thread is not in the child)
        waker._owed = {}
        if waker._skip is not None:
            waker._skip = f".{os.getpid()}."  # the child's own listeners, not its parent's
            waker._key, waker._entries = None, []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
