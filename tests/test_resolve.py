from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.sansio.utils import host_is_trusted

from dispatcher.exceptions import DispatcherError, InvalidHost, InvalidRequest
from dispatcher.resolve import (
    first_segment,
    is_apex,
    parse_host,
    parse_slug,
    request_host,
    subdomain_of,
    target_authority,
)

# No example database: it would write a .hypothesis directory into the tree.
# No deadline: timing on a loaded CI machine is not what these tests check.
fuzz = settings(max_examples=300, database=None, deadline=None)

latin1_text = st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
any_text = st.text(max_size=300) | latin1_text

host_like = st.from_regex(
    r"\[?[A-Za-z0-9.:\-]{1,70}\]?(:[0-9]{0,6})?\.?", fullmatch=True
)
path_like = st.from_regex(r"/{1,2}[a-zA-Z0-9.%\-]{0,70}(/.{0,20})?", fullmatch=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("example.com", "example.com", id="name"),
        pytest.param("Acme.Example.COM", "acme.example.com", id="lower-cased"),
        pytest.param("acme.example.com.", "acme.example.com", id="trailing-dot"),
        pytest.param("acme.example.com:8080", "acme.example.com", id="port"),
        pytest.param("acme.example.com.:8080", "acme.example.com", id="dot-port"),
        pytest.param("example.com:1", "example.com", id="port-1"),
        pytest.param("example.com:65535", "example.com", id="port-65535"),
        pytest.param("localhost", "localhost", id="single-label"),
        pytest.param("a", "a", id="one-char"),
        pytest.param("a-b.c-d", "a-b.c-d", id="inner-hyphens"),
        pytest.param("xn--bcher-kva.de", "xn--bcher-kva.de", id="punycode"),
        pytest.param("127.0.0.1", "127.0.0.1", id="ipv4"),
        pytest.param("127.0.0.1:5000", "127.0.0.1", id="ipv4-port"),
        pytest.param("[::1]", "[::1]", id="ipv6"),
        pytest.param("[::1]:8080", "[::1]", id="ipv6-port"),
        pytest.param("[2001:DB8::1]", "[2001:db8::1]", id="ipv6-lower-cased"),
        pytest.param("[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]", id="ipv6-v4"),
        pytest.param("a" * 63 + ".com", "a" * 63 + ".com", id="label-63"),
        pytest.param(
            ".".join(["a" * 63] * 3 + ["b" * 61]),
            ".".join(["a" * 63] * 3 + ["b" * 61]),
            id="name-253",
        ),
        pytest.param(
            ".".join(["a" * 63] * 3 + ["b" * 61]) + ".",
            ".".join(["a" * 63] * 3 + ["b" * 61]),
            id="name-253-trailing-dot",
        ),
    ],
)
def test_parse_host(value: str, expected: str) -> None:
    assert parse_host(value) == expected


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("a" * 1001, "longer than 1000", id="huge"),
        pytest.param("user@example.com", "userinfo", id="userinfo"),
        pytest.param("user:pw@example.com", "userinfo", id="userinfo-password"),
        pytest.param(" example.com", "whitespace", id="leading-space"),
        pytest.param("example.com ", "whitespace", id="trailing-space"),
        pytest.param("exa mple.com", "whitespace", id="inner-space"),
        pytest.param("example.com\t", "whitespace", id="tab"),
        pytest.param("example.com\r\nX-Evil: 1", "whitespace", id="crlf"),
        pytest.param("example.com\n", "whitespace", id="lf"),
        pytest.param("example.com\x00", "control", id="nul"),
        pytest.param("example.com\x7f", "control", id="del"),
        pytest.param("example.com\x85", "control", id="c1-control"),
        pytest.param("example.com\u00a0", "whitespace", id="nbsp"),
        pytest.param("a.com,b.com", "single host", id="comma"),
        pytest.param("under_score.com", "'_'", id="underscore"),
        pytest.param("exa$mple.com", "'$'", id="dollar"),
        pytest.param("example.com/x", "'/'", id="slash"),
        pytest.param("a..b", "empty label", id="empty-label"),
        pytest.param("a..", "empty label", id="double-trailing-dot"),
        pytest.param(".example.com", "empty label", id="leading-dot"),
        pytest.param(".", "empty label", id="dot"),
        pytest.param("a" * 64 + ".com", "longer than 63", id="label-64"),
        pytest.param("-acme.com", "'-'", id="label-leading-hyphen"),
        pytest.param("acme-.com", "'-'", id="label-trailing-hyphen"),
        pytest.param(
            ".".join(["a" * 63] * 3 + ["b" * 62]), "longer than 253", id="name-254"
        ),
        pytest.param("example.com:0", "between 1 and 65535", id="port-0"),
        pytest.param("example.com:65536", "between 1 and 65535", id="port-65536"),
        pytest.param("example.com:99999", "between 1 and 65535", id="port-99999"),
        pytest.param("example.com:123456", "between 1 and 65535", id="port-6-digits"),
        pytest.param("example.com:", "port is empty", id="port-empty"),
        pytest.param("example.com:abc", "ASCII digits", id="port-letters"),
        pytest.param("example.com:+80", "ASCII digits", id="port-plus"),
        pytest.param("example.com:-80", "ASCII digits", id="port-minus"),
        pytest.param("example.com:\u0663", "ASCII", id="port-arabic-digit"),
        pytest.param("example.com:080", "leading zeros", id="port-leading-zero"),
        pytest.param(":80", "empty", id="no-name"),
        pytest.param("bücher.de", "ASCII", id="idn-not-punycode"),
        pytest.param("\u212aexample.com", "ASCII", id="kelvin-sign"),
        pytest.param("\u0130.com", "ASCII", id="dotted-capital-i"),
        pytest.param("::1", "'[' and ']'", id="ipv6-unbracketed"),
        pytest.param("[::1", "closing ']'", id="ipv6-unclosed"),
        pytest.param("[::1]x", "':port'", id="ipv6-junk-after"),
        pytest.param("[::1]:0", "between 1 and 65535", id="ipv6-port-0"),
        pytest.param("[::1]:", "port is empty", id="ipv6-port-empty"),
        pytest.param("[1:2]", "not an IPv6 address", id="ipv6-too-short"),
        pytest.param("[1.2.3.4]", "not an IPv6 address", id="ipv4-in-brackets"),
        pytest.param("[fe80::1%eth0]", "not an IPv6 address", id="ipv6-zone"),
        pytest.param("[]", "not an IPv6 address", id="ipv6-empty"),
        pytest.param("[::1].", "':port'", id="ipv6-trailing-dot"),
    ],
)
def test_parse_host_invalid(value: str, rule: str) -> None:
    with pytest.raises(InvalidHost, match=re.escape(rule)):
        parse_host(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("user@example.com", id="userinfo"),
        pytest.param("example.com:65536", id="port"),
        pytest.param("a..b", id="empty-label"),
    ],
)
def test_parse_host_message_names_value(value: str) -> None:
    with pytest.raises(InvalidHost) as exc_info:
        parse_host(value)

    assert repr(value) in str(exc_info.value)


