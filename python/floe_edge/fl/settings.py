"""The federation's run config (Flower's `[tool.flwr.app.config]`, overridable with `flwr run --run-config`): one
typed view that the ServerApp and the ClientApp both read, and the pyproject.toml of the Flower app that `floe fl
sim` / `floe fl up` write (components: floe_edge.fl.server_app:app and floe_edge.fl.client_app:app)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .client import ClientSettings, ClientSpec, FlConfigError, parse_clients

__all__ = ["RunSettings", "app_pyproject"]


@dataclass(frozen=True)
class RunSettings:
    num_server_rounds: int = 3
    clients: str = "u1:rpi4,u2:rpi5,u3:x86-avx2"  # user:profile[:max_train], one per node (partition-id)
    base_model: str = ""
    data_dir: str = ""
    out_dir: str = ""  # metrics.jsonl, metrics.png, global.gguf; the clients' adapters under clients/
    steps: int = 20
    lr: float = 2e-3
    threads: int = 2
    batch_tokens: int = 1024
    max_len: int = 512
    method: str = "svd"  # svd (FlexLoRA), zeropad, median, trimmed_mean
    global_rank: int = 16
    clip_norm: float = 0.0  # ‖ΔW_i − ΔW_g‖_F bound per client; 0: no clipping
    dp_noise: float = 0.0  # Gaussian noise multiplier σ (needs clip_norm)
    trim: float = 0.2
    round_timeout: float = 900.0  # s: a round goes on with the replies it has by then
    min_nodes: int = 0  # nodes to wait for before round 1 (0: as many as clients)
    node_wait: float = 120.0  # s: how long round 1 waits for them
    evaluate: bool = True
    seed: int = 0
    personal_store: str = ""  # AdapterStore root: after the last round each device stores global + personal there

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> "RunSettings":
        """From Flower's run config (keys with '-', as in the pyproject); unknown keys are an error."""
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            if key not in known:
                raise FlConfigError(f"run config {key!r}: unknown; known: {', '.join(sorted(known))}")
            kind = type(getattr(cls(), known[key].name))
            try:
                values[known[key].name] = value if isinstance(value, kind) else kind(value)
            except (TypeError, ValueError):
                raise FlConfigError(f"run config {key!r} = {value!r}: expected {kind.__name__}") from None
        settings = cls(**values)
        settings.specs()  # fail early on a bad clients list
        return settings

    def as_run_config(self) -> dict[str, Any]:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    def specs(self) -> list[ClientSpec]:
        return parse_clients(self.clients)

    def client_settings(self) -> ClientSettings:
        for key in ("base_model", "data_dir", "out_dir"):
            if not getattr(self, key):
                raise FlConfigError(f"run config {key.replace('_', '-')!r} is not set")
        return ClientSettings(Path(self.base_model), Path(self.data_dir), Path(self.out_dir) / "clients",
                              self.steps, self.lr, self.threads, self.batch_tokens, self.max_len)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def app_pyproject(settings: RunSettings) -> str:
    """The Flower app's pyproject.toml with `settings` as its run config defaults."""
    config = "\n".join(f"{key} = {_toml_value(value)}" for key, value in settings.as_run_config().items())
    return f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "floe-fl"
version = "1.0.0"
description = "floe-edge federated LoRA (the code is floe_edge.fl, installed with the fl extra)"
dependencies = ["flwr>=1.42,<2"]

[tool.flwr.app]
publisher = "floe-edge"

[tool.flwr.app.components]
serverapp = "floe_edge.fl.server_app:app"
clientapp = "floe_edge.fl.client_app:app"

[tool.flwr.app.config]
{config}
"""
