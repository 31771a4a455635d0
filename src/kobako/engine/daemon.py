"""kobakod: the daemon's entry point — flags, startup, serving the API, clean shutdown.

Startup order: settings -> state directories -> data-root lock (one daemon per
data-root) -> pidfile -> state DB and services -> listeners. SIGTERM/SIGINT stop the
listeners, finish in-flight requests briefly, remove the pidfile and the unix
sockets. Containers keep running (live restore is the default).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import grp
import logging
import os
import signal
import socket
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kobako.engine.config import (
    DEFAULT_CONFIG_FILE,
    DEFAULT_DATA_ROOT,
    DEFAULT_EXEC_ROOT,
    ConfigError,
    DaemonConfig,
    build_config,
    parse_address_pool,
)
from kobako.linux.files import write_atomic

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("kobakod")

SHUTDOWN_GRACE = 3.0


class StartupError(Exception):
    """The daemon cannot start; the message says what and why."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kobakod", description="kobako daemon: serves the Docker Engine API")
    p.add_argument("-H", "--host", dest="hosts", action="append", default=[],
                   help="daemon socket(s) to listen on: unix:///path, tcp://host:port (TLS), fd://")
    p.add_argument("--data-root", help=f"root of persistent state (default {DEFAULT_DATA_ROOT})")
    p.add_argument("--exec-root", help=f"root of runtime state (default {DEFAULT_EXEC_ROOT})")
    p.add_argument("-p", "--pidfile", help="path of the pid file")
    p.add_argument("--config-file", default=None,
                   help=f"daemon configuration file (default {DEFAULT_CONFIG_FILE})")
    p.add_argument("--insecure-registry", dest="insecure_registries", action="append",
                   default=[], help="registry reachable over plain HTTP / unverified TLS")
    p.add_argument("--registry-mirror", dest="registry_mirrors", action="append", default=[],
                   help="preferred Docker Hub mirror")
    p.add_argument("-l", "--log-level", help="debug, info, warn, error or fatal (default info)")
    p.add_argument("-D", "--debug", action="store_true", help="debug mode")
    p.add_argument("-G", "--group", help="group owning the unix socket (default kobako)")
    p.add_argument("--bip", help="address and prefix of the default bridge")
    p.add_argument("--default-address-pool", dest="default_address_pools", action="append",
                   default=[], help="base=CIDR,size=N pool for networks (repeatable)")
    p.add_argument("--label", dest="labels", action="append", default=[],
                   help="daemon label key=value")
    p.add_argument("--tls", action="store_true", help="use TLS (implied by --tlsverify)")
    p.add_argument("--tlsverify", action="store_true", help="use TLS and verify client certs")
    p.add_argument("--tlscacert", help="CA certificate clients must be signed by")
    p.add_argument("--tlscert", help="server TLS certificate")
    p.add_argument("--tlskey", help="server TLS key")
    p.add_argument("-v", "--version", action="store_true", help="print version and exit")
    return p


def config_from_args(args: argparse.Namespace) -> DaemonConfig:
    pools = [parse_address_pool(s) for s in args.default_address_pools]
    flags: dict[str, Any] = {
        "hosts": args.hosts, "data_root": args.data_root, "exec_root": args.exec_root,
        "pidfile": args.pidfile, "log_level": args.log_level, "group": args.group,
        "insecure_registries": args.insecure_registries,
        "registry_mirrors": args.registry_mirrors, "bip": args.bip,
        "default_address_pools": pools, "labels": args.labels, "debug": args.debug,
        "tls.verify": args.tlsverify, "tls.cacert": args.tlscacert,
        "tls.cert": args.tlscert, "tls.key": args.tlskey,
    }
    path = args.config_file
    if path is None and os.path.exists(DEFAULT_CONFIG_FILE):
        path = DEFAULT_CONFIG_FILE
    elif path is not None and not os.path.exists(path):
        raise ConfigError(f"configuration file {path} does not exist")
    cfg = build_config(flags, path)
    if cfg.debug and args.log_level is None:
        cfg.log_level = "debug"
    return cfg


# --- listeners ------------------------------------------------------------------------

@dataclass
class Listener:
    url: str
    kind: str  # unix | tcp | fd
    address: str
    port: int = 0


def parse_host(url: str) -> Listener:
    if url.startswith("unix://"):
        path = url[len("unix://"):] or "/run/kobako.sock"
        if not os.path.isabs(path):
            raise ConfigError(f"invalid host {url!r}: the socket path must be absolute")
        return Listener(url, "unix", path)
    if url.startswith("tcp://"):
        hostport = url[len("tcp://"):].rstrip("/")
        host, _, port = hostport.rpartition(":")
        if not host:
            host, port = hostport, "2376"
        try:
            return Listener(url, "tcp", host.strip("[]") or "0.0.0.0", int(port))
        except ValueError as exc:
            raise ConfigError(f"invalid host {url!r}: bad port") from exc
    if url.startswith("fd://"):
        return Listener(url, "fd", url[len("fd://"):])
    raise ConfigError(f"invalid host {url!r}: use unix://, tcp:// (with TLS) or fd://")


