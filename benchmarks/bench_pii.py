"""Personal-data masking measured on a labelled set generated with Faker: recall per type, precision, CPU.

The set is made from Faker's data in ``--locales`` (at least ten), seeded (``--seed``): support messages
embedding names, addresses, e-mails, phones, cards, IBANs, SSNs and IPs (the labelled items), and look-alikes
that must survive (order numbers, dates, amounts, tracking codes, versions). Each conversation is masked with
the masker the workers use (``insights.pii``, today's config.toml). An item is recalled when spans cover it
whole; precision is the share of masked spans that fall on a labelled item (a span on a look-alike, a name
or an address is a false positive). The CPU cost is the process CPU time (``time.process_time``) of masking
every conversation ``--rounds`` times, per conversation, in this set (two to four items each: the worst
case) and in ``bench_outbound``'s conversations (``benchmarks.harness.conversations``: production-like
support chats), against the worker side's 0.7 ms of CPU per conversation (BENCHMARKS.md, "The worker side
at today's limits").

    scripts/python -m benchmarks.bench_pii            # the figures in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from faker import Faker

from benchmarks.harness import conversations as outbound_conversations
from insights.conversation import ConversationToAnalyze
from insights.pii.masker import Masker
from settings import load_settings

LOCALES = "en_US,en_GB,de_DE,fr_FR,es_ES,it_IT,nl_NL,pt_BR,pl_PL,sv_SE,en_AU,en_IN,ja_JP"
WORKER_CPU_MS = 0.7  # the worker side's CPU per conversation (BENCHMARKS.md: 13-15 ms a 20-conversation call)
KINDS = ("EMAIL", "PHONE", "CARD", "IBAN", "SSN", "IP")
OPENINGS = (
    "Hi, this is {name}.",
    "Hello support, {name} here.",
    "Good morning, my name is {name} and I live at {address}.",
    "Dear team, I am writing on behalf of {name}.",
)
LINES = {
    "EMAIL": ("You can reach me at {v}.", "Please send the invoice to {v} instead.", "My login is {v}"),
    "PHONE": ("Call me back on {v} please.", "My number is {v}, best after 6pm.", "Tel: {v}", "{v} works best."),
    "CARD": ("I was charged twice on my card {v}.", "The card ending badly is {v}, please refund it."),
    "IBAN": ("Please refund to my IBAN {v}.", "Bank details: {v} (same name)."),
    "SSN": ("For the tax form, my SSN is {v}.", "SSN {v} was typed on the form."),
    "IP": ("The login came from {v}, not me!", "Our server at {v} cannot reach your API."),
}
LOOK_ALIKE_LINES = (
    "Order {order} was placed on {date} for {amount}.",
    "The parcel's tracking code is {tracking} and it left on {date}.",
    "Since version {version} the app crashes; ticket {order}.",
    "Invoice {order} of {amount}, due {date}.",
    "It happened at {clock} on {date}, build {version}.",
    "The code {code} on the receipt does not work, I paid {amount}.",
)


@dataclass
class Sample:
    """A generated conversation: its text, the labelled items (kind, start, end) and the look-alikes' spans."""

    locale: str
    text: str = ""
    items: list[tuple[str, int, int]] = field(default_factory=list)
    look_alikes: list[tuple[int, int]] = field(default_factory=list)

    def add(self, piece: str, kind: str | None = None) -> None:
        """Append ``piece`` (an item of ``kind``, or a look-alike with ``kind="LOOK"``) or plain text."""
        start = len(self.text)
        self.text += piece
        if kind == "LOOK":
            self.look_alikes.append((start, len(self.text)))
        elif kind:
            self.items.append((kind, start, len(self.text)))

    def add_line(self, template: str, values: dict[str, tuple[str, str | None]]) -> None:
        """``template`` with each ``{name}`` filled by its (text, kind)."""
        rest = template
        while "{" in rest:
            before, _, tail = rest.partition("{")
            name, _, rest = tail.partition("}")
            self.add(before)
            self.add(*values[name])
        self.add(rest + " ")


def grouped(digits: str, rng: random.Random) -> str:
    """A card number as people write it: compact, or in fours with spaces or dashes."""
    separator = rng.choice(["", " ", "-"])
    return separator.join(digits[i : i + 4] for i in range(0, len(digits), 4))


def item_value(fake: Faker, kind: str, rng: random.Random) -> str:
    if kind == "EMAIL":
        return fake.email()
    if kind == "PHONE":
        return fake.phone_number()
    if kind == "CARD":
        return grouped(fake.credit_card_number(), rng)
    if kind == "IBAN":
        value = fake.iban()
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4)) if rng.random() < 0.5 else value
    if kind == "SSN":
        return Faker("en_US").ssn() if fake.locales[0] != "en_US" else fake.ssn()
    return fake.ipv4() if rng.random() < 0.6 else fake.ipv6()


