from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.exceptions import DispatcherError, InvalidConfig, InvalidName
from dispatcher.validation import (
    DEFAULT_RESERVED,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    check_config,
    is_reserved,
    normalise_domain,
    normalise_email,
    normalise_label,
    normalise_owner_name,
    normalise_reason,
)

# No example database: it would write a .hypothesis directory into the tree.
# No deadline: timing on a loaded CI machine is not what these tests check.
fuzz = settings(max_examples=300, database=None, deadline=None)

latin1_text = st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
any_text = st.text(max_size=300) | latin1_text

label_like = st.from_regex(r"\s?[A-Za-z0-9\-_.\u212a\u00fc]{0,66}\s?", fullmatch=True)
domain_like = st.from_regex(
    r"\s?([A-Za-z0-9\-_\u00fc\u00df\u0130\u212a]{0,64}[.\u3002]){0,5}"
    r"[A-Za-z0-9\-\u00fc]{0,64}\.?\s?",
    fullmatch=True,
)
email_like = st.builds(
    "{}@{}".format,
    st.from_regex(r"[A-Za-z0-9.+_\u00e9\u0130 @\-]{0,70}", fullmatch=True),
    domain_like,
)

LABEL_63 = "a" * 63
NAME_253 = ".".join(["a" * 63] * 3 + ["b" * 61])
NAME_254 = ".".join(["a" * 63] * 3 + ["b" * 62])


# -- normalise_label --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("acme", "acme", id="lower-case"),
        pytest.param("ACME", "acme", id="upper-case"),
        pytest.param("AcMe", "acme", id="mixed-case"),
        pytest.param(" acme ", "acme", id="surrounding-spaces"),
        pytest.param("\tacme\n", "acme", id="surrounding-whitespace"),
        pytest.param("a", "a", id="one-char"),
        pytest.param("7", "7", id="one-digit"),
        pytest.param(LABEL_63, LABEL_63, id="63-chars"),
        pytest.param("A" * 63, LABEL_63, id="63-chars-upper"),
        pytest.param("123", "123", id="digits"),
        pytest.param("acme2", "acme2", id="trailing-digit"),
        pytest.param("a-b", "a-b", id="inner-hyphen"),
        pytest.param("a--b", "a--b", id="double-inner-hyphen"),
        pytest.param("xn--bcher-kva", "xn--bcher-kva", id="punycode"),
    ],
)
def test_normalise_label(value: str, expected: str) -> None:
    assert normalise_label(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="only-spaces"),
        pytest.param("a" * 64, id="64-chars"),
        pytest.param("-acme", id="leading-hyphen"),
        pytest.param("acme-", id="trailing-hyphen"),
        pytest.param("-", id="only-hyphen"),
        pytest.param("ac_me", id="underscore"),
        pytest.param("acme.", id="trailing-dot"),
        pytest.param("ac.me", id="inner-dot"),
        pytest.param("ac me", id="inner-space"),
        pytest.param("ac\tme", id="inner-tab"),
        pytest.param("acme\x00", id="nul"),
        pytest.param("acme/x", id="slash"),
        pytest.param("bücher", id="non-ascii"),
        pytest.param("\u212aelvin", id="kelvin-sign"),
        pytest.param("\u0130stanbul", id="dotted-capital-i"),
        pytest.param("\uff41cme", id="fullwidth-letter"),
        pytest.param("acme\u0663", id="arabic-indic-digit"),
    ],
)
def test_normalise_label_invalid(value: str) -> None:
    with pytest.raises(InvalidName) as exc_info:
        normalise_label(value)

    assert repr(value) in str(exc_info.value)


def test_normalise_label_kelvin_sign_not_lower_cased_to_k() -> None:
    value = "\u212aelvin"
    # The trap: a plain str.lower() would make this a valid ASCII label.
    assert value.lower() == "kelvin"

    with pytest.raises(InvalidName):
        normalise_label(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param(42, id="int"),
        pytest.param(b"acme", id="bytes"),
        pytest.param(["acme"], id="list"),
    ],
)
def test_normalise_label_not_a_string(value: Any) -> None:
    with pytest.raises(InvalidName) as exc_info:
        normalise_label(value)

    assert type(value).__name__ in str(exc_info.value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("www", id="www"),
        pytest.param("WWW", id="upper-case"),
        pytest.param(" admin ", id="spaces"),
        pytest.param("api", id="api"),
    ],
)
def test_normalise_label_reserved(value: str) -> None:
    with pytest.raises(InvalidName, match="reserved") as exc_info:
        normalise_label(value, reserved=DEFAULT_RESERVED)

    assert repr(value.strip().lower()) in str(exc_info.value)


