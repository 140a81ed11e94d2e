"""The Flower ClientApp (Message API): a node is one device (user + hardware profile, from its node config or its
partition-id's entry of the run config's clients list). It trains its adapter on its own records at its profile's
rank (`local_round`) and replies with the adapter's factors only, its example count and its metrics."""

from __future__ import annotations

from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..adapters.lora_file import open_gguf
from ..profiles import load_profile
from .client import local_round, spec_for_node
from .codec import from_record, to_record
from .settings import RunSettings

__all__ = ["app"]

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    settings = RunSettings.from_run_config(context.run_config)
    spec = spec_for_node(settings.specs(), dict(context.node_config))
    client = settings.client_settings()
    received = from_record(msg.content["arrays"])
    server_round = int(str(msg.content["config"].get("server-round", 0)))  # a ConfigRecord value: any scalar type
    last = server_round == settings.num_server_rounds and bool(settings.personal_store)
    factors, examples, metrics = local_round(spec, client, received, server_round, settings.evaluate,
                                             Path(settings.personal_store) if last else None)
    profile = load_profile(spec.profile)
    info = ConfigRecord({"user": spec.user, "profile": spec.profile, "targets": ",".join(profile.lora.targets),
                         "architecture": str(open_gguf(client.base, "base").metadata.get("general.architecture"))})
    numbers = MetricRecord({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    content = RecordDict({"arrays": to_record(factors), "metrics": numbers, "info": info})
    return Message(content=content, reply_to=msg)
