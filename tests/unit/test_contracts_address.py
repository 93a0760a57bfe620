"""The contracts' address fast path (shared.contracts.base.plain_address) never disagrees with
email-validator: whatever it accepts, email-validator accepts unchanged."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.contracts.base import _valid_address, plain_address

_local_chars = st.sampled_from(list("aZ09._+-!#$%&'*/=?^`{|}~\"(),:;<>@[\\] ä"))
_domain_chars = st.sampled_from(list("az09.-A_ ä"))
_labels = st.sampled_from(
    ["example", "co", "xn--bcher-kva", "a", "museum", "test", "local", "arpa", "1", "c0m"]
)
near_misses = st.one_of(
    st.tuples(st.text(_local_chars, min_size=0, max_size=70), st.text(_domain_chars, max_size=20)).map(
        lambda parts: f"{parts[0]}@{parts[1]}"
    ),
    st.tuples(st.text(_local_chars, min_size=1, max_size=10), st.lists(_labels, min_size=1, max_size=4)).map(
        lambda parts: f"{parts[0]}@{'.'.join(parts[1])}"
    ),
    st.from_regex(r"\A[a-z0-9.+_-]{1,70}@([a-z0-9-]{1,64}\.){1,3}[a-z0-9-]{1,6}\Z"),
)


def reference(value: str) -> str | None:
    try:
        return validate_email(value, check_deliverability=False, test_environment=True).normalized
    except EmailNotValidError:
        return None


@settings(max_examples=3000)
@given(near_misses)
def test_fast_path_accepts_only_what_email_validator_accepts_unchanged(value: str) -> None:
    if plain_address(value):
        assert reference(value) == value


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        ("anna.zimmer+news@example.com", True),
        ("r0000001@example1.org", True),
        ("x@a.test", True),
        ("Anna@Example.com", False),  # upper-case domain: normalised by the full check
        ("a@xn--bcher-kva.example", False),  # IDNA: normalised to Unicode
        ("x@a.local", False),
        ("a..b@example.com", False),
        ("a@b-.com", False),
        ("a@1.23", False),
        ("l" * 65 + "@example.com", False),
    ],
)
def test_plain_shapes(value: str, plain: bool) -> None:
    assert plain_address(value) is plain


def test_other_addresses_still_get_the_full_check_and_its_normalisation() -> None:
    assert _valid_address("Anna@Example.COM") == "Anna@example.com"
    with pytest.raises(ValueError, match="not a valid email address"):
        _valid_address("x@a.local")