def test_normalise_label_reserved_only_when_asked() -> None:
    assert normalise_label("www") == "www"


def test_normalise_label_custom_reserved() -> None:
    assert normalise_label("www", reserved={"acme"}) == "www"

    with pytest.raises(InvalidName, match="reserved"):
        normalise_label("ACME", reserved={"acme"})


@pytest.mark.parametrize(
    "value",
    [
        # Mail clients and servers look these up under a domain on their own.
        pytest.param("autodiscover", id="outlook-autodiscover"),
        pytest.param("autoconfig", id="thunderbird-autoconfig"),
        pytest.param("mta-sts", id="mta-sts"),
        pytest.param("openpgpkey", id="web-key-directory"),
        pytest.param("mx", id="mx"),
        pytest.param("smtp", id="smtp"),
        pytest.param("imap", id="imap"),
        pytest.param("pop", id="pop"),
        pytest.param("pop3", id="pop3"),
        pytest.param("mail", id="mail"),
        pytest.param("email", id="email"),
        pytest.param("webmail", id="webmail"),
        pytest.param("exchange", id="exchange"),
        pytest.param("owa", id="owa"),
        pytest.param("lyncdiscover", id="lyncdiscover"),
        pytest.param("sip", id="sip"),
        pytest.param("enterpriseenrollment", id="intune-enrollment"),
        pytest.param("enterpriseregistration", id="intune-registration"),
        # Networks resolve these under their search domain.
        pytest.param("wpad", id="wpad"),
        pytest.param("isatap", id="isatap"),
        pytest.param("localhost", id="localhost"),
        pytest.param("ns", id="ns"),
        pytest.param("ns1", id="ns1"),
        pytest.param("ns4", id="ns4"),
        pytest.param("NS12", id="ns12-upper"),
        pytest.param("dns", id="dns"),
        pytest.param("dns2", id="dns2"),
        pytest.param("ntp", id="ntp"),
        pytest.param("vpn", id="vpn"),
        pytest.param("ftp", id="ftp"),
        # A reserved label with a number after it is a sibling host.
        pytest.param("mx2", id="mx2"),
        pytest.param("smtp01", id="smtp01"),
        pytest.param("mail2", id="mail2"),
        pytest.param("www1", id="www1"),
        pytest.param("api2", id="api2"),
    ],
)
def test_normalise_label_reserved_for_mail_and_dns(value: str) -> None:
    with pytest.raises(InvalidName, match="reserved") as exc_info:
        normalise_label(value, what="subdomain", reserved=DEFAULT_RESERVED)

    assert repr(value.lower()) in str(exc_info.value)
    assert is_reserved(value.lower())


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("nsa", id="letters-after-ns"),
        pytest.param("news", id="news"),
        pytest.param("mxa", id="letters-after-mx"),
        pytest.param("www-1", id="hyphen-digit"),
        pytest.param("1mail", id="digit-before"),
        pytest.param("mailbox", id="longer-word"),
        pytest.param("pop-art", id="hyphenated-word"),
        pytest.param("2024", id="only-digits"),
        pytest.param("smtpd", id="smtpd"),
    ],
)
def test_normalise_label_not_reserved_lookalikes(value: str) -> None:
    assert normalise_label(value, reserved=DEFAULT_RESERVED) == value
    assert not is_reserved(value)


def test_normalise_label_numbered_rule_applies_to_custom_reserved() -> None:
    with pytest.raises(InvalidName, match="'acme7' is reserved"):
        normalise_label("ACME7", reserved={"acme"})

    assert normalise_label("acme-7", reserved={"acme"}) == "acme-7"


def test_default_reserved_holds_only_valid_labels() -> None:
    # A reserved label the label rule refuses anyway would be dead weight.
    for label in DEFAULT_RESERVED:
        assert normalise_label(label) == label


