"""The Flower ServerApp (Message API): `FloeStrategy` sends each node the global adapter at its own rank and
targets, and aggregates the adapters that come back with `FederatedCore` (screen, clip, FlexLoRA / robust, DP).
Replies that do not come within the round timeout, or that carry an error (a SuperNode that died), are logged and
left out: the round goes on with the others. Per-round metrics go to out-dir/metrics.jsonl and metrics.png, the
global adapter to out-dir/global.gguf (an atomic write: a crash leaves the previous one)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO, WARNING
from pathlib import Path
from typing import Any, Optional

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from .adapters import adapter_from_factors
from .codec import CodecError, from_record, to_record
from .report import append_rows, plot_metrics
from .rounds import FederatedCore, Reply, RoundOutcome
from .settings import RunSettings

__all__ = ["FloeStrategy", "app"]


class FloeStrategy(Strategy):
    """Heterogeneous-rank federated LoRA over Flower messages (the logic is in FederatedCore)."""

    def __init__(self, core: FederatedCore, out_dir: Path, min_nodes: int, node_wait: float) -> None:
        self.core, self.out_dir, self.min_nodes, self.node_wait = core, out_dir, min_nodes, node_wait
        self.node_profile: dict[int, tuple[int, tuple[str, ...]]] = {}  # learned from the nodes' replies
        self.sent: dict[int, dict[int, Message]] = {}  # round -> node -> the message it was sent
        self.architecture = ""

    def _nodes(self, grid: Grid, server_round: int) -> list[int]:
        """Round 1 waits (at most node_wait s) for min_nodes; later rounds take whoever is connected, so a node
        that left cannot stall the federation."""
        deadline = time.monotonic() + (self.node_wait if server_round == 1 else 0.0)
        while True:
            nodes = sorted(grid.get_node_ids())
            if len(nodes) >= self.min_nodes or time.monotonic() >= deadline:
                break
            log(INFO, "waiting for nodes: %d of %d connected", len(nodes), self.min_nodes)
            time.sleep(1.0)
        if not nodes:
            raise RuntimeError(f"round {server_round}: no SuperNode connected")
        return nodes

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        nodes = self._nodes(grid, server_round)
        messages = []
        for node in nodes:
            known = self.node_profile.get(node)
            factors = self.core.for_client(*known) if known else self.core.global_factors  # unknown: all, at R
            content = RecordDict({"arrays": to_record(factors),
                                  "config": ConfigRecord({**dict(config), "server-round": server_round})})
            messages.append(Message(content=content, dst_node_id=node, message_type=MessageType.TRAIN))
        self.sent[server_round] = {m.metadata.dst_node_id: m for m in messages}
        log(INFO, "round %d: sent the global adapter to %d nodes", server_round, len(nodes))
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[Optional[ArrayRecord], Optional[MetricRecord]]:
        parsed, rows, answered = [], [], set()
        # the grid gives each sent message its id when pushing it; an error reply the SuperLink writes for a node
        # that died comes from the SuperLink, so the node is found through the message it answers
        by_id = {m.metadata.message_id: node for node, m in self.sent.get(server_round, {}).items()}
        for msg in replies:
            node = by_id.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)
            answered.add(node)
            reply, why = self._parse(msg)
            if reply is None:
                log(WARNING, "round %d: node %d refused: %s", server_round, node, why)
                rows.append({"round": server_round, "client": f"node-{node}", "status": f"refused: {why}"})
                continue
            parsed.append(reply)
        missing = [n for n in self.sent.get(server_round, []) if n not in answered]
        for node in missing:
            log(WARNING, "round %d: no reply from node %d within the round timeout", server_round, node)
            rows.append({"round": server_round, "client": f"node-{node}", "status": "no reply"})
        outcome = self.core.aggregate_round(server_round, parsed)
        failed = len(rows) - len(missing)  # the rows so far: error or malformed replies, then the silent nodes
        rows += self._rows(server_round, parsed, outcome)
        summary = self._summary(server_round, outcome, missing, failed)
        append_rows(self.out_dir / "metrics.jsonl", [*rows, summary])
        if outcome.changed:
            self._save_global()
        return (to_record(self.core.global_factors) if outcome.changed else None,
                MetricRecord({k: v for k, v in summary.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)}))

    def _parse(self, msg: Message) -> tuple[Optional[Reply], str]:
        if msg.has_error():
            return None, f"error reply: {msg.error.reason}"
        try:
            factors = from_record(msg.content["arrays"])
            metrics: dict[str, Any] = dict(msg.content["metrics"])
            info = dict(msg.content["info"])
        except (CodecError, KeyError, TypeError) as e:
            return None, f"malformed reply: {e}"
        targets = tuple(str(info.get("targets", "")).split(","))
        if isinstance(metrics.get("rank"), int) and all(targets):
            self.node_profile[msg.metadata.src_node_id] = (int(metrics["rank"]), targets)
        self.architecture = str(info.get("architecture", self.architecture))
        metrics.update({k: v for k, v in info.items() if k in ("user", "profile")})
        client = str(info.get("user") or f"node-{msg.metadata.src_node_id}")
        return Reply(client, factors, metrics.get("examples", 0), metrics), ""

    def _rows(self, server_round: int, parsed: list[Reply], outcome: RoundOutcome) -> list[dict[str, Any]]:
        why = dict(outcome.refused)
        rows = []
        for reply in parsed:
            status = f"refused: {why[reply.client]}" if reply.client in why else "used"
            if reply.client in why:
                log(WARNING, "round %d: update of %s refused: %s", server_round, reply.client, why[reply.client])
            row = {"round": server_round, "client": reply.client, "status": status, **reply.metrics,
                   "update-norm": outcome.norms.get(reply.client), "clipped": reply.client in outcome.clipped}
            log(INFO, "round %d: %s (%s r%s): loss %.3f -> %.3f, held-out top-1 %.3f -> %.3f", server_round,
                reply.client, row.get("profile"), row.get("rank"), _f(row.get("loss-first")),
                _f(row.get("loss-last")), _f(row.get("top1-before")), _f(row.get("top1-after")))
            rows.append(row)
        return rows

    def _summary(self, server_round: int, outcome: RoundOutcome, missing: list[int], failed: int) -> dict[str, Any]:
        """`failed`: error replies (a node that died) and malformed ones; `refused`: updates screening refused."""
        summary = {"round": server_round, "summary": True, "used": len(outcome.used), "failed": failed,
                   "refused": len(outcome.refused), "missing": len(missing), "noise-std": outcome.noise_std,
                   "clipped": len(outcome.clipped), "global-changed": outcome.changed}
        log(INFO, "round %d: aggregated %d updates (%d failed, %d refused, %d missing, %d clipped, noise std %.3g)",
            server_round, len(outcome.used), failed, len(outcome.refused), len(missing), len(outcome.clipped),
            outcome.noise_std)
        return summary

    def _save_global(self) -> None:
        if self.core.global_factors and self.architecture:
            rank = self.core.global_rank
            adapter_from_factors(self.architecture, self.core.global_factors, rank, 2.0 * rank).write(
                self.out_dir / "global.gguf")

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return []  # each client measures held-out top-1 before and after its training, in its train reply

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> Optional[MetricRecord]:
        return None

    def summary(self) -> None:
        core = self.core
        log(INFO, "\tfloe federated LoRA: method %s, global rank %d, clip %.3g, DP noise multiplier %.3g",
            core.method, core.global_rank, core.clip_norm, core.dp_noise)


def _f(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = RunSettings.from_run_config(context.run_config)
    out_dir = Path(settings.client_settings().work_dir).parent
    core = FederatedCore(settings.global_rank, settings.method, settings.clip_norm, settings.dp_noise,
                         settings.trim, settings.seed)
    strategy = FloeStrategy(core, out_dir, settings.min_nodes or len(settings.specs()), settings.node_wait)
    strategy.start(grid, ArrayRecord(), num_rounds=settings.num_server_rounds, timeout=settings.round_timeout,
                   train_config=ConfigRecord())
    if (out_dir / "metrics.jsonl").exists():
        log(INFO, "metrics: %s, plot: %s", out_dir / "metrics.jsonl",
            plot_metrics(out_dir / "metrics.jsonl", out_dir / "metrics.png"))