def test_parse_host_message_truncated() -> None:
    value = "a b" * 4000

    with pytest.raises(InvalidHost) as exc_info:
        parse_host(value)

    message = str(exc_info.value)
    assert len(message) < 200
    assert "12000 characters" in message


def test_invalid_host_is_value_error() -> None:
    with pytest.raises(ValueError):
        parse_host("")

    with pytest.raises(DispatcherError):
        parse_host("")


@fuzz
@given(any_text | host_like)
def test_parse_host_idempotent_or_invalid(value: str) -> None:
    try:
        host = parse_host(value)
    except InvalidHost as e:
        message = str(e)
        assert not message.endswith(": ")
        assert len(message) < 1000
        return

    assert parse_host(host) == host
    assert host == host.lower()
    assert host.isascii()
    # Flask's request.host must not blank out a host the dispatcher accepted.
    assert host_is_trusted(value)


@pytest.mark.parametrize(
    ("http_host", "server_name", "server_port", "scheme", "protocol", "expected"),
    [
        pytest.param(
            "Acme.Example.com:8080",
            "server",
            "80",
            "http",
            "HTTP/1.1",
            "acme.example.com",
            id="host-header",
        ),
        pytest.param(
            "acme.example.com",
            None,
            None,
            "http",
            "HTTP/2",
            "acme.example.com",
            id="h2",
        ),
        pytest.param(
            "acme.example.com",
            None,
            None,
            "http",
            "HTTP/1.0",
            "acme.example.com",
            id="http-1.0-with-host",
        ),
        pytest.param(
            None, "Example.com", "80", "http", "HTTP/1.0", "example.com", id="fallback"
        ),
        pytest.param(
            None,
            "example.com",
            "443",
            "https",
            "HTTP/1.0",
            "example.com",
            id="fallback-https",
        ),
        pytest.param(
            None,
            "example.com",
            "8080",
            "http",
            "HTTP/1.0",
            "example.com",
            id="fallback-port",
        ),
        pytest.param(
            None, "example.com", None, "http", "HTTP/1.0", "example.com", id="no-port"
        ),
        pytest.param(
            None, "::1", "8080", "http", "HTTP/1.0", "[::1]", id="fallback-ipv6"
        ),
        pytest.param(
            None, "[::1]", "80", "http", "HTTP/1.0", "[::1]", id="fallback-ipv6-bracket"
        ),
        pytest.param(
            None, "example.com", "80", "http", "HTTP/0.9", "example.com", id="http-0.9"
        ),
    ],
)
def test_request_host(
    http_host: str | None,
    server_name: str | None,
    server_port: str | None,
    scheme: str,
    protocol: str,
    expected: str,
) -> None:
    assert request_host(http_host, server_name, server_port, scheme, protocol) == (
        expected
    )