@pytest.mark.parametrize(
    "what", [pytest.param("slug", id="slug"), pytest.param("path prefix", id="path")]
)
def test_normalise_label_message_names_what(what: str) -> None:
    with pytest.raises(InvalidName) as exc_info:
        normalise_label("a_b", what=what)

    assert str(exc_info.value).startswith(what)


def test_normalise_label_message_truncated() -> None:
    value = "a_" * 5000

    with pytest.raises(InvalidName) as exc_info:
        normalise_label(value)

    assert len(str(exc_info.value)) < 300


def test_invalid_name_is_value_error() -> None:
    with pytest.raises(ValueError):
        normalise_label("")

    with pytest.raises(DispatcherError):
        normalise_label("")


@fuzz
@given(any_text | label_like)
def test_normalise_label_idempotent_or_invalid(value: str) -> None:
    try:
        label = normalise_label(value)
    except InvalidName:
        return

    assert normalise_label(label) == label
    assert label.isascii()
    assert label == label.lower()
    assert 1 <= len(label) <= 63


@fuzz
@given(label_like)
def test_normalise_label_never_returns_reserved(value: str) -> None:
    try:
        label = normalise_label(value, reserved=DEFAULT_RESERVED)
    except InvalidName:
        return

    assert label not in DEFAULT_RESERVED
    assert not is_reserved(label)


