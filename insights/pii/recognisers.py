"""The recognisers: each finds one kind of personal data in a text and answers its spans.

A cheap regular expression finds candidates; a validator keeps only real ones: ``python-stdnum`` for
checksums (Luhn for cards, ISO 7064 for IBANs, the SSA's rules for US SSNs), ``ipaddress`` for IPs,
Google's libphonenumber (``phonenumbers``) for phones. Each span carries its value normalised, so that
the same card written with spaces or dashes gets the same placeholder.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

import phonenumbers
from stdnum import iban, luhn
from stdnum.us import ssn

EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")
CARD = re.compile(r"(?<![\w-])[2-6]\d{3}(?:[ -]?\d){9,15}(?![\w-])")
IBAN = re.compile(r"(?<!\w)[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?!\w)")
SSN = re.compile(r"(?<![\w-])\d{3}[- ]\d{2}[- ]\d{4}(?![\w-])")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*[0-9A-Fa-f:](?![\w:])")
# A run of digits with the separators phone numbers are written with, at least seven digits in all.
PHONE_CANDIDATE = re.compile(r"(?<![\w+/.-])(?:\+|00)?\(?\d(?:[\d \t().\-/]{0,3}\d){6,16}\)?(?![\w/-])")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")
CARD_LENGTHS = range(13, 20)


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
    """Payment card numbers: 13 to 19 digits with spaces or dashes, a card network's first digit, Luhn-valid."""
    for match in CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if len(digits) in CARD_LENGTHS and luhn.is_valid(digits):
            yield Span(match.start(), match.end(), "CARD", digits)


def ibans(text: str) -> Iterator[Span]:
    """IBANs, compact or in groups, checksum-valid; a candidate that swallowed the words after it (an
    upper-case word after a grouped IBAN) is shortened a group at a time until it validates."""
    for match in IBAN.finditer(text):
        candidate = match.group()
        while len(candidate.replace(" ", "")) >= 15:
            if iban.is_valid(candidate):
                yield Span(match.start(), match.start() + len(candidate), "IBAN", iban.compact(candidate))
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
    """Phone numbers: each candidate run of digits is read by libphonenumber's matcher, as an international
    number (``+`` or ``00``: any region) or in the national format of one of ``regions``, in their order;
    the first region in which it is a valid number wins. Dates are never phones."""

    def phones(text: str) -> Iterator[Span]:
        for match in PHONE_CANDIDATE.finditer(text):
            candidate = match.group()
            if ISO_DATE.fullmatch(candidate.strip("()")):
                continue
            found = read_phone(candidate, regions)
            if found is not None:
                start = match.start() + found.start
                yield Span(start, start + len(found.raw_string), "PHONE", number_key(found.number))

    return phones


def read_phone(candidate: str, regions: tuple[str, ...]) -> phonenumbers.PhoneNumberMatch | None:
    """The number in ``candidate`` as the first of ``regions`` reads it (international numbers read the
    same in any), or ``None``."""
    international = candidate.startswith(("+", "00"))
    for region in regions[:1] if international else regions:
        matcher = phonenumbers.PhoneNumberMatcher(candidate, region, leniency=phonenumbers.Leniency.VALID)
        if matcher.has_next():
            return matcher.next()
    return None


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


BUILT_IN: tuple[Recogniser, ...] = (emails, ibans, cards, ssns, ips)  # then the operator's, then phones
