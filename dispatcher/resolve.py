"""Parse the parts of a request that name its tenant, from plain values.

These are pure functions in the style of :mod:`werkzeug.sansio.utils`: the WSGI
layer unpacks ``environ`` and passes strings in, so nothing here does I/O or
touches ``environ``. They run on every request, so the common path costs at
most one precompiled regex match and slower work is kept to explaining a
refusal.

What each is for:

1. :func:`request_host` picks the raw host the way PEP 3333 reconstructs a URL
   (``HTTP_HOST``, else ``SERVER_NAME`` and ``SERVER_PORT``) and normalises it
   with :func:`parse_host`; an absolute-form request target's authority
   (:func:`target_authority`) takes the place of ``HTTP_HOST``. A malformed
   host raises :exc:`InvalidHost`, which is answered with 400 before any
   resolver is asked.
2. On the base domain, :func:`subdomain_of` gives the tenant label of
   ``<label>.<base_domain>``; :func:`is_apex` recognises the base domain itself
   and ``www.<base_domain>``, where (as on the hosts the operator lists for
   path routing) :func:`first_segment` gives the tenant prefix of a path like
   ``/<label>/...``.
3. :func:`parse_slug` checks a slug a request carries, such as a gateway's
   ``X-Tenant`` header.

The resolvers of :mod:`dispatcher.routes` put these together.
"""

from __future__ import annotations

import re
from ipaddress import IPv6Address

from dispatcher.exceptions import InvalidHost, InvalidRequest
from dispatcher.validation import LABEL_PATTERN as _LABEL

__all__ = [
    "configured_host",
    "first_segment",
    "is_apex",
    "normalise_base_domain",
    "parse_host",
    "parse_slug",
    "request_host",
    "subdomain_of",
    "target_authority",
]

# Longer than any valid host ("[" + 45-char IPv6 + "]:65535", or 254-char name
# + port) by a wide margin, and short enough that no regex sees a huge header.
MAX_HOST_LENGTH = 1000

# Room for the repr of a bad value in an error message; the rest is elided so
# a 10 KB header does not become a 10 KB log line.
_SHOW_LENGTH = 80

# re.ASCII stops IGNORECASE from folding a non-ASCII letter such as the Kelvin
# sign U+212A into "k" (as str.lower() would), so only the matched, ASCII-only
# name is ever lower-cased.
_HOST_RE = re.compile(
    rf"""
    (?:
        (?P<name>(?:{_LABEL}\.)*{_LABEL})\.?  # one trailing dot is allowed
    |
        \[(?P<ipv6>[0-9a-f:.]+)\]  # no "%" zone id: not valid in a Host header
    )
    # Leading zeros are refused like werkzeug's host_is_trusted does, so every
    # host accepted here is also accepted by Flask's request.host.
    (?::(?P<port>[1-9][0-9]{{0,4}}))?
    """,
    re.ASCII | re.IGNORECASE | re.VERBOSE,
)

# A slug as a request names it: lower case only, like a path prefix, so each
# tenant has one spelling (and one cache key).
_SLUG_RE = re.compile(_LABEL, re.ASCII)
_SLUG_RULE = "1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"

# Lower case only: paths are case-sensitive and prefixes are stored lower-case.
# The lookahead keeps the rest of PATH_INFO out of the match, so a long path
# costs nothing beyond its first segment.
_SEGMENT_RE = re.compile(rf"/({_LABEL})(?=/|\Z)", re.ASCII)

# Whitespace and C0/C1 controls; \s also catches Unicode spaces such as U+00A0.
_CONTROL_OR_SPACE_RE = re.compile(r"[\x00-\x20\x7f-\x9f\s]")

_NAME_CHAR_RE = re.compile(r"[^a-z0-9.-]", re.ASCII)

_DEFAULT_PORTS = {"http": "80", "https": "443"}