# -- normalise_domain -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("example.com", "example.com", id="name"),
        pytest.param("Shop.Acme.COM", "shop.acme.com", id="lower-cased"),
        pytest.param("shop.acme.com.", "shop.acme.com", id="trailing-dot"),
        pytest.param("Shop.Acme.com.", "shop.acme.com", id="upper-trailing-dot"),
        pytest.param(" shop.acme.com ", "shop.acme.com", id="surrounding-spaces"),
        pytest.param("bücher.de", "xn--bcher-kva.de", id="unicode"),
        pytest.param("BÜCHER.de", "xn--bcher-kva.de", id="unicode-upper"),
        pytest.param("bücher.de.", "xn--bcher-kva.de", id="unicode-trailing-dot"),
        pytest.param("bücher\u3002de", "xn--bcher-kva.de", id="ideographic-dot"),
        # IDNA reads U+3002 as a dot, so this is the trailing-dot spelling above.
        pytest.param(
            "bücher.de\u3002", "xn--bcher-kva.de", id="ideographic-trailing-dot"
        ),
        pytest.param("xn--bcher-kva.de", "xn--bcher-kva.de", id="punycode"),
        pytest.param("XN--BCHER-KVA.DE", "xn--bcher-kva.de", id="punycode-upper"),
        # IDNA 2008 keeps sharp s (IDNA 2003 made it "ss": another domain).
        pytest.param("faß.de", "xn--fa-hia.de", id="sharp-s"),
        pytest.param("FAß.De", "xn--fa-hia.de", id="sharp-s-mixed-case"),
        pytest.param("xn--fa-hia.de", "xn--fa-hia.de", id="sharp-s-punycode"),
        pytest.param("faß\uff0ede", "xn--fa-hia.de", id="fullwidth-dot"),
        pytest.param("faß\uff61de", "xn--fa-hia.de", id="halfwidth-ideographic-dot"),
        # Final sigma kept (IDNA 2003 made it σ); upper case has no final form.
        pytest.param("σίσυφος.gr", "xn--kxa6ajbbmh.gr", id="final-sigma"),
        pytest.param("ΣΊΣΥΦΟΣ.gr", "xn--kxa6akbbkh.gr", id="greek-upper"),
        pytest.param("ｂüｃｈｅｒ.de", "xn--bcher-kva.de", id="fullwidth-letters"),
        pytest.param("\u212aelvin.com", "kelvin.com", id="kelvin-sign-mapped"),
        pytest.param("shop.bücher.de", "shop.xn--bcher-kva.de", id="mixed-labels"),
        pytest.param("a-b.c-d", "a-b.c-d", id="inner-hyphens"),
        pytest.param("1.example.com", "1.example.com", id="digit-label"),
        pytest.param("example.com1", "example.com1", id="tld-with-digit"),
        pytest.param(LABEL_63 + ".com", LABEL_63 + ".com", id="label-63"),
        pytest.param(NAME_253, NAME_253, id="name-253"),
        pytest.param(NAME_253 + ".", NAME_253, id="name-253-trailing-dot"),
    ],
)
def test_normalise_domain(value: str, expected: str) -> None:
    assert normalise_domain(value) == expected


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        pytest.param("", "two labels", id="empty"),
        pytest.param(".", "two labels", id="dot"),
        pytest.param("localhost", "two labels", id="single-label"),
        pytest.param("com.", "two labels", id="single-label-trailing-dot"),
        pytest.param("1.2.3.4", "IP address", id="ipv4"),
        pytest.param("192.168.0.1.", "IP address", id="ipv4-trailing-dot"),
        pytest.param("::1", "two labels", id="ipv6-loopback"),
        pytest.param("[::1]", "two labels", id="ipv6-bracketed"),
        pytest.param("2001:db8::1", "two labels", id="ipv6"),
        pytest.param("::ffff:1.2.3.4", "label", id="ipv6-mapped-ipv4"),
        pytest.param("a..com", "label ''", id="empty-label"),
        pytest.param(".acme.com", "label ''", id="leading-dot"),
        pytest.param("acme.com..", "label ''", id="two-trailing-dots"),
        pytest.param("shop_1.acme.com", "label 'shop_1'", id="underscore"),
        pytest.param("a" * 64 + ".com", "label", id="label-64"),
        pytest.param("-acme.com", "label '-acme'", id="label-leading-hyphen"),
        pytest.param("acme-.com", "label 'acme-'", id="label-trailing-hyphen"),
        pytest.param("shop acme.com", "label", id="inner-space"),
        pytest.param("acme.com:8080", "label", id="port"),
        pytest.param("owner@acme.com", "label", id="userinfo"),
        pytest.param("acme.com/x", "label", id="slash"),
        pytest.param(NAME_254, "253", id="name-254"),
    ],
)
def test_normalise_domain_invalid(value: str, rule: str) -> None:
    with pytest.raises(InvalidName) as exc_info:
        normalise_domain(value)

    assert rule in str(exc_info.value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("localhost", id="single-label"),
        pytest.param("1.2.3.4", id="ipv4"),
        pytest.param("shop_1.acme.com", id="underscore"),
        pytest.param("a..com", id="empty-label"),
        pytest.param("bü\ufffdcher.de", id="unicode-prohibited"),
    ],
)
def test_normalise_domain_message_names_value(value: str) -> None:
    with pytest.raises(InvalidName) as exc_info:
        normalise_domain(value)

    assert repr(value) in str(exc_info.value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param(42, id="int"),
        pytest.param(b"example.com", id="bytes"),
    ],
)
def test_normalise_domain_not_a_string(value: Any) -> None:
    with pytest.raises(InvalidName) as exc_info:
        normalise_domain(value)

    assert type(value).__name__ in str(exc_info.value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("ü" * 64 + ".de", id="label-too-long"),
        pytest.param("bü\ufffdcher.de", id="prohibited-character"),
        pytest.param("\u05d0a.com", id="bidi-violation"),
    ],
)
def test_normalise_domain_not_idna(value: str) -> None:
    with pytest.raises(InvalidName, match="punycode"):
        normalise_domain(value)


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        pytest.param("xn--zz.de", "Invalid A-label", id="bad-punycode"),
        pytest.param("xn--.de", "no Punycode", id="empty-punycode"),
        pytest.param("xn--tda-.de", "hyphen", id="punycode-trailing-hyphen"),
        # Decodes to "ü", whose punycode is xn--tda: one name, two spellings.
        pytest.param("xn---tda.de", "canonical", id="non-canonical-punycode"),
        pytest.param("XN---TDA.de", "canonical", id="non-canonical-punycode-upper"),
        pytest.param("xn--ls8h.la", "U+1F4A9", id="punycode-of-emoji"),
        pytest.param("xn--a.de", "U+0080", id="punycode-of-control"),
        pytest.param("😀.com", "U+1F600", id="emoji"),
        pytest.param("i❤.ws", "U+2764", id="symbol"),
        pytest.param("ab--ü.de", "hyphens in 3rd and 4th", id="hyphens-3-4"),
        pytest.param("abc\u200d.de", "U+200D", id="zero-width-joiner"),
        pytest.param("shop_1.bücher.de", "U+005F", id="underscore-with-unicode"),
    ],
)
def test_normalise_domain_refuses_what_idna_2008_refuses(value: str, rule: str) -> None:
    with pytest.raises(InvalidName) as exc_info:
        normalise_domain(value)

    message = str(exc_info.value)
    assert repr(value) in message
    assert rule in message
    assert "IDNA 2008" in message


