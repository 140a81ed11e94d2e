"""`floe eval`: edge, cloud and floe on the same held-out personal data (DESIGN.md section 9), in the shape of the
paper's table: teacher-forced top-1, exact match, personalization gain, latency under RTT profiles, bytes per query.
"""

from __future__ import annotations

from .options import CLOUD_MODELS, SYSTEMS, EvalOptions
from .plots import write_plots
from .report import PAPER, headroom, markdown_table, verdict
from .runner import run_eval

__all__ = ["EvalOptions", "SYSTEMS", "CLOUD_MODELS", "PAPER", "headroom", "markdown_table", "run_eval", "verdict",
           "write_plots"]
