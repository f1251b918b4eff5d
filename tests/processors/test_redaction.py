"""PII redaction of transcript text: spoken and written forms, table-driven; spans point into
the original text; numbers that are not PII are kept."""

from __future__ import annotations

import pytest
from callsense.processors.redaction import find_pii, iban_ok, luhn_ok, redact, redaction_counts

CASES = [
    # cards: written, grouped, dashed, spoken digit words, "double"/"triple", in a sentence
    ("my card is 4111 1111 1111 1111 thanks", "my card is [card] thanks"),
    ("4111-1111-1111-1111", "[card]"),
    ("5555555555554444", "[card]"),
    ("it's four one one one one one one one one one one one one one one one",
     "it's [card]"),
    ("four triple one double one" + " one" * 10, "[card]"),  # 4 and fifteen ones
    ("four, one, one, one, one, one, one, one, one, one, one, one, one, one, one, one.",
     "[card]."),
    ("3782 822463 10005", "[card]"),  # American Express, 15 digits
    # not a card: fails the Luhn check, and is not a phone number either
    ("4111 1111 1111 1112", "4111 1111 1111 1112"),
    # security codes after their cue, not elsewhere
    ("the security code is 737", "the security code is [cvv]"),
    ("CVV seven three seven", "CVV [cvv]"),
    ("the cvc on the back is 1234", "the cvc on the back is [cvv]"),
    ("I waited 737 days", "I waited 737 days"),
    # phone numbers
    ("call me on 555 123 4567", "call me on [phone]"),
    ("(555) 123-4567", "[phone]"),
    ("five five five one two three four five six seven", "[phone]"),
    ("my number is +44 20 7946 0958", "my number is [phone]"),
    ("1-800-555-0199", "[phone]"),
    ("oh seven seven double nine one two three four five six", "oh [phone]"),
    # e-mail, written and spoken
    ("write to john.smith@example.com please", "write to [email] please"),
    ("it's john dot smith at gmail dot com", "it's [email]"),
    ("mary underscore lee at example dot co dot uk", "[email]"),
    # US social security numbers
    ("ssn 123-45-6789", "ssn [ssn]"),
    ("my social security number is one two three four five six seven eight nine",
     "my social security number is [ssn]"),
    # IBAN (mod 97 checked)
    ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN [iban] please"),
    ("DE89370400440532013000", "[iban]"),
    ("GB82 WEST 1234 5698 7654 33", "GB82 WEST 1234 5698 7654 33"),
    # kept: amounts, times, dates, short order numbers, the word "one"
    ("the bill was 1,250,000 dollars", "the bill was 1,250,000 dollars"),
    ("order 48213 arrived at 10:30 on 12/05/2026", "order 48213 arrived at 10:30 on 12/05/2026"),
    ("I have one question and two complaints", "I have one question and two complaints"),
    ("oh no, I called at nine", "oh no, I called at nine"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_spoken_and_written_forms(text: str, expected: str) -> None:
    redacted, _ = redact(text)
    assert redacted == expected


def test_spans_point_into_the_original_text_and_are_counted() -> None:
    text = "card 4111 1111 1111 1111, code: security code 737, mail a@b.org, phone 555 123 4567"
    redacted, found = redact(text)
    assert redacted == "card [card], code: security code [cvv], mail [email], phone [phone]"
    assert [text[f.start : f.end] for f in found] == [
        "4111 1111 1111 1111", "737", "a@b.org", "555 123 4567"]  # fmt: skip
    assert redaction_counts(found) == {"card": 1, "cvv": 1, "email": 1, "phone": 1}
    assert find_pii("nothing to see here") == []


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