def look_alikes(fake: Faker, rng: random.Random) -> dict[str, tuple[str, str | None]]:
    return {
        "order": (rng.choice(["#", "ORD-", "no. ", "A"]) + str(fake.random_number(digits=rng.randint(5, 9))), "LOOK"),
        "date": (fake.date(pattern=rng.choice(["%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y", "%B %d, %Y"])), "LOOK"),
        "amount": (fake.pricetag() if rng.random() < 0.5 else f"{rng.uniform(1, 99999):,.2f} EUR", "LOOK"),
        "tracking": (
            fake.bothify(rng.choice(["1Z###??##########", "JJD##############", "??#########??"])).upper(),
            "LOOK",
        ),
        "version": (".".join(str(rng.randint(0, 20)) for _ in range(rng.choice([2, 3]))), "LOOK"),
        "code": (str(fake.random_number(digits=rng.randint(6, 10), fix_len=True)), "LOOK"),
        "clock": (fake.time(pattern=rng.choice(["%H:%M", "%H:%M:%S"])), "LOOK"),
    }


def samples(seed: int = 25, per_locale: int = 60, locales: str = LOCALES) -> list[Sample]:
    """The labelled set: ``per_locale`` conversations in each locale, reproducible from ``seed``."""
    made = []
    for n, locale in enumerate(locales.split(",")):
        fake, rng = Faker(locale), random.Random(seed * 1000 + n)
        fake.seed_instance(seed * 1000 + n)
        for _ in range(per_locale):
            sample = Sample(locale)
            plain = {"name": (fake.name(), None), "address": (fake.address().replace("\n", ", "), None)}
            sample.add_line(rng.choice(OPENINGS), plain)
            for kind in rng.sample(KINDS, rng.randint(2, 4)):
                sample.add_line(rng.choice(LINES[kind]), {"v": (item_value(fake, kind, rng), kind)})
            sample.add_line(rng.choice(LOOK_ALIKE_LINES), look_alikes(fake, rng))
            made.append(sample)
    return made


def covered(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    """Is every non-space character of ``[start, end)`` inside a span?"""
    return all(any(s <= i < e for s, e in spans) for i in range(start, end))


def evaluate(masker: Masker, made: list[Sample]) -> tuple[Counter[str], Counter[str], int, int, int, list[str]]:
    """Items found and labelled by kind, true and all spans, look-alikes touched, and examples of misses."""
    found, labelled, true_spans, all_spans, touched, misses = Counter(), Counter(), 0, 0, 0, []
    for sample in made:
        spans = [(s.start, s.end) for s in masker.spans(sample.text)]
        for kind, start, end in sample.items:
            labelled[kind] += 1
            if covered(start, end, spans):
                found[kind] += 1
            elif len(misses) < 40:
                misses.append(f"{kind} {sample.locale}: {sample.text[max(0, start - 30) : end + 10]!r}")
        for start, end in spans:
            all_spans += 1
            true_spans += any(start < e and s < end for _k, s, e in sample.items)
            if not any(start < e and s < end for _k, s, e in sample.items) and len(misses) < 80:
                misses.append(f"false positive {sample.locale}: {sample.text[start:end]!r}")
        touched += sum(any(s < end and start < e for s, e in spans) for start, end in sample.look_alikes)
    return found, labelled, true_spans, all_spans, touched, misses


def cpu_ms_per_conversation(masker: Masker, conversations: list[ConversationToAnalyze], rounds: int) -> float:
    """Process CPU milliseconds of masking one conversation, over ``rounds`` passes of them all."""
    started = time.process_time()
    for _ in range(rounds):
        masker.batch(conversations)
    return (time.process_time() - started) * 1000 / (rounds * len(conversations))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--per-locale", type=int, default=60, help="conversations generated in each locale")
    parser.add_argument("--locales", default=LOCALES, help="Faker locales, comma-separated (at least ten)")
    parser.add_argument("--rounds", type=int, default=5, help="times the set is masked for the CPU figure")
    parser.add_argument("--misses", action="store_true", help="print examples of misses and false positives")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    masker, made = Masker.of(load_settings({})), samples(args.seed, args.per_locale, args.locales)
    found, labelled, true_spans, all_spans, touched, misses = evaluate(masker, made)
    look_count = sum(len(s.look_alikes) for s in made)
    print(f"{len(made)} conversations, {len(args.locales.split(','))} locales, seed {args.seed}\n")
    print("| type | items | recall |\n|---|---|---|")
    for kind in KINDS:
        print(f"| {kind} | {labelled[kind]} | {found[kind] / max(labelled[kind], 1):.1%} |")
    print(f"\nprecision (masked spans on a labelled item): {true_spans / max(all_spans, 1):.1%} of {all_spans}")
    print(f"look-alikes untouched: {1 - touched / max(look_count, 1):.1%} of {look_count}")
    labelled = [ConversationToAnalyze(str(n), [{"role": "customer", "content": s.text}]) for n, s in enumerate(made)]
    cpu = cpu_ms_per_conversation(masker, labelled, args.rounds)
    outbound = cpu_ms_per_conversation(masker, outbound_conversations(len(made), args.seed), args.rounds)
    print(
        f"\nmasking CPU a conversation: {cpu:.3f} ms in this set ({cpu / WORKER_CPU_MS:.0%} of the worker side's "
        f"{WORKER_CPU_MS} ms); {outbound:.3f} ms in bench_outbound's conversations ({outbound / WORKER_CPU_MS:.0%})"
    )
    if args.misses:
        print("\n" + "\n".join(misses))


if __name__ == "__main__":
    main()