def tls_context(cfg: DaemonConfig, listener: Listener) -> ssl.SSLContext:
    """TCP is served only with TLS and verified client certificates."""
    import ssl

    tls = cfg.tls
    missing = [flag for flag, value in (("--tlscacert", tls.cacert), ("--tlscert", tls.cert),
                                        ("--tlskey", tls.key)) if not value]
    if not tls.verify or missing:
        raise ConfigError(
            f"refusing to listen on {listener.url}: TCP is only served with TLS and verified "
            "client certificates; pass --tlsverify --tlscacert --tlscert --tlskey"
            + (f" (missing {', '.join(missing)})" if missing else ""))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert, tls.key)  # type: ignore[arg-type]
        ctx.load_verify_locations(tls.cacert)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS material for {listener.url}: {exc}") from exc
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def systemd_sockets() -> list[socket.socket]:
    """Sockets passed by systemd socket activation (LISTEN_PID/LISTEN_FDS)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0"))
    return [socket.socket(fileno=3 + i) for i in range(count)]


def _socket_in_use(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def prepare_unix_path(path: str) -> None:
    if os.path.exists(path) or os.path.islink(path):
        if _socket_in_use(path):
            raise StartupError(f"socket {path} is in use by another daemon")
        os.unlink(path)  # a stale socket from a daemon that died
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)


def bind_unix(path: str, group: str) -> socket.socket:
    """The listening socket at `path`, bound early: clients that come while the daemon
    still starts wait in its backlog (as with socket activation) instead of failing."""
    prepare_unix_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # no window where the socket is world-connectable
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    sock.listen(128)
    sock.setblocking(False)
    secure_unix_socket(path, group)
    return sock


def secure_unix_socket(path: str, group: str) -> None:
    """root-owned, 0660, group `group` when that group exists (as dockerd does)."""
    gid = 0
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        if group:
            log.warning("group %r not found; socket %s stays root:root", group, path)
    os.chown(path, 0 if os.geteuid() == 0 else -1, gid if os.geteuid() == 0 else -1)
    os.chmod(path, 0o660)


# --- state directories, lock, pidfile -----------------------------------------------

class DataRootLock:
    """An exclusive flock on data-root/kobakod.lock: one daemon per data-root."""

    def __init__(self, data_root: str):
        self.path = os.path.join(data_root, "kobakod.lock")
        self.fd = -1

    def acquire(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip()
            os.close(self.fd)
            self.fd = -1
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StartupError(
                    f"another kobakod (pid {holder or '?'}) is already using data-root "
                    f"{os.path.dirname(self.path)}; give each daemon its own --data-root") from exc
            raise
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1


def write_pidfile(path: str) -> None:
    try:
        old = int(Path(path).read_text().strip() or "0")
    except (OSError, ValueError):
        old = 0
    if old and old != os.getpid() and _pid_alive(old) and _is_kobakod(old):
        raise StartupError(f"pid file found, ensure kobakod is not running or delete {path}")
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    write_atomic(path, str(os.getpid()))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_kobakod(pid: int) -> bool:
    try:
        return b"kobakod" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)


def daemon_id(data_root: str) -> str:
    path = Path(data_root) / "engine-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        import uuid

        ident = str(uuid.uuid4())
        write_atomic(str(path), ident)
        return ident


# --- services -------------------------------------------------------------------------

def make_image_service(cfg: DaemonConfig, db_path: Path, warnings: list[str]) -> Any:
    try:
        from kobako.image.images import ImageService
    except ImportError as exc:
        warnings.append(f"image library unavailable: {exc}")
        log.warning("image library unavailable: %s", exc)
        return None
    return ImageService(cfg.data_root, db_path,
                        insecure_registries=cfg.insecure_registries)


def _docker_driver_name(images: Any) -> str:
    """Docker's names for what `docker info` shows: overlay2 or vfs."""
    name = str(getattr(images, "driver", "overlay2") or "overlay2")
    return "overlay2" if name.startswith("overlay") else name


def make_container_service(cfg: DaemonConfig, events: Any, images: Any, db_path: Any,
                           stack: ExitStack, monitor: Any) -> Any:
    """The container engine, running containers through the `monitor` process.

    Each component gets a state-DB connection of its own: SQLite then serializes their
    writes (WAL, busy timeout), where one connection shared by threads would mix their
    statements."""
    from kobako.engine.containers import ContainerService
    from kobako.engine.state import open_state_db

    def connection():
        conn = open_state_db(db_path)
        stack.callback(conn.close)
        return conn

    if images is None:
        from kobako.api.services import UnavailableContainerService

        return UnavailableContainerService()
    service = ContainerService(data_root=cfg.data_root, exec_root=cfg.exec_root,
                               events=events, images=images, conn=connection(), monitor=monitor,
                               log_defaults={"Type": cfg.log_driver, "Config": cfg.log_opts})
    images.users = service.image_users  # rmi and prune know the containers of an image
    from kobako.engine.volumes import VolumeService

    service.volumes = VolumeService(data_root=cfg.data_root, conn=connection(), events=events,
                                    containers=service)
    from kobako.network.service import NetworkService

    service.networks = NetworkService(conn=connection(), exec_root=cfg.exec_root,
                                      containers=service,
                                      events=events, bip=cfg.bip,
                                      pools=cfg.default_address_pools or None)
    return service