@fuzz
@given(any_text | domain_like)
def test_normalise_domain_idempotent_or_invalid(value: str) -> None:
    try:
        host = normalise_domain(value)
    except InvalidName:
        return

    assert normalise_domain(host) == host
    assert host.isascii()
    assert host == host.lower()
    assert len(host) <= 253
    assert not host.endswith(".")


# -- normalise_email --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("owner@acme.test", "owner@acme.test", id="plain"),
        pytest.param("Owner@Acme.TEST", "owner@acme.test", id="lower-cased"),
        pytest.param(" owner@acme.test\n", "owner@acme.test", id="whitespace"),
        pytest.param("owner@acme.test.", "owner@acme.test", id="trailing-dot"),
        pytest.param("first.last+tag@acme.test", "first.last+tag@acme.test", id="tag"),
        pytest.param("owner@bücher.de", "owner@xn--bcher-kva.de", id="idn-domain"),
        pytest.param("Owner@Faß.DE", "owner@xn--fa-hia.de", id="idn-sharp-s"),
        pytest.param("josé@acme.test", "josé@acme.test", id="unicode-local"),
        pytest.param("a" * 64 + "@acme.test", "a" * 64 + "@acme.test", id="local-64"),
    ],
)
def test_normalise_email(value: str, expected: str) -> None:
    assert normalise_email(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("owner", id="no-at"),
        pytest.param("@acme.test", id="no-local"),
        pytest.param("owner@", id="no-domain"),
        pytest.param("a@b@acme.test", id="two-ats"),
        pytest.param("own er@acme.test", id="space-in-local"),
        pytest.param("own\x00er@acme.test", id="nul-in-local"),
        pytest.param("a" * 65 + "@acme.test", id="local-65"),
        pytest.param("owner@localhost", id="single-label-domain"),
        pytest.param("owner@1.2.3.4", id="ip-domain"),
        pytest.param("owner@acme..test", id="empty-label"),
        pytest.param("owner@ac_me.test", id="underscore-domain"),
        pytest.param("owner@xn--zz.test", id="bad-punycode-domain"),
        pytest.param("owner@😀.test", id="emoji-domain"),
        # Control characters: a terminal or log showing the address obeys them.
        pytest.param("own\x1b[2Jer@acme.test", id="escape-in-local"),
        pytest.param("own\x85er@acme.test", id="next-line-in-local"),
        pytest.param("own\x9ber@acme.test", id="c1-csi-in-local"),
        pytest.param("own\u2028er@acme.test", id="line-separator-in-local"),
        pytest.param("own\u202eer@acme.test", id="bidi-override-in-local"),
        pytest.param("own\x7fer@acme.test", id="del-in-local"),
    ],
)
def test_normalise_email_invalid(value: str) -> None:
    with pytest.raises(InvalidName) as exc_info:
        normalise_email(value)

    assert repr(value) in str(exc_info.value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param(42, id="int"),
    ],
)
def test_normalise_email_not_a_string(value: Any) -> None:
    with pytest.raises(InvalidName) as exc_info:
        normalise_email(value)

    assert type(value).__name__ in str(exc_info.value)


def test_normalise_email_bad_domain_says_why() -> None:
    with pytest.raises(InvalidName, match="bad domain.*IP address"):
        normalise_email("owner@1.2.3.4")


def test_normalise_email_lower_casing_can_lengthen() -> None:
    # U+0130 lower-cases to two code points: 64 of them make a 128-character
    # local part, longer than the rule allows. Refuse it, or return an address
    # that passes the rule itself; never one that fails it on the next call.
    value = "\u0130" * 64 + "@acme.test"

    try:
        email = normalise_email(value)
    except InvalidName:
        return

    assert normalise_email(email) == email


@fuzz
@given(any_text | email_like)
def test_normalise_email_idempotent_or_invalid(value: str) -> None:
    try:
        email = normalise_email(value)
    except InvalidName:
        return

    assert normalise_email(email) == email
    local, _, domain = email.rpartition("@")
    assert local == local.lower()
    assert normalise_domain(domain) == domain


