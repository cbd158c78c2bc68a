"""``facecomp serve``: the render server in the foreground, or its status, or stop it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", metavar="PATH",
                        help="socket path (default: $FACECOMP_SERVER_SOCKET, else $XDG_RUNTIME_DIR/facecomp/serve.sock, "
                             "else /tmp/facecomp-$UID/serve.sock)")
    parser.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                        help="stop after S seconds without a request (default 600; 0 = never)")
    parser.add_argument("--memory-mb", type=float, default=None, metavar="MB",
                        help="resident memory above which idle clip sessions are closed, least recent first "
                             "(default 4096; also $FACECOMP_SERVER_MEMORY_MB)")
    parser.add_argument("--max-sessions", type=int, default=None, metavar="N", help="open clip sessions kept (default 64)")
    parser.add_argument("--message-timeout", type=float, default=None, metavar="S",
                        help="a message begun must arrive in full within S seconds, else the connection closes "
                             "(default 30)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--status", action="store_true",
                      help="show the running server: socket, pid, sessions, memory, frames served, mean latency")
    what.add_argument("--stop", action="store_true", help="stop the running server")
    parser.add_argument("--json", action="store_true", help="with --status: print JSON")


def _path(args) -> Path:
    from ..server.paths import default_socket_path
    return Path(os.path.abspath(args.socket)) if args.socket else default_socket_path()


def run(args) -> int:
    from ..errors import SettingsError
    from ..server.client import connect
    from ..server.protocol import NotRunningError

    path = _path(args)
    if args.json and not args.status:
        raise SettingsError("--json goes with --status")
    if args.status or args.stop:
        try:
            client = connect(start=False, timeout=3.0, socket_path=path, request_timeout=10.0)
        except NotRunningError:  # a server that listens but does not answer is an error (exit 1)
            if args.status:
                if args.json:
                    print(json.dumps({"running": False, "socket": str(path)}))
                else:
                    print(f"no facecomp server is running at {path}")
                return 1
            print(f"no facecomp server is running at {path}; nothing to stop")
            return 0
        with client:
            if args.stop:
                client.shutdown()
                print(f"stopped the facecomp server (pid {client.pid}) at {path}")
                return 0
            stats = client.stats()
        stats.pop("ok", None)
        if args.json:
            print(json.dumps({"running": True, **stats}, sort_keys=True))
        else:
            print(f"{stats['server']} server, pid {stats['pid']}, socket {stats['socket']}")
            print(f"  sessions {stats['sessions']} (engines {stats['engines']}, connections {stats['connections']}), "
                  f"memory {stats['rss_mb']:.0f} MB (cap {stats['memory_mb']:.0f} MB)")
            print(f"  frames served {stats['frames']}, mean latency {stats['mean_ms']:.2f} ms "
                  f"(engine {stats['mean_engine_ms']:.2f} ms), up {stats['uptime_s']:.0f} s")
        return 0
    return _serve(args, path)


def _serve(args, path: Path) -> int:
    from ..errors import SettingsError
    from ..server.server import ServerConfig, serve

    kw = {"socket_path": path}
    if args.idle_timeout is not None:
        if args.idle_timeout < 0:
            raise SettingsError("--idle-timeout must be >= 0 (0 = never stop)")
        kw["idle_timeout"] = args.idle_timeout
    memory = args.memory_mb if args.memory_mb is not None else os.environ.get("FACECOMP_SERVER_MEMORY_MB")
    if memory is not None:
        try:
            kw["memory_mb"] = float(memory)
        except ValueError:
            raise SettingsError(f"memory cap {memory!r} is not a number of megabytes") from None
        if kw["memory_mb"] <= 0:
            raise SettingsError("the memory cap must be > 0 MB")
    if args.max_sessions is not None:
        if args.max_sessions < 1:
            raise SettingsError("--max-sessions must be >= 1")
        kw["max_sessions"] = args.max_sessions
    if args.message_timeout is not None:
        if args.message_timeout <= 0:
            raise SettingsError("--message-timeout must be > 0")
        kw["message_timeout"] = args.message_timeout
    config = ServerConfig(**kw)

    def ready(server) -> None:
        print(f"facecomp serve: listening on {config.socket_path} (pid {os.getpid()}); log in "
              f"{config.socket_path.with_suffix('.log')}", file=sys.stderr, flush=True)

    return serve(config, ready=ready)
