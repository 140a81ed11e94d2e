"""On-device commands: the user's devices (nickname, model, id) are private; each vendor's command API is what the
cloud knows. "Dim the desk lamp to 30%" becomes `lu_dim(dev.k41, 30)`: the id only the device knows, the function
only the cloud. One or two devices are new: the user's history (train) never commands them, and no function of their
vendors is ever called in it, so only the cloud can know how to command them."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .names import Coiner, Draft, Phrasings, TaskKind

__all__ = ["TASK"]

# kind -> (plural used in the API text, nicknames a user gives such a device, capabilities)
_KINDS = {
    "lamp": ("lamps", ("desk lamp", "reading lamp", "hall light", "bedside lamp", "porch light"),
             ("brightness", "power")),
    "speaker": ("speakers", ("kitchen speaker", "living room speaker", "bathroom radio"), ("volume", "power")),
    "heater": ("heaters", ("bedroom heater", "office radiator", "floor heating"), ("temperature",)),
    "blinds": ("blinds", ("study blinds", "balcony shutters", "bedroom curtains"), ("position",)),
    "kettle": ("kettles", ("kettle", "tea maker"), ("temperature", "power")),
}
# capability -> (verbs a vendor may name its function after, how the API text describes the argument)
_CAPABILITIES = {
    "brightness": (("dim", "lux", "glow", "lvl"), "<percent>"),
    "volume": (("vol", "gain", "loud"), "<percent>"),
    "temperature": (("heat", "temp", "therm"), "<degrees>"),
    "position": (("pos", "lift", "open"), "<percent open>"),
    "power": (("pow", "sw", "toggle"), "on|off"),
}
TEMPLATES = {
    "brightness": Phrasings(train=("Dim the {dev} to {v}%", "Set the {dev} brightness to {v}%",
                                   "Make the {dev} {v}% bright"),
                            test=("Could you put the {dev} at {v} percent brightness?",
                                  "I want the {dev} at {v}% please")),
    "volume": Phrasings(train=("Set the {dev} volume to {v}%", "Turn the {dev} to {v}% volume"),
                        test=("Can the {dev} play at {v} percent?",)),
    "temperature": Phrasings(train=("Set the {dev} to {v} degrees", "Heat the {dev} to {v} degrees"),
                             test=("I'd like the {dev} at {v} degrees, thanks",)),
    "position": Phrasings(train=("Open the {dev} to {v}%", "Set the {dev} to {v}% open"),
                          test=("Raise the {dev} so they are {v} percent open",)),
    "power": Phrasings(train=("Turn the {dev} {v}", "Switch the {dev} {v}"),
                       test=("I need the {dev} {v} now",)),
}


@dataclass(frozen=True)
class Vendor:
    """A device maker as the cloud knows it: the function it names for each capability and its calling style."""

    name: str
    kind: str
    functions: dict[str, str]  # capability -> function name
    keyword: bool  # whether the value is passed as `value=...`

    def call(self, capability: str, device_id: str, value: str) -> str:
        return f"{self.functions[capability]}({device_id}, {'value=' if self.keyword else ''}{value})"

    def api_text(self) -> str:
        plural = _KINDS[self.kind][0]
        uses = [f"{cap} with {self.call(cap, '<id>', _CAPABILITIES[cap][1])}" for cap in self.functions]
        return f"{self.name} {plural}: {'; '.join(uses)}"


@dataclass(frozen=True)
class Device:
    nickname: str
    vendor: Vendor
    model: str
    id: str


@dataclass(frozen=True)
class Home:
    """One user's devices: `known` ones appear in their history, `new` ones only in held-out records."""

    known: list[Device]
    new: list[Device]
    listed: list[Device]  # all of them, in the order the private context lists them

    def private_text(self) -> str:
        return "My devices:\n" + "\n".join(f"- {d.nickname}: {d.model}, id {d.id}" for d in self.listed)