# -- normalise_owner_name and normalise_reason --------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param("  ", None, id="blank"),
        pytest.param(" Ann Owner ", "Ann Owner", id="stripped"),
        pytest.param("Zoë Ünal", "Zoë Ünal", id="unicode"),
        # Joiners belong to some scripts' spelling (Persian, Indic): kept.
        pytest.param(
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            id="zero-width-non-joiner",
        ),
        pytest.param("\tAnn\n", "Ann", id="outer-whitespace"),
    ],
)
def test_normalise_owner_name(value: str | None, expected: str | None) -> None:
    assert normalise_owner_name(value) == expected


CONTROL_TEXT = [
    pytest.param("Ann\x1b[31mRed", "U+001B", id="escape"),
    pytest.param("Ann\nOwner", "U+000A", id="newline"),
    pytest.param("Ann\rOwner", "U+000D", id="carriage-return"),
    pytest.param("Ann\tOwner", "U+0009", id="tab"),
    pytest.param("Ann\x00", "U+0000", id="nul"),
    pytest.param("Ann\x7f", "U+007F", id="del"),
    pytest.param("Ann\x9b2J", "U+009B", id="c1-csi"),
    pytest.param("Ann\u2028Owner", "U+2028", id="line-separator"),
    pytest.param("Ann\u2029Owner", "U+2029", id="paragraph-separator"),
    pytest.param("Ann\u202egnp.exe", "U+202E", id="right-to-left-override"),
    pytest.param("Ann\u2066x\u2069", "U+2066", id="bidi-isolate"),
]


@pytest.mark.parametrize(("value", "code_point"), CONTROL_TEXT)
def test_normalise_owner_name_refuses_control_characters(
    value: str, code_point: str
) -> None:
    with pytest.raises(InvalidName) as exc_info:
        normalise_owner_name(value)

    message = str(exc_info.value)
    assert message.startswith("owner name ")
    assert repr(value) in message
    assert code_point in message
    assert message.isprintable()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param(" unpaid ", "unpaid", id="stripped"),
        pytest.param("impayé", "impayé", id="unicode"),
    ],
)
def test_normalise_reason(value: str | None, expected: str | None) -> None:
    assert normalise_reason(value) == expected


@pytest.mark.parametrize(("value", "code_point"), CONTROL_TEXT)
def test_normalise_reason_refuses_control_characters(
    value: str, code_point: str
) -> None:
    with pytest.raises(InvalidName) as exc_info:
        normalise_reason(value)

    message = str(exc_info.value)
    assert message.startswith("disabled reason ")
    assert code_point in message


def test_normalise_reason_not_a_string() -> None:
    with pytest.raises(InvalidName, match="int"):
        normalise_reason(42)  # type: ignore[arg-type]


# -- check_config -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({}, id="empty"),
        pytest.param({"theme": "dark"}, id="string"),
        pytest.param(
            {"n": 1, "f": 1.5, "b": True, "none": None, "s": "é"}, id="scalars"
        ),
        pytest.param({"a": {"b": {"c": [1, {"d": []}]}}}, id="nested"),
        pytest.param({"": "empty key"}, id="empty-key"),
    ],
)
def test_check_config(value: dict[str, Any]) -> None:
    assert check_config(value) == value


def test_check_config_mapping_not_dict() -> None:
    result = check_config(MappingProxyType({"a": 1}))

    assert type(result) is dict
    assert result == {"a": 1}


def test_check_config_nested_mapping() -> None:
    # Tenant snapshots hand out configs like this one.
    value = MappingProxyType({"a": MappingProxyType({"b": (1, 2)})})

    assert check_config(value) == {"a": {"b": [1, 2]}}


def test_check_config_tuple_becomes_list() -> None:
    assert check_config({"a": (1, 2)}) == {"a": [1, 2]}