@pytest.mark.parametrize(
    ("http_host", "server_name", "server_port", "scheme", "protocol", "rule"),
    [
        pytest.param(
            "", "example.com", "80", "http", "HTTP/1.0", "empty", id="empty-host"
        ),
        pytest.param(
            None,
            "example.com",
            "80",
            "http",
            "HTTP/1.1",
            "Host header is required for HTTP/1.1",
            id="http-1.1-no-host",
        ),
        pytest.param(
            None,
            "example.com",
            "443",
            "https",
            "HTTP/2",
            "Host header is required for HTTP/1.1",
            id="h2-no-host",
        ),
        pytest.param(
            None,
            "example.com",
            "80",
            "http",
            "",
            "Host header is required for HTTP/1.1",
            id="unknown-protocol-no-host",
        ),
        pytest.param(
            None, None, "80", "http", "HTTP/1.0", "no SERVER_NAME", id="nothing"
        ),
        pytest.param(
            None, "", "80", "http", "HTTP/1.0", "no SERVER_NAME", id="empty-server"
        ),
        pytest.param(
            None,
            "example.com",
            "abc",
            "http",
            "HTTP/1.0",
            "ASCII digits",
            id="bad-server-port",
        ),
        pytest.param(
            "a b", "example.com", "80", "http", "HTTP/1.1", "whitespace", id="bad-host"
        ),
    ],
)
def test_request_host_invalid(
    http_host: str | None,
    server_name: str | None,
    server_port: str | None,
    scheme: str,
    protocol: str,
    rule: str,
) -> None:
    with pytest.raises(InvalidHost, match=re.escape(rule)):
        request_host(http_host, server_name, server_port, scheme, protocol)