# RFC 3986 scheme, "://", then the authority up to the path, query or fragment.
_ABSOLUTE_FORM_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)", re.ASCII)

# Only these may omit Host; anything else, including a protocol string the
# server made up, is held to the HTTP/1.1 rule so the fallback fails closed.
_HOST_OPTIONAL_PROTOCOLS = frozenset({"HTTP/1.0", "HTTP/0.9"})


def _show(value: str) -> str:
    """Return the repr of ``value``, cut short if it is long."""
    if len(value) <= _SHOW_LENGTH:
        return repr(value)
    return f"{value[:_SHOW_LENGTH]!r}... ({len(value)} characters)"


def request_host(
    http_host: str | None,
    server_name: str | None,
    server_port: str | None,
    url_scheme: str,
    protocol: str,
) -> str:
    """Return the normalised host a request was sent to.

    ``HTTP_HOST`` is used whenever it is present, even when empty (which is
    malformed). Without it, an HTTP/1.0 or HTTP/0.9 request falls back to
    ``SERVER_NAME``, plus ``:SERVER_PORT`` unless that is the default port of
    ``url_scheme``, as PEP 3333 reconstructs a URL.

    :param http_host: ``environ.get("HTTP_HOST")``.
    :param server_name: ``environ.get("SERVER_NAME")``.
    :param server_port: ``environ.get("SERVER_PORT")``.
    :param url_scheme: ``environ["wsgi.url_scheme"]``, ``"http"`` or ``"https"``.
    :param protocol: ``environ["SERVER_PROTOCOL"]``, like ``"HTTP/1.1"``.
    :return: The host as returned by :func:`parse_host`.
    :raise InvalidHost: If the host is missing or malformed.
    """
    if http_host is not None:
        return parse_host(http_host)

    if protocol not in _HOST_OPTIONAL_PROTOCOLS:
        raise InvalidHost(
            "no Host header: a Host header is required for HTTP/1.1 and later"
            f" (request protocol is {_show(protocol)})"
        )

    if not server_name:
        raise InvalidHost(
            "no Host header and no SERVER_NAME: cannot tell which host the"
            " request is for"
        )

    host = server_name
    # An IPv6 SERVER_NAME comes bare; bracket it to match the Host header form.
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"

    if server_port and server_port != _DEFAULT_PORTS.get(url_scheme):
        host = f"{host}:{server_port}"

    return parse_host(host)


def target_authority(request_target: str | None) -> str | None:
    """Return the authority of an absolute-form request target, as sent.

    RFC 9112 section 3.2.2: when the request line carries an absolute URI
    (``GET http://acme.example.com/x HTTP/1.1``, as sent to proxies), its host
    wins over the ``Host`` header. Servers pass the target on as ``RAW_URI``
    (gunicorn, werkzeug) but put only its path in ``PATH_INFO``.

    :param request_target: ``environ.get("RAW_URI")``.
    :return: The authority (``host[:port]``, possibly malformed or empty: pass
        it to :func:`parse_host`), or ``None`` for an origin-form (``/x``),
        asterisk-form or authority-form target, or none at all. Never raises.
    """
    if request_target is None or request_target.startswith("/"):
        return None
    m = _ABSOLUTE_FORM_RE.match(request_target)
    return None if m is None else m[1]