def catalogue(rng: random.Random, coin: Coiner) -> list[Vendor]:
    """Three vendors per device kind, each with its own function names and calling style."""
    vendors = []
    for kind, (_, _, capabilities) in _KINDS.items():
        for _ in range(3):
            name = coin.word(2)
            prefix, style = name[: rng.choice((2, 3))].lower(), rng.choice(("snake", "camel", "dot"))
            functions = {}
            for cap in capabilities:
                verb = rng.choice(_CAPABILITIES[cap][0])
                functions[cap] = {"snake": f"{prefix}_{verb}", "camel": f"{prefix}{verb.capitalize()}",
                                  "dot": f"{prefix}.{verb}"}[style]
            vendors.append(Vendor(name, kind, functions, keyword=rng.random() < 0.3))
    return vendors


def _devices(rng: random.Random, coin: Coiner, vendors: list[Vendor]) -> list[Device]:
    kinds = list(_KINDS)
    nicknames = rng.sample([(k, n) for k in kinds for n in _KINDS[k][1]], rng.randint(5, 7))
    devices = []
    for kind, nickname in nicknames:
        vendor = rng.choice([v for v in vendors if v.kind == kind])
        model = f"{vendor.name} {rng.choice('ABCKLMSXZ')}{rng.randint(1, 9)}"
        device_id = f"{rng.choice(('dev', 'hw', 'nd', 'id'))}.{coin.word(1, capital=False)[:3]}{rng.randint(10, 99)}"
        devices.append(Device(nickname, vendor, model, device_id))
    return devices


def _unlike(device: Device, others: list[Device]) -> bool:
    """Whether nothing of the device's vendor API (vendor, function names) shows in the others' commands."""
    names = {f for d in others for f in d.vendor.functions.values()}
    return all(d.vendor is not device.vendor for d in others) and not names & set(device.vendor.functions.values())


def world(rng: random.Random, coin: Coiner, vendors: list[Vendor]) -> Home:
    """Five to seven devices, each with a nickname of its own, a vendor's model and a device id; one or two of them
    new (a vendor no known device has)."""
    for _ in range(100):
        devices = _devices(rng, coin, vendors)
        new: list[Device] = []
        for device in rng.sample(devices, len(devices)):
            known = [d for d in devices if d is not device and d not in new]
            if len(new) < 2 and _unlike(device, known) and all(_unlike(n, known) for n in new):
                new.append(device)
        if new:
            return Home([d for d in devices if d not in new], new, devices)
    raise RuntimeError("no device with a vendor of its own in 100 worlds")  # 3 vendors per kind: not reached


def _value(rng: random.Random, capability: str, kind: str) -> str:
    if capability == "power":
        return rng.choice(("on", "off"))
    if capability == "temperature":
        return str(rng.randrange(60, 100, 5) if kind == "kettle" else rng.randint(16, 26))
    return str(rng.randrange(10, 100, 5))


def draft(rng: random.Random, home: Home, vendors: list[Vendor], split: str, novel: bool) -> Draft:
    device = rng.choice(home.new if novel else home.known)
    capability = rng.choice(list(device.vendor.functions))
    value = _value(rng, capability, device.vendor.kind)
    index, template = TEMPLATES[capability].pick(rng, split)
    others = rng.sample([v for v in vendors if v is not device.vendor], 2)
    apis = [v.api_text() for v in [device.vendor, *others]]
    rng.shuffle(apis)
    return Draft(private_context=home.private_text(), cloud_context="Device APIs:\n" + "\n".join(apis),
                 prompt=f"User: {template.format(dev=device.nickname, v=value)}\nCommand:",
                 completion=" " + device.vendor.call(capability, device.id, value),
                 template=f"{capability}/{split}/{index}", private_span=device.id,
                 cloud_span=device.vendor.functions[capability])


TASK = TaskKind("commands", TEMPLATES, catalogue, world, draft)