@fuzz
@given(
    st.none() | any_text | host_like,
    st.none() | any_text | host_like,
    st.none() | st.text(max_size=8),
    st.sampled_from(["http", "https"]) | st.text(max_size=8),
    st.sampled_from(["HTTP/1.0", "HTTP/1.1", "HTTP/2"]) | st.text(max_size=8),
)
def test_request_host_returns_or_invalid(
    http_host: str | None,
    server_name: str | None,
    server_port: str | None,
    scheme: str,
    protocol: str,
) -> None:
    try:
        host = request_host(http_host, server_name, server_port, scheme, protocol)
    except InvalidHost:
        return

    assert parse_host(host) == host


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("acme.example.com", "acme", id="label"),
        pytest.param("a.example.com", "a", id="one-char"),
        pytest.param("xn--bcher-kva.example.com", "xn--bcher-kva", id="punycode"),
        pytest.param("wwww.example.com", "wwww", id="not-quite-www"),
        pytest.param("example.com", None, id="apex"),
        pytest.param("www.example.com", None, id="www"),
        pytest.param("a.b.example.com", None, id="two-labels"),
        pytest.param("evilexample.com", None, id="no-dot-boundary"),
        pytest.param("acme.evilexample.com", None, id="other-domain-suffix"),
        pytest.param("example.com.evil.net", None, id="base-as-prefix"),
        pytest.param("acme.example.org", None, id="other-domain"),
        pytest.param("com", None, id="shorter"),
        pytest.param("[::1]", None, id="ipv6"),
    ],
)
def test_subdomain_of(host: str, expected: str | None) -> None:
    assert subdomain_of(host, "example.com") == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("example.com", True, id="apex"),
        pytest.param("www.example.com", True, id="www"),
        pytest.param("acme.example.com", False, id="subdomain"),
        pytest.param("evilexample.com", False, id="no-dot-boundary"),
        pytest.param("wwwexample.com", False, id="www-no-dot"),
        pytest.param("www.evilexample.com", False, id="www-other-domain"),
        pytest.param("www.www.example.com", False, id="www-www"),
        pytest.param("example.org", False, id="other-domain"),
    ],
)
def test_is_apex(host: str, expected: bool) -> None:
    assert is_apex(host, "example.com") is expected


@pytest.mark.parametrize(
    ("path_info", "expected"),
    [
        pytest.param("/acme", ("acme", ""), id="segment-only"),
        pytest.param("/acme/", ("acme", "/"), id="trailing-slash"),
        pytest.param("/acme/x/y", ("acme", "/x/y"), id="rest"),
        pytest.param("/acme//x", ("acme", "//x"), id="rest-kept-as-is"),
        pytest.param("/a", ("a", ""), id="one-char"),
        pytest.param("/a-1/x", ("a-1", "/x"), id="hyphen-digit"),
        pytest.param("/123", ("123", ""), id="digits"),
        pytest.param("/" + "a" * 63 + "/x", ("a" * 63, "/x"), id="label-63"),
        pytest.param("", None, id="empty"),
        pytest.param("/", None, id="root"),
        pytest.param("//acme/x", None, id="empty-segment"),
        pytest.param("/./acme", None, id="dot"),
        pytest.param("/../x", None, id="dot-dot"),
        pytest.param("/%2e%2e/", None, id="encoded-dot-dot"),
        pytest.param("/ac%6de/x", None, id="percent"),
        pytest.param("/acme\x00/x", None, id="nul"),
        pytest.param("/ACME/x", None, id="upper-case"),
        pytest.param("/Acme", None, id="mixed-case"),
        pytest.param("/-acme/x", None, id="leading-hyphen"),
        pytest.param("/acme-/x", None, id="trailing-hyphen"),
        pytest.param("/" + "a" * 64, None, id="label-64"),
        pytest.param("/" + "a" * 10_000 + "/x", None, id="huge"),
        pytest.param("/caf\xc3\xa9/x", None, id="utf8-as-latin1"),
        pytest.param("/acm\xe9", None, id="invalid-utf8-as-latin1"),
        pytest.param("/acme\u212a", None, id="non-latin1"),
        pytest.param("acme/x", None, id="no-leading-slash"),
        pytest.param("/acme.x", None, id="dot-in-segment"),
        pytest.param("/acme_x", None, id="underscore"),
        pytest.param("/acme\n", None, id="trailing-newline"),
        pytest.param("/acme;x=1", None, id="semicolon"),
    ],
)
def test_first_segment(path_info: str, expected: tuple[str, str] | None) -> None:
    assert first_segment(path_info) == expected