def parse_host(value: str) -> str:
    """Validate a ``Host`` header value and return its normalised host name.

    The result is lower-case, has no port and no trailing dot, so it can be
    compared with stored names directly: ``"Acme.Example.COM.:8080"`` becomes
    ``"acme.example.com"``. An IPv6 literal keeps its brackets:
    ``"[::1]:8080"`` becomes ``"[::1]"``. An IPv4 address is a name whose
    labels happen to be digits and is returned as it is.

    Internationalised names must arrive as punycode (``xn--...``); the label
    rules are those of RFC 1035 host names, so underscores are refused.

    :param value: The raw ``Host`` header value, ``host[:port]``.
    :return: The host name, lower-case, without port or trailing dot.
    :raise InvalidHost: If the value breaks any rule; the message names the
        value and the rule.
    """
    if len(value) > MAX_HOST_LENGTH:
        raise InvalidHost(
            f"invalid Host {_show(value)}: longer than {MAX_HOST_LENGTH} characters"
        )

    m = _HOST_RE.fullmatch(value)
    if m is None:
        raise InvalidHost(f"invalid Host {_show(value)}: {_explain(value)}")

    port = m["port"]
    if port is not None and int(port) > 65535:
        raise InvalidHost(
            f"invalid Host {_show(value)}: port must be between 1 and 65535"
        )

    name = m["name"]
    if name is not None:
        if len(name) > 253:
            raise InvalidHost(
                f"invalid Host {_show(value)}: name is longer than 253 characters"
            )
        return name.lower()

    ipv6 = m["ipv6"]
    try:
        IPv6Address(ipv6)
    except ValueError:
        raise InvalidHost(
            f"invalid Host {_show(value)}: {_show(ipv6)} is not an IPv6 address"
        ) from None
    return f"[{ipv6.lower()}]"


def _explain(value: str) -> str:
    """Return the rule ``value`` breaks, for a value the host regex refused.

    Only called on refusal, so it can afford to look at the value several
    times; the order puts the rules that point at an attack or a broken client
    before the ones about a merely misspelt name.
    """
    if not value:
        return "must not be empty"
    if _CONTROL_OR_SPACE_RE.search(value):
        return "must not contain whitespace or control characters"
    if not value.isascii():
        return "must be ASCII (send internationalised names as punycode, xn--...)"
    if "@" in value:
        return "must not contain userinfo ('@')"
    if "," in value:
        return "must be a single host (',' found)"

    if value.startswith("["):
        inside, bracket, port_part = value[1:].partition("]")
        if not bracket:
            return "IPv6 literal has no closing ']'"
        if port_part and not port_part.startswith(":"):
            return "only ':port' may follow an IPv6 literal"
        rule = _explain_port(port_part[1:]) if port_part else ""
        return rule or f"{_show(inside)} is not an IPv6 address"

    name, colon, port = value.partition(":")
    if ":" in port:
        return "IPv6 literal must be enclosed in '[' and ']'"
    if colon:
        rule = _explain_port(port)
        if rule:
            return rule
    return _explain_name(name)


def _explain_port(port: str) -> str:
    """Return the rule ``port`` breaks, or ``""`` if it is valid."""
    if not port:
        return "port is empty"
    # str.isdigit() would accept non-ASCII digits such as "\u0663".
    if not (port.isascii() and port.isdigit()):
        return "port must be ASCII digits"
    if port.startswith("0") and port.strip("0"):
        return "port must not have leading zeros"
    if not 1 <= int(port) <= 65535:
        return "port must be between 1 and 65535"
    return ""


def _explain_name(name: str) -> str:
    """Return the rule the host name ``name`` breaks."""
    if not name:
        return "host name is empty"
    if "_" in name:
        return "host name must not contain '_'"
    if m := _NAME_CHAR_RE.search(name.lower()):
        return f"host name must only contain a-z, 0-9, '.' and '-' ({m[0]!r} found)"
    stripped = name.removesuffix(".")
    for label in stripped.split("."):
        if not label:
            return "host name has an empty label"
        if len(label) > 63:
            return f"label {_show(label)} is longer than 63 characters"
        if label.startswith("-") or label.endswith("-"):
            return f"label {_show(label)} starts or ends with '-'"
    return "is not a valid host"


