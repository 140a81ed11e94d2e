"""The demo's user: their personal data (section 9, generated once into `$FLOE_HOME/demo/`), the questions asked of
them, and their personalization: a LoRA adapter trained once on their held-in records and kept in the AdapterStore
(app "demo"), with the fusion gate learned on held-in records beside it (`AdapterStore.put_gate`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from ..data.records import Record
from ..evaluation.user import novel

__all__ = ["DEMO_SEED", "DEMO_USER", "APP", "GATE_RECORDS", "TRAIN_PROFILE", "DemoUser", "load_user", "novel",
           "own_question", "user_adapter", "user_gate"]

DEMO_SEED = 2602  # the paper's arXiv month: any fixed seed gives one fixed user
DEMO_USER = "u1"
APP = "demo"                # the AdapterStore app of the demo's adapter
TRAIN_PROFILE = "rpi5"      # rank 8 on attention: trains in minutes on two cores (the detected profile: rank 32)
GATE_RECORDS = 8            # held-in records per task the gate learns from (all 24 per task: ~3x the first run)

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoUser:
    data: Path
    history: list[Record]    # held-in records (train.jsonl): what the adapter and the gate learn from
    held_out: list[Record]   # test.jsonl: the questions come from here

    def questions(self, per_task: int) -> list[Record]:
        """The first `per_task` held-out records of each task, by index (the generator alternates novel, known)."""
        from ..evaluation.runner import select

        return select(self.held_out, 1, per_task).get(DEMO_USER, [])

    def gate_records(self) -> list[Record]:
        from ..evaluation.runner import select

        return select(self.history, 1, GATE_RECORDS).get(DEMO_USER, [])


def load_user(root: Optional[Path] = None) -> DemoUser:
    """User u1 of `generate(users=1, seed=DEMO_SEED)` under `$FLOE_HOME/demo/data` (generated on first use)."""
    from .. import paths
    from ..data import generate, read_dataset

    data = (root or paths.demo_dir()) / "data"
    if not (data / "test.jsonl").exists() or not (data / "train.jsonl").exists():
        generate(data, users=1, seed=DEMO_SEED)
    train, test = read_dataset(data)
    mine = lambda rs: [r for r in rs if r.user == DEMO_USER]  # noqa: E731
    return DemoUser(data, mine(train), mine(test))


def own_question(user: DemoUser, text: str) -> Record:
    """`--prompt TEXT` as a record of the same user: every private context of theirs, asked in the QA format; no
    expected answer (the completion is empty)."""
    contexts = dict.fromkeys(r.private_context for r in user.held_out if r.private_context)
    return Record(DEMO_USER, "own", "\n\n".join(contexts), "", f"User: {text.strip()}\nAssistant:", "")


def user_adapter(records: Sequence[Record], edge_model: str, profile_name: str, say: Say) -> tuple[Path, str, int]:
    """The user's adapter trained on `records` at the profile's rank, trained on first use and then taken from the
    AdapterStore (profile, app "demo"): the version whose digest of base model, settings and records matches.
    Returns its path, the profile's name and the version."""
    from .. import _native, models, paths
    from ..adapters.store import AdapterStore
    from ..files import write_atomic
    from ..profiles import load_profile
    from ..train import TrainConfig, build_examples, train_lora

    profile = load_profile(profile_name)
    config = TrainConfig.from_profile(profile, threads=min(profile.threads, os.cpu_count() or 1))
    base = models.pull(edge_model)
    examples = build_examples(_native.Tokenizer.from_gguf(str(base)), list(records), config)
    digest = config.fingerprint(hashlib.sha256(base.read_bytes()).hexdigest(),
                                repr([(e.input_ids, e.completion_ids) for e in examples]))
    store, state_path = AdapterStore(), paths.demo_dir() / f"adapter-{profile.name}.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("digest") == digest and state.get("version") in store.versions(profile.name, APP):
        store.activate(profile.name, APP, state["version"])
        return Path(store.info(profile.name, APP, state["version"]).path), profile.name, int(state["version"])
    say(f"training the user's adapter once: rank {config.rank} ({profile.name}) on {len(examples)} held-in records")
    out = paths.demo_dir() / f"adapter-{profile.name}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    step, stop = _progress()
    try:
        with _quiet():
            result = train_lora(base, examples, config, out, checkpoint=out.with_suffix(".ckpt"), progress=step)
    finally:
        stop()
    version = store.add(out, profile.name, APP, base=base)
    store.activate(profile.name, APP, version)
    out.unlink()
    write_atomic(state_path, json.dumps({"digest": digest, "version": version}).encode())
    say(f"trained in {result.seconds:.0f} s (loss {result.first_loss:.2f} -> {result.last_loss:.2f}); stored as "
        f"{profile.name}/{APP} v{version}")
    return Path(store.info(profile.name, APP, version).path), profile.name, version


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Without the libraries' own bars and deprecation warnings over the demo's progress bar (tqdm reads
    TQDM_DISABLE when a bar is made)."""
    import warnings

    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


def _progress() -> tuple[Callable[[Any], None], Callable[[], None]]:
    """A rich progress bar of training steps (on stderr)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                   TextColumn("loss {task.fields[loss]:.3f}"), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task("train", total=None, loss=float("nan"))
    bar.start()
    return (lambda s: bar.update(task, completed=s.step, total=s.total, loss=s.loss)), bar.stop


def user_gate(dev: Any, user: DemoUser, profile: str, version: Optional[int], cloud_model: str, say: Say) -> Any:
    """The user's gate, learned on held-in records against this cloud model (as `floe eval` learns it), kept with
    the adapter version; learned again when the stored one was learned against another cloud."""
    from ..adapters.store import AdapterStore
    from ..evaluation.teacher import StaticGrid
    from ..evaluation.user import learn_held_in
    from ..gate import LearnedGate

    store = AdapterStore()
    if version is not None:
        gate = store.get_gate(profile, APP, version)
        if gate is not None and gate.meta.get("cloud_model") == cloud_model:
            return gate
    records = user.gate_records()
    say(f"learning the user's fusion gate on {len(records)} held-in records (once)")
    learned = learn_held_in(dev, records, StaticGrid(dev.slm.n_vocab, top_k=dev.k))
    if not learned.features:
        return None
    try:
        gate = LearnedGate.fit(learned.features, learned.cloud_right, learned.edge_right)
    except ValueError as e:
        say(f"no gate: {e}")
        return None
    gate.meta["cloud_model"] = cloud_model
    if version is not None:
        store.put_gate(profile, APP, version, gate)
    return gate