@fuzz
@given(any_text | path_like)
def test_first_segment_never_raises(path_info: str) -> None:
    result = first_segment(path_info)

    if result is not None:
        segment, rest = result
        assert "/" + segment + rest == path_info
        assert rest == "" or rest.startswith("/")
        assert re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", segment)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("acme", id="plain"),
        pytest.param("a", id="one-char"),
        pytest.param("a-1", id="hyphen-digit"),
        pytest.param("a" * 63, id="63-chars"),
    ],
)
def test_parse_slug(value: str) -> None:
    assert parse_slug(value, "X-Tenant header") == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("Acme", id="upper-case"),
        pytest.param("-acme", id="leading-hyphen"),
        pytest.param("acme-", id="trailing-hyphen"),
        pytest.param("ac_me", id="underscore"),
        pytest.param("acme.test", id="dot"),
        pytest.param(" acme", id="space"),
        pytest.param("acme\n", id="newline-after"),
        pytest.param("a" * 64, id="64-chars"),
        pytest.param("acm\xe9", id="non-ascii"),
    ],
)
def test_parse_slug_invalid(value: str) -> None:
    with pytest.raises(InvalidRequest) as exc_info:
        parse_slug(value, "X-Tenant header")

    message = str(exc_info.value)
    assert message.startswith(f"invalid X-Tenant header {value!r}: must be a tenant")
    assert "a-z, 0-9 and '-'" in message
    assert not isinstance(exc_info.value, InvalidHost)


def test_parse_slug_message_truncated() -> None:
    with pytest.raises(InvalidRequest) as exc_info:
        parse_slug("A" * 10_000, "X-Tenant header")

    assert len(str(exc_info.value)) < 300


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(None, None, id="no-raw-uri"),
        pytest.param("/", None, id="origin-root"),
        pytest.param("/acme/x?y=1", None, id="origin"),
        pytest.param("//evil.test/x", None, id="origin-double-slash"),
        pytest.param("/x?u=http://evil.test/", None, id="url-in-query"),
        pytest.param("*", None, id="asterisk"),
        pytest.param("acme.example.com:443", None, id="authority-form"),
        pytest.param("http:/x", None, id="no-authority"),
        pytest.param("http://acme.example.com/x", "acme.example.com", id="absolute"),
        pytest.param("http://acme.example.com", "acme.example.com", id="no-path"),
        pytest.param(
            "HTTPS://Acme.Example.COM:8443/x", "Acme.Example.COM:8443", id="upper"
        ),
        pytest.param("http://acme.example.com?x=/y", "acme.example.com", id="query"),
        pytest.param("http://acme.example.com#f", "acme.example.com", id="fragment"),
        pytest.param("http://[::1]:8080/x", "[::1]:8080", id="ipv6"),
        # Returned as sent: parse_host refuses these with the rule they break.
        pytest.param("http:///x", "", id="empty-authority"),
        pytest.param(
            "http://user@acme.example.com/", "user@acme.example.com", id="userinfo"
        ),
        pytest.param("1http://evil.test/", None, id="scheme-starts-with-digit"),
        pytest.param("ht tp://evil.test/", None, id="scheme-with-space"),
    ],
)
def test_target_authority(target: str | None, expected: str | None) -> None:
    assert target_authority(target) == expected


@fuzz
@given(any_text)
def test_target_authority_never_raises(target: str) -> None:
    authority = target_authority(target)
    assert authority is None or authority in target