def subdomain_of(host: str, base_domain: str) -> str | None:
    """Return the tenant label of ``host`` if it is ``<label>.<base_domain>``.

    Both arguments must already be normalised by :func:`parse_host`. The match
    is on a dot boundary, so ``evilexample.com`` is not under ``example.com``.

    :return: The single label, or ``None`` for the apex, for ``www``, for a
        name more than one label deep, and for a name not under the base
        domain.
    """
    cut = len(host) - len(base_domain) - 1
    # cut < 1 would leave an empty label (the apex, or ".example.com").
    if cut < 1 or host[cut] != "." or not host.endswith(base_domain):
        return None
    label = host[:cut]
    if label == "www" or "." in label:
        return None
    return label


def is_apex(host: str, base_domain: str) -> bool:
    """Return whether ``host`` is ``base_domain`` itself or ``www.<base_domain>``.

    Both arguments must already be normalised by :func:`parse_host`.
    """
    if host == base_domain:
        return True
    return (
        len(host) == len(base_domain) + 4
        and host.startswith("www.")
        and host.endswith(base_domain)
    )


def first_segment(path_info: str) -> tuple[str, str] | None:
    """Split a tenant prefix off the front of ``PATH_INFO``.

    The first segment must be a lower-case DNS label (1-63 of ``a-z0-9-``, no
    leading or trailing ``-``) preceded by exactly one ``/`` and followed by
    ``/`` or the end. Only that segment is inspected; the rest is passed on
    untouched for the tenant app's own routing. ``PATH_INFO`` is raw bytes
    decoded as latin-1, so any non-ASCII character means the segment is not a
    label.

    :param path_info: ``environ["PATH_INFO"]``.
    :return: ``(segment, rest)`` where ``"/" + segment + rest == path_info``,
        such as ``("acme", "/x")`` for ``"/acme/x"`` and ``("acme", "")`` for
        ``"/acme"``; or ``None`` if the first segment is not a label. Never
        raises.
    """
    m = _SEGMENT_RE.match(path_info)
    if m is None:
        return None
    return m[1], path_info[m.end() :]


def parse_slug(value: str, source: str) -> str:
    """Check a tenant slug a request carries and return it.

    :param value: The slug as sent, such as a header's value.
    :param source: Where it came from, for the message (``"X-Tenant header"``).
    :return: ``value``, which is a lower-case DNS label.
    :raise InvalidRequest: If it is not; the message names the value and the
        rule.
    """
    if _SLUG_RE.fullmatch(value) is None:
        raise InvalidRequest(
            f"invalid {source} {_show(value)}: must be a tenant slug ({_SLUG_RULE})"
        )
    return value


def normalise_base_domain(base_domain: str | None) -> str | None:
    """Check a configured base domain; return it as :func:`parse_host` does.

    The dispatcher routes ``<label>.<base_domain>`` by it and the registry
    refuses custom domains under it, so both normalise it here, alike.

    :raise TypeError: If it is neither a string nor None.
    :raise ValueError: If it is not a host name, or has a port or is an IPv6
        address; the message names the value and the rule.
    """
    if base_domain is None:
        return None
    host = configured_host(base_domain, "base_domain")
    if host.startswith("["):
        raise ValueError(f"base_domain {base_domain!r} must be a host name, not IPv6")
    return host


def configured_host(value: object, what: str) -> str:
    """Check a host name from configuration; return it as :func:`parse_host` does.

    Hosts are routed whatever the port, so one given with a port is refused:
    it would promise what is not done.

    :param what: names the setting in messages (``"base_domain"``).
    :raise TypeError: If it is not a string.
    :raise ValueError: If it is not a host name, or has a port.
    """
    if not isinstance(value, str):
        raise TypeError(
            f"{what} {value!r} must be a host name, not {type(value).__name__}"
        )
    try:
        host = parse_host(value)
    except InvalidHost as e:
        raise ValueError(f"{what} {value!r} is not a host name: {e}") from e
    has_port = not value.endswith("]") if host.startswith("[") else ":" in value
    if has_port:
        raise ValueError(
            f"{what} {value!r} must be a host name without a port (every port"
            " of the host is routed alike)"
        )
    return host
