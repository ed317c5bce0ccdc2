"""``python -m app.sandbox``: run the sandbox platform on its own port (demos, benchmarks).

With ``--tool-jwks-url`` it seeds the demo world and prints the platform registration the
service needs, as JSON, before serving. ``--also PORT=CLUSTER`` (repeatable) plays one more
Canvas host on that port, on that database cluster (``--cluster`` is the main port's).
"""

from __future__ import annotations

import argparse
import json
import socket
from dataclasses import asdict

import uvicorn

from app.sandbox.app import create_sandbox_app
from app.sandbox.config import DEFAULT_CLUSTER, SandboxConfig, ThrottleSettings
from app.sandbox.fault_rules import FaultSettings
from app.sandbox.seed import seed_demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--base-url", help="public URL (default http://HOST:PORT)")
    parser.add_argument("--issuer", help="LTI issuer (default: the base URL)")
    parser.add_argument("--tool-jwks-url", help="seed the demo world trusting these tool keys")
    parser.add_argument("--no-throttle", action="store_true", help="never answer 403 throttled")
    parser.add_argument("--request-cost", type=float, default=ThrottleSettings.request_cost)
    parser.add_argument("--latency-ms", type=int, default=0, help="added to every AGS call")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--cluster", default=DEFAULT_CLUSTER, help="the main port's cluster")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="PORT=CLUSTER",
        help="one more Canvas host: its port and database cluster id",
    )
    parser.add_argument("--request-log-limit", type=int, default=10_000)
    return parser.parse_args(argv)


def _hosts(args: argparse.Namespace) -> dict[int, str]:
    clusters = {args.port: args.cluster}
    for entry in args.also:
        port, separator, cluster = entry.partition("=")
        if not separator or not port.isdigit() or not cluster:
            raise SystemExit(f"--also {entry!r}: expected PORT=CLUSTER")
        clusters[int(port)] = cluster
    return clusters


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = SandboxConfig(
        base_url=args.base_url or f"http://{args.host}:{args.port}",
        issuer=args.issuer,
        throttle=ThrottleSettings(enabled=not args.no_throttle, request_cost=args.request_cost),
        faults=FaultSettings(latency_ms=args.latency_ms),
        clusters=_hosts(args),
        request_log_limit=args.request_log_limit,
    )
    app = create_sandbox_app(config)
    if args.tool_jwks_url:
        demo = seed_demo(app.sandbox_state, args.tool_jwks_url)
        registration = {**demo.platform_registration(), "demo": asdict(demo)}
        print(json.dumps(registration, indent=2), flush=True)
    sockets = [_listen(args.host, port) for port in config.clusters]
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, access_log=False))
    server.run(sockets=sockets)


if __name__ == "__main__":
    main()
