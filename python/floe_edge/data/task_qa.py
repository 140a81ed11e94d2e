"""Conversational QA: the user's contacts and bookings are private; where places are and when they open is what the
cloud knows. "Where is my dentist appointment?" needs the booking (time, place) and the place's address. One booking
and one contact are new: the user's history (train) never asks about them, and their places appear in no answer of it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .names import DAYS, Coiner, Draft, Phrasings, TaskKind

__all__ = ["TASK"]

# booking kind -> the kind of place it happens at
_BOOKINGS = {"dentist appointment": "Dental Clinic", "dinner reservation": "Bistro", "haircut": "Salon",
             "yoga class": "Studio", "car service": "Garage", "eye test": "Opticians"}
_WORKPLACES = ("Library", "Bakery", "Museum", "Pharmacy", "Bookshop", "School")
_RELATIONS = ("sister", "brother", "neighbour", "colleague", "best friend", "cousin", "landlord", "coach")
_STREETS = ("Street", "Lane", "Road", "Square", "Way")


@dataclass(frozen=True)
class Place:
    """A place of the (made-up) world: only the cloud knows where it is and when it opens."""

    name: str
    kind: str
    address: str
    opens: str
    closes: str

    def fact(self) -> str:
        """The place as a line of the knowledge base the cloud retrieves from."""
        return f"{self.name}: {self.address}; open {self.opens} to {self.closes}."


@dataclass(frozen=True)
class QAWorld:
    """One user's private world for QA: whom they know and what they booked; the last contact and the last booking
    are new (held-out records only)."""

    contacts: list[Contact]
    bookings: list[Booking]

    def pick(self, rng: random.Random, intent: str, novel: bool) -> "Contact | Booking":
        entities: list[Any] = list(self.contacts if intent == "contact_work" else self.bookings)
        return entities[-1] if novel else rng.choice(entities[:-1])

    def private_text(self) -> str:
        contacts = [f"- {c.name} ({c.relation}), works at {c.workplace.name}" for c in self.contacts]
        bookings = [f"- {b.kind}: {b.day} {b.time} at {b.place.name}" for b in self.bookings]
        return "Contacts:\n" + "\n".join(contacts) + "\nBookings:\n" + "\n".join(bookings)


@dataclass(frozen=True)
class Booking:
    kind: str
    day: str
    time: str  # quarter past or to the hour: never one of the (whole or half hour) opening times
    place: Place


@dataclass(frozen=True)
class Contact:
    """Someone the user knows, and where they work: private."""

    name: str
    relation: str
    workplace: Place


TEMPLATES = {
    "booking_where": Phrasings(train=("Where is my {kind}?", "Where do I need to go for my {kind}?"),
                               test=("Remind me when and where my {kind} is.",)),
    "booking_close": Phrasings(train=("What time does the place of my {kind} close?",
                                      "Until when is the place of my {kind} open?"),
                               test=("Will the place of my {kind} still be open after it?",)),
    "contact_work": Phrasings(train=("Where does my {relation} work?", "What is the address of my {relation}'s work?"),
                              test=("If I want to visit my {relation} at work, where do I go?",)),
}


def catalogue(rng: random.Random, coin: Coiner) -> list[Place]:
    """Places in a few made-up towns: four of each kind, with an address and opening hours."""
    towns = [coin.word(rng.choice((2, 3))) for _ in range(5)]
    places = []
    for kind in (*_BOOKINGS.values(), *_WORKPLACES):
        for _ in range(4):
            address = f"{rng.randint(2, 98)} {coin.word(2)} {rng.choice(_STREETS)}, {rng.choice(towns)}"
            opens = f"{rng.randint(7, 10):02d}:{rng.choice(('00', '30'))}"
            closes = f"{rng.randint(16, 22)}:{rng.choice(('00', '30'))}"
            places.append(Place(f"{coin.word(2)} {kind}", kind, address, opens, closes))
    return places


def world(rng: random.Random, coin: Coiner, places: list[Place]) -> QAWorld:
    """Four or five contacts (each working somewhere) and four or five bookings on distinct kinds; the last of each is
    new, at a place no other contact or booking of the user has."""
    relations, kinds = rng.sample(_RELATIONS, rng.randint(4, 5)), rng.sample(list(_BOOKINGS), rng.randint(4, 5))
    workplaces = rng.choices(_WORKPLACES, k=len(relations))
    of_kind = lambda kind: [p for p in places if p.kind == kind]  # noqa: E731
    # the new ones first, so that the known ones can avoid their places
    new_contact = Contact(f"{coin.word(2)} {coin.word(2)}", relations[-1], rng.choice(of_kind(workplaces[-1])))
    new_booking = Booking(kinds[-1], rng.choice(DAYS), f"{rng.randint(8, 19)}:{rng.choice(('15', '45'))}",
                          rng.choice(of_kind(_BOOKINGS[kinds[-1]])))
    news = {new_contact.workplace.name, new_booking.place.name}
    contacts = [Contact(f"{coin.word(2)} {coin.word(2)}", r, rng.choice(
        [p for p in places if p.kind == w and p.name not in news])) for r, w in zip(relations[:-1], workplaces[:-1])]
    bookings = [Booking(k, rng.choice(DAYS), f"{rng.randint(8, 19)}:{rng.choice(('15', '45'))}", rng.choice(
        [p for p in places if p.kind == _BOOKINGS[k] and p.name not in news])) for k in kinds[:-1]]
    return QAWorld([*contacts, new_contact], [*bookings, new_booking])


def draft(rng: random.Random, user: QAWorld, places: list[Place], split: str, novel: bool) -> Draft:
    intent = rng.choice(list(TEMPLATES))
    index, template = TEMPLATES[intent].pick(rng, split)
    entity = user.pick(rng, intent, novel)
    if isinstance(entity, Contact):
        contact = entity
        place, question = contact.workplace, template.format(relation=contact.relation)
        answer, private_span, cloud_span = (f" {contact.name} works at {place.name}, {place.address}.",
                                            contact.name, place.address)
    else:
        booking = entity
        place, question = booking.place, template.format(kind=booking.kind)
        if intent == "booking_where":
            answer, private_span, cloud_span = (f" {booking.day} at {booking.time}, at {place.address}.",
                                                booking.time, place.address)
        else:
            answer, private_span, cloud_span = (f" Your {booking.kind} is at {booking.time}; {place.name} closes at "
                                                f"{place.closes}.", booking.time, place.closes)
    facts = [place.fact(), *(p.fact() for p in rng.sample([p for p in places if p is not place], 2))]
    rng.shuffle(facts)
    return Draft(private_context=user.private_text(), cloud_context="Places:\n" + "\n".join(facts),
                 prompt=f"User: {question}\nAssistant:", completion=answer, template=f"{intent}/{split}/{index}",
                 private_span=private_span, cloud_span=cloud_span)


TASK = TaskKind("qa", TEMPLATES, catalogue, world, draft)
