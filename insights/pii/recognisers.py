"""The recognisers: each finds one kind of personal data in a text and answers its spans.

A cheap regular expression finds candidates; a validator keeps only real ones: ``python-stdnum`` for
checksums (Luhn for cards, ISO 7064 mod 97-10 for IBANs, the SSA's rules for US SSNs), ``ipaddress`` for IPs,
Google's libphonenumber (``phonenumbers``) for phones. Each span carries its value normalised, so that
the same card written with spaces or dashes gets the same placeholder.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

import phonenumbers
from stdnum import luhn
from stdnum.iso7064 import mod_97_10
from stdnum.us import ssn

EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")
CARD = re.compile(r"(?<![\w+-])[1-6]\d{3}(?:[ -]?\d){8,15}(?![\w-])")
IBAN = re.compile(r"(?<!\w)[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?!\w)")
SSN = re.compile(r"(?<![\w-])\d{3}[- ]\d{2}[- ]\d{4}(?![\w-])")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*[0-9A-Fa-f:](?![\w:])")
# A run of digits with the separators phone numbers are written with (one between two digits: a space, a
# dot, a dash, a slash or brackets), seven to fifteen digits in all (E.164's most), and an extension.
PHONE_CANDIDATE = re.compile(
    r"(?<![\w+/.-])(?<!\d[ .])(?:\+|00)?\(?\d(?:(?:[ \t./-]|\)[ \t-]?|[ \t]?\()?\d){6,14}"
    r"(?:\s?(?:x|ext\.?)\s?\d{1,6})?(?![\w/-]|[ .]\d)"
)
# A number named as something else just before it ("order #48213771", "ticket no. 5531209") is not a phone.
LABELLED = re.compile(
    r"(?:#|\b(?:no|nr|n°|order|invoice|ticket|ref|reference|case|tracking|build|version|id)\.?:?)\s*\Z", re.IGNORECASE
)
# Words that announce a phone number, in the languages of the default regions: a bare run of digits ("my
# number is 4155552671") is a phone only after one of them; written in groups or with + it needs none.
PHONE_WORDS = re.compile(
    r"phone|tel\b|tel[eé]f|call|ring|mobile|cell|fax|whatsapp|sms|text me|number|reach|contact|n[uú]mero|nummer|"
    r"numer|puhelin|ruf|appel|chiam|ligue|llam|zadzwo|携帯|電話",
    re.IGNORECASE,
)
GROUPS = re.compile(r"\d+")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")
CARD_LENGTHS = range(12, 20)


class Span(NamedTuple):
    """Where a recogniser found one item: ``text[start:end]``, its kind (the placeholder's name) and its
    value normalised (items with the same value get the same placeholder)."""

    start: int
    end: int
    kind: str
    value: str


Recogniser = Callable[[str], Iterator[Span]]


def emails(text: str) -> Iterator[Span]:
    for match in EMAIL.finditer(text):
        yield Span(match.start(), match.end(), "EMAIL", match.group().lower())


def cards(text: str) -> Iterator[Span]:
    """Payment card numbers: 12 to 19 digits, compact or with spaces or dashes, a network's first digit, Luhn-valid."""
    for match in CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if len(digits) in CARD_LENGTHS and luhn.is_valid(digits):
            yield Span(match.start(), match.end(), "CARD", digits)


def ibans(text: str) -> Iterator[Span]:
    """IBANs, compact or in groups, with a valid ISO 7064 checksum; a candidate that swallowed the words
    after it (an upper-case word after a grouped IBAN) is shortened a group at a time until it validates.
    The checksum, not each country's length (``stdnum.iban``'s full check): an account number of a country
    or format the library does not know yet is masked too (a random string passes the checksum 1 time in 97)."""
    for match in IBAN.finditer(text):
        candidate = match.group()
        while len(compact := candidate.replace(" ", "")) >= 15:
            if mod_97_10.is_valid("".join(str(int(char, 36)) for char in compact[4:] + compact[:4])):
                yield Span(match.start(), match.start() + len(candidate), "IBAN", compact)
                break
            candidate = candidate.rsplit(" ", 1)[0] if " " in candidate else candidate[:-1]


def ssns(text: str) -> Iterator[Span]:
    """US social security numbers written as such (``123-45-6789``), valid by the SSA's rules."""
    for match in SSN.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if ssn.is_valid(digits):
            yield Span(match.start(), match.end(), "SSN", digits)


def ips(text: str) -> Iterator[Span]:
    """IPv4 and IPv6 addresses, as ``ipaddress`` reads them."""
    for pattern in (IPV4, IPV6):
        for match in pattern.finditer(text):
            candidate = match.group().rstrip(".:") if pattern is IPV6 else match.group()
            try:
                address = ipaddress.ip_address(candidate)
            except ValueError:
                continue
            yield Span(match.start(), match.start() + len(candidate), "IP", address.compressed)


def phone_finder(regions: tuple[str, ...]) -> Recogniser:
    """Phone numbers: each candidate run of digits (not a date, not named as an order or a ticket; a bare run
    of digits without a leading 0 only after a word that announces a phone) is read by libphonenumber
    (:func:`read_phone`)."""

    def phones(text: str) -> Iterator[Span]:
        for match in PHONE_CANDIDATE.finditer(text):
            candidate = match.group()
            if DATE.fullmatch(candidate.strip("()")) or LABELLED.search(
                text, max(0, match.start() - 16), match.start()
            ):
                continue
            bare = GROUPS.fullmatch(candidate) is not None and not candidate.startswith("0")
            if bare and not PHONE_WORDS.search(text, max(0, match.start() - 40), match.start()):
                continue
            number = read_phone(candidate, regions)
            if number is not None:
                yield Span(match.start(), match.end(), "PHONE", number_key(number))

    return phones


def read_phone(candidate: str, regions: tuple[str, ...]) -> phonenumbers.PhoneNumber | None:
    """The number in ``candidate``, or ``None``. An international number (``+``, or ``00`` as most of the
    world dials out) is read once, and taken if its length is possible for its country; a national one is
    taken in the first of ``regions`` where it is a valid number, or, when it is written in three or more
    groups as phone numbers are, in the first where its length is possible (libphonenumber's "valid" knows
    the ranges in service, which made-up and newly opened numbers fall outside)."""
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    international = candidate.startswith("+")
    possible = None
    for region in regions[:1] if international else regions:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if international or phonenumbers.is_valid_number_for_region(number, region):
            return number if phonenumbers.is_possible_number(number) else None
        if possible is None and phonenumbers.is_possible_number(number):
            possible = number
    return possible if len(GROUPS.findall(candidate)) >= 3 else None


def number_key(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def pattern_finder(name: str, pattern: str) -> Recogniser:
    """An operator's pattern (``[pii_patterns]``): every match, named by the pattern in capitals. An empty
    match is an error: the pattern is broken for this text, and masking nothing would send it as it is."""
    kind, compiled = re.sub(r"[^A-Z0-9]", "_", name.upper()), re.compile(pattern)

    def matches(text: str) -> Iterator[Span]:
        for match in compiled.finditer(text):
            if match.start() == match.end():
                raise ValueError(f"the pattern {name!r} matched an empty string")
            yield Span(match.start(), match.end(), kind, match.group())

    matches.__name__ = f"{name} pattern"  # as a failure names it
    return matches


BUILT_IN: tuple[Recogniser, ...] = (emails, ibans, cards, ssns, ips)  # phones after them (they take any digits)
BUILT_IN_NEED = re.compile(r"[\d@:]")  # a text without any of these holds nothing the built-in ones find