# --- serving --------------------------------------------------------------------------

async def serve(cfg: DaemonConfig, listeners: list[Listener], context: Any,
                bound: dict[str, socket.socket], ready: Any = None) -> None:
    """`bound`: the unix sockets, by path, already listening (see bind_unix)."""
    import asyncio

    from kobako.api.http import Server
    from kobako.api.server import create_app

    if cfg.log_level == "debug":
        logging.getLogger("kobakod.access").setLevel(logging.DEBUG)
    server = Server(create_app(context))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # containers restored and repaired before the API answers, as dockerd does:
        # no client may see the state a killed daemon left behind
        startup = getattr(context.containers, "startup", None)
        if startup is not None:
            await startup()
        activated = systemd_sockets()
        for lst in listeners:
            if lst.kind == "unix":
                await server.serve_unix(bound[lst.address])
            elif lst.kind == "tcp":
                await server.serve_tcp(lst.address, lst.port, ssl=tls_context(cfg, lst))
            else:
                if not activated:
                    raise StartupError(f"{lst.url}: no sockets passed by systemd (LISTEN_FDS)")
                for sock in activated:
                    if sock.family == socket.AF_UNIX:
                        await server.serve_unix(sock)
                    else:
                        await server.serve_tcp(None, 0, sock=sock)
            log.info("API listening on %s", lst.url)
        if ready is not None:
            ready()
        await stop.wait()
        log.info("received a stop signal; shutting down (containers keep running)")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.shutdown(SHUTDOWN_GRACE)
        shutdown = getattr(context.containers, "shutdown", None)
        if shutdown is not None:
            await shutdown()


def setup_logging(level: str) -> None:
    levels = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "error": logging.ERROR, "fatal": logging.CRITICAL}
    logging.basicConfig(level=levels.get(level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run(cfg: DaemonConfig) -> None:
    listeners = [parse_host(h) for h in cfg.effective_hosts()]
    for lst in listeners:
        if lst.kind == "tcp":
            tls_context(cfg, lst)  # refuse before touching any state
    os.makedirs(cfg.data_root, mode=0o711, exist_ok=True)
    with ExitStack() as stack:
        lock = DataRootLock(cfg.data_root)
        lock.acquire()
        stack.callback(lock.release)
        os.makedirs(cfg.exec_root, mode=0o700, exist_ok=True)
        # The sockets before anything is imported: clients that come while the daemon
        # starts wait in the backlog (as with socket activation) instead of failing.
        bound: dict[str, socket.socket] = {}
        for lst in listeners:
            if lst.kind == "unix":
                bound[lst.address] = bind_unix(lst.address, cfg.group)
                stack.callback(remove_quietly, lst.address)
                stack.callback(bound[lst.address].close)
        # The monitor's process next: before any thread, and before the API and image
        # code are imported, so the heap the monitor shares with the daemon stays small.
        from kobako.engine.monitor_process import MonitorProcess

        monitor = MonitorProcess()
        monitor.start(os.path.join(cfg.exec_root, "monitor.log"))
        stack.callback(monitor.stop)
        pidfile = cfg.effective_pidfile()
        write_pidfile(pidfile)
        stack.callback(remove_quietly, pidfile)
        import asyncio

        from kobako.api.context import Context
        from kobako.engine.events import EventBus
        from kobako.engine.state import open_state_db, state_db_path

        db_path = state_db_path(cfg.data_root)
        conn = open_state_db(db_path)
        stack.callback(conn.close)
        warnings: list[str] = []
        events = EventBus()
        images = make_image_service(cfg, db_path, warnings)
        if images is not None and hasattr(images, "close"):
            stack.callback(images.close)
        containers = make_container_service(cfg, events, images, db_path, stack, monitor)
        context = Context(config=cfg, containers=containers,
                          images=images, events=events, daemon_id=daemon_id(cfg.data_root),
                          storage_driver=_docker_driver_name(images),
                          warnings=warnings)
        context.extra["state_db"] = conn
        asyncio.run(serve(cfg, listeners, context, bound))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        from kobako import __version__

        print(f"kobakod version {__version__}")
        return 0
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"kobakod: {exc}", file=sys.stderr)
        return 1
    setup_logging(cfg.log_level)
    try:
        run(cfg)
    except (ConfigError, StartupError) as exc:
        log.error("%s", exc)
        print(f"kobakod: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        log.error("startup failed: %s", exc)
        print(f"kobakod: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