def test_check_config_returns_deep_copy() -> None:
    value: dict[str, Any] = {"nested": {"list": [1, 2]}, "top": [{"x": 1}]}

    result = check_config(value)
    result["nested"]["list"].append(3)
    result["top"][0]["x"] = 2
    result["new"] = True

    assert value == {"nested": {"list": [1, 2]}, "top": [{"x": 1}]}
    assert result is not value
    assert result["nested"] is not value["nested"]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param([], id="list"),
        pytest.param([("a", 1)], id="pairs"),
        pytest.param("{}", id="json-string"),
        pytest.param(42, id="int"),
    ],
)
def test_check_config_not_a_mapping(value: Any) -> None:
    with pytest.raises(InvalidConfig) as exc_info:
        check_config(value)

    assert type(value).__name__ in str(exc_info.value)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(1, id="int"),
        pytest.param(None, id="none"),
        pytest.param(True, id="bool"),
        pytest.param(1.5, id="float"),
        pytest.param(("a",), id="tuple"),
        pytest.param(b"a", id="bytes"),
    ],
)
def test_check_config_non_string_key(key: Any) -> None:
    with pytest.raises(InvalidConfig) as exc_info:
        check_config({key: "x"})

    assert repr(key) in str(exc_info.value)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(1, id="int"),
        pytest.param(None, id="none"),
        pytest.param(True, id="bool"),
    ],
)
def test_check_config_nested_non_string_key(key: Any) -> None:
    # json.dumps would silently turn the key into a string: a different config.
    with pytest.raises(InvalidConfig):
        check_config({"nested": {key: "x"}})


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": math.nan}, id="nan"),
        pytest.param({"a": math.inf}, id="inf"),
        pytest.param({"a": -math.inf}, id="minus-inf"),
        pytest.param({"a": {"b": [math.nan]}}, id="nested-nan"),
        pytest.param({"a": object()}, id="object"),
        pytest.param({"a": {1, 2}}, id="set"),
        pytest.param({"a": frozenset()}, id="frozenset"),
        pytest.param({"a": b"bytes"}, id="bytes"),
        pytest.param({"a": 1j}, id="complex"),
        pytest.param({"a": decimal.Decimal("1.5")}, id="decimal"),
        pytest.param({"a": dt.date(2024, 1, 1)}, id="date"),
        pytest.param({"a": [1, {"b": object()}]}, id="nested-object"),
    ],
)
def test_check_config_not_json(value: Mapping[str, Any]) -> None:
    with pytest.raises(InvalidConfig, match="not valid JSON"):
        check_config(value)


@pytest.mark.parametrize(
    ("depth", "ok"),
    [
        pytest.param(MAX_CONFIG_DEPTH, True, id="at-limit"),
        pytest.param(MAX_CONFIG_DEPTH + 1, False, id="over-limit"),
        pytest.param(900, False, id="just-under-the-recursion-limit"),
    ],
)
def test_check_config_depth_limit(depth: int, ok: bool) -> None:
    # The config object itself is level 1; each list inside adds one.
    value: Any = []
    for _ in range(depth - 2):
        value = [value]
    config = {"a": value}

    if ok:
        assert check_config(config) == config
        return
    with pytest.raises(InvalidConfig) as exc_info:
        check_config(config)
    assert f"the limit is {MAX_CONFIG_DEPTH}" in str(exc_info.value)


def test_check_config_depth_counts_objects_and_lists() -> None:
    value: Any = {}
    for i in range(MAX_CONFIG_DEPTH):
        value = {"k": value} if i % 2 else [value]

    with pytest.raises(InvalidConfig, match="nested"):
        check_config({"a": value})


def test_check_config_too_deep() -> None:
    # A few kilobytes of JSON, but deeper than Python's recursion limit: the
    # module promises InvalidConfig for a bad config, not a RecursionError.
    value: list[Any] = []
    for _ in range(5000):
        value = [value]

    with pytest.raises(InvalidConfig):
        check_config({"a": value})


def test_check_config_size_limit() -> None:
    overhead = len(json.dumps({"k": ""}))
    at_limit = {"k": "x" * (MAX_CONFIG_BYTES - overhead)}
    over_limit = {"k": "x" * (MAX_CONFIG_BYTES - overhead + 1)}

    assert check_config(at_limit) == at_limit
    with pytest.raises(InvalidConfig, match=str(MAX_CONFIG_BYTES)):
        check_config(over_limit)


def test_check_config_size_counts_bytes_not_characters() -> None:
    # Few enough characters, too many bytes once encoded.
    value = {"k": "\u00e9" * (MAX_CONFIG_BYTES // 2)}

    with pytest.raises(InvalidConfig, match="bytes"):
        check_config(value)


def test_invalid_config_is_value_error() -> None:
    with pytest.raises(ValueError):
        check_config([])

    with pytest.raises(DispatcherError):
        check_config([])
