"""`floe demo`: the paper's scenario on one machine (the runner is `floe_edge.demo.run.run_demo`).

    user       the demo's user: generated personal data, questions, their adapter and gate (cached)
    run        edge-only, cloud-only and floe answering the same questions over an emulated network
    show       tokens coloured by source, the summary table
    privacy    the check over every byte that went up that nothing private was among them
"""

from __future__ import annotations

from .privacy import PrivacyCheck, check_private, private_items
from .run import CAPTURE_BYTES, DEMO_PACE, EDGE_CTX, DemoOptions, DemoResult, prepare, run_demo
from .show import Row
from .user import DEMO_SEED, DEMO_USER, load_user

__all__ = ["CAPTURE_BYTES", "DEMO_PACE", "DEMO_SEED", "DEMO_USER", "EDGE_CTX", "DemoOptions", "DemoResult",
           "PrivacyCheck", "Row", "check_private", "load_user", "prepare", "private_items", "run_demo"]
