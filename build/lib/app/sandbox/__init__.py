"""A Canvas-compatible LTI 1.3 platform for tests, benchmarks and the demo (SPEC §4).

It behaves as `shared/reference/canvas-ags.md` describes Canvas: the client-credentials token
endpoint, AGS line items, scores and results with Canvas's checks, statuses and messages, the
leaky-bucket throttle, switchable faults, simulated launches and a read-only gradebook.

    app = create_sandbox_app(SandboxConfig(base_url="http://127.0.0.1:8001"))
    seed = seed_demo(app.sandbox_state, tool_jwks_url="http://127.0.0.1:8000/.well-known/jwks.json")
"""

from app.sandbox.app import SandboxApp, create_sandbox_app
from app.sandbox.config import CanvasFlags, SandboxConfig, ThrottleSettings
from app.sandbox.fault_rules import FaultKind, FaultPhase, FaultRule, FaultSettings
from app.sandbox.launch import Forgery, LaunchRequest, issue_launch
from app.sandbox.seed import DemoSeed, Scenario, seed_demo, seed_scenario
from app.sandbox.state import SandboxState

__all__ = [
    "CanvasFlags",
    "DemoSeed",
    "FaultKind",
    "FaultPhase",
    "FaultRule",
    "FaultSettings",
    "Forgery",
    "LaunchRequest",
    "SandboxApp",
    "SandboxConfig",
    "SandboxState",
    "Scenario",
    "ThrottleSettings",
    "create_sandbox_app",
    "issue_launch",
    "seed_demo",
    "seed_scenario",
]
