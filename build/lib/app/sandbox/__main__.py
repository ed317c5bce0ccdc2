"""``python -m app.sandbox``: run the sandbox platform on its own port (demos, benchmarks).

With ``--tool-jwks-url`` it seeds the demo world and prints the platform registration the
service needs, as JSON, before serving.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import uvicorn

from app.sandbox.app import create_sandbox_app
from app.sandbox.config import SandboxConfig, ThrottleSettings
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = SandboxConfig(
        base_url=args.base_url or f"http://{args.host}:{args.port}",
        issuer=args.issuer,
        throttle=ThrottleSettings(enabled=not args.no_throttle, request_cost=args.request_cost),
        faults=FaultSettings(latency_ms=args.latency_ms),
    )
    app = create_sandbox_app(config)
    if args.tool_jwks_url:
        demo = seed_demo(app.sandbox_state, args.tool_jwks_url)
        registration = {**demo.platform_registration(), "demo": asdict(demo)}
        print(json.dumps(registration, indent=2), flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
