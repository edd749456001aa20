"""The masker, in process: what each recogniser masks, what it leaves, placeholders, failures, settings."""

from __future__ import annotations

from collections import Counter

import pytest

from insights.analyzer import ConversationToAnalyze
from insights.pii.masker import Masker
from insights.pii.placeholders import Placeholders
from settings import ConfigError, load_settings

MASKER = Masker.of(load_settings({}))


def masked(text: str, masker: Masker = MASKER) -> str:
    return masker.text(text, Placeholders(), Counter())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to Jane.Roe+eu@mail.example.co.uk today", "write to [EMAIL_1] today"),
        ("call +44 20 7946 0958 please", "call [PHONE_1] please"),
        ("call (415) 555-2671 please", "call [PHONE_1] please"),
        ("ruf an: 030 901820", "ruf an: [PHONE_1]"),
        ("appelez le 01 42 68 53 00", "appelez le [PHONE_1]"),
        ("card 4111-1111-1111-1111 expired", "card [CARD_1] expired"),
        ("IBAN DE89 3704 0044 0532 0130 00 AND more", "IBAN [IBAN_1] AND more"),
        ("iban GB82WEST12345698765432.", "iban [IBAN_1]."),
        ("my SSN is 123-45-6789", "my SSN is [SSN_1]"),
        ("from 192.168.1.20, then 2001:db8::1.", "from [IP_1], then [IP_2]."),
        ("my number is 4155552671, thanks", "my number is [PHONE_1], thanks"),
        ("(415) 555-2671 x123 is my desk", "[PHONE_1] is my desk"),
        ("from abroad: 0049 30 901820", "from abroad: [PHONE_1]"),
        ("Maestro 6759 6498 2648", "Maestro [CARD_1]"),
    ],
)
def test_masks_each_kind(text, expected):
    assert masked(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 4821937 placed on 2024-03-15 for $1,204.50",
        "version 2.4.1 broke it, build 10.2.0-rc1",
        "tracking 1Z999AA10123456784 shipped 15/03/2024",
        "card 4111 1111 1111 1112 is not Luhn-valid",  # a card number's look-alike
        "IBAN DE89 3704 0044 0532 0130 02 fails its checksum",
        "SSN 000-12-3456 is never issued",
        "at 12:30:45 the address 999.1.1.1 was refused",
        "ticket #48213771 and order no. 5531209 are open",
        "the code 4155552671 on the receipt is wrong",  # a bare run of digits, no phone word before it
    ],
)
def test_leaves_look_alikes(text):
    assert masked(text) == text


def test_the_same_value_gets_the_same_placeholder_across_messages():
    conversation = ConversationToAnalyze(
        "c1",
        [
            {"role": "customer", "content": "I am a@example.com, or b@example.com", "extra": 1},
            {"role": "agent", "content": "Confirmed A@example.com; card 4111 1111 1111 1111 or 4111111111111111?"},
        ],
    )
    result = MASKER.batch([conversation])
    assert [m["content"] for m in result.conversations[0].messages] == [
        "I am [EMAIL_1], or [EMAIL_2]",
        "Confirmed [EMAIL_1]; card [CARD_1] or [CARD_1]?",
    ]
    assert result.conversations[0].messages[0] == {"role": "customer", "content": "I am [EMAIL_1], or [EMAIL_2]"}
    assert result.counts == Counter({"EMAIL": 3, "CARD": 2})


def test_numbering_starts_again_in_each_conversation():
    both = MASKER.batch(
        [ConversationToAnalyze(i, [{"role": "customer", "content": f"{i}@example.com"}]) for i in ("x", "y")]
    )
    assert [c.messages[0]["content"] for c in both.conversations] == ["[EMAIL_1]", "[EMAIL_1]"]


def test_a_recogniser_that_raises_fails_its_conversation_only():
    def broken(text):
        if "poison" in text:
            raise RuntimeError("secret@example.com")
        return iter(())

    masker = Masker((broken,), "test")
    result = masker.batch(
        [
            ConversationToAnalyze("bad", [{"role": "customer", "content": "poison secret@example.com"}]),
            ConversationToAnalyze("good", [{"role": "customer", "content": "fine"}]),
        ]
    )
    assert [c.conversation_id for c in result.conversations] == ["good"]
    assert "broken recogniser raised RuntimeError" in result.failed["bad"]
    assert "secret" not in result.failed["bad"]


def test_operator_patterns_and_an_empty_match_fails():
    settings = load_settings({}).model_copy(
        update={"pii_patterns": {"order-number": r"\bORD-\d{6}\b", "poison": r"(?=POISON)"}}
    )
    masker = Masker.of(settings)
    assert (
        masked("ORD-123456 and ORD-123456, not ORD-12", masker) == "[ORDER_NUMBER_1] and [ORDER_NUMBER_1], not ORD-12"
    )
    result = masker.batch([ConversationToAnalyze("p", [{"role": "customer", "content": "POISON"}])])
    assert "poison" in result.failed["p"] and not result.conversations


def test_off_sends_the_text_as_it_is_and_changes_the_version():
    off = Masker.of(load_settings({"PII_MASKING": "off"}))
    text = "a@example.com +44 20 7946 0958"
    assert (
        off.batch([ConversationToAnalyze("c", [{"role": "r", "content": text}])])
        .conversations[0]
        .messages[0]["content"]
        == text
    )
    assert off.version == "" and MASKER.version.startswith("pii")
    patterned = load_settings({}).model_copy(update={"pii_patterns": {"order": r"ORD-\d+"}})
    assert Masker.of(patterned).version != MASKER.version


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({"PII_MASKING": "maybe"}, "PII_MASKING"), ({"PII_PHONE_REGIONS": "us"}, "PII_PHONE_REGIONS")],
)
def test_bad_settings_are_refused(environ, expected):
    with pytest.raises(ConfigError, match=expected):
        load_settings(environ)


@pytest.mark.parametrize("pattern", ["(unclosed", "x*"])
def test_a_pattern_that_cannot_work_is_refused(tmp_path, pattern):
    config = tmp_path / "config.toml"
    source = (load_settings.__globals__["config_path"]({})).read_text()
    config.write_text(source.replace("\n[pii_patterns]\n", f"\n[pii_patterns]\nbad = '{pattern}'\n"))
    with pytest.raises(ConfigError, match="pii_patterns"):
        load_settings({}, config)
