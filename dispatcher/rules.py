"""The rules a registry applies to a tenant's names before it stores them.

Usage::

    rules = TenantRules(base_domain="example.com")
    spec = rules.new_tenant("ACME", owner_email="Ada@Acme.test", subdomain="Acme")
    spec.subdomain  # 'acme'
    rules.domain("shop.example.com")  # InvalidName: under the base domain
    check_data_server("eu-west")  # 'eu-west'; "EU" raises InvalidName

Pure, like :mod:`dispatcher.validation`, whose functions it applies with one
deployment's settings: which labels are reserved, which base domain custom
domains must stay out of, how many custom domains a tenant may have. A
:class:`~dispatcher.registry.TenantRegistry` holds one and checks every name
it writes with it.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from dispatcher.exceptions import InvalidName, TooManyDomains
from dispatcher.resolve import normalise_base_domain
from dispatcher.tenant import NewTenant, TenantFields, freeze
from dispatcher.validation import (
    DEFAULT_RESERVED,
    check_config,
    normalise_domain,
    normalise_email,
    normalise_label,
    normalise_owner_name,
    shown,
)

if TYPE_CHECKING:
    from typing import Unpack

__all__ = [
    "DATA_SERVER_PATTERN",
    "DEFAULT_MAX_DOMAINS",
    "TenantRules",
    "check_data_server",
]

#: Custom domains one tenant may have: every lookup returns them all.
DEFAULT_MAX_DOMAINS = 100
#: A data server's name: a configuration key, shown in logs and in
#: ``tenantctl`` output, that fits ``tenants.data_server`` (63 characters).
DATA_SERVER_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
_DATA_SERVER = re.compile(DATA_SERVER_PATTERN)

_FIELDS = TenantFields.__required_keys__ | TenantFields.__optional_keys__


class TenantRules:
    """One deployment's rules for tenant names.

    :param reserved: labels no tenant may use as subdomain or path prefix.
    :param base_domain: the dispatcher's base domain (tenants are served as
        ``<subdomain>.<base_domain>``); a custom domain equal to it or under it
        is refused, so it can never take over another tenant's subdomain or a
        reserved one. None: no such check (the dispatcher routes no subdomains).
    :param max_domains: how many custom domains one tenant may have; a lookup
        reads all of a tenant's domains, so this bounds its cost.
    """

    __slots__ = ("base_domain", "max_domains", "reserved")

    def __init__(
        self,
        *,
        reserved: Collection[str] = DEFAULT_RESERVED,
        base_domain: str | None = None,
        max_domains: int = DEFAULT_MAX_DOMAINS,
    ) -> None:
        if isinstance(reserved, str):
            raise TypeError("reserved must be a collection of labels, not a string")
        self.reserved = frozenset(label.lower() for label in reserved)
        self.base_domain = normalise_base_domain(base_domain)
        self.max_domains = _check_max_domains(max_domains)

    def __repr__(self) -> str:
        return (
            f"TenantRules(base_domain={self.base_domain!r}, "
            f"max_domains={self.max_domains}, {len(self.reserved)} reserved labels)"
        )

    def new_tenant(self, slug: str, **fields: Unpack[TenantFields]) -> NewTenant:
        """Validate and normalise a tenant to create; raises ``InvalidName``,
        ``InvalidConfig`` or ``TooManyDomains``."""
        _check_fields(fields)
        domains = fields.get("domains", ())
        if isinstance(domains, str):
            raise TypeError("domains must be a collection of host names, not a string")
        hosts = tuple(dict.fromkeys(self.domain(host) for host in domains))
        slug = normalise_label(slug, what="slug")
        self.check_domain_count(slug, len(hosts))
        return NewTenant(
            slug=slug,
            owner_email=normalise_email(fields["owner_email"]),
            owner_name=normalise_owner_name(fields.get("owner_name")),
            subdomain=self.label(fields.get("subdomain"), "subdomain"),
            path_prefix=self.label(fields.get("path_prefix"), "path prefix"),
            domains=hosts,
            config=freeze(check_config(fields.get("config") or {})),
            data_server=check_data_server(fields.get("data_server")),
        )

    def label(self, value: str | None, what: str) -> str | None:
        """A subdomain or path prefix, normalised; None stays None."""
        if value is None:
            return None
        return normalise_label(value, what=what, reserved=self.reserved)

    def domain(self, host: str) -> str:
        """A custom domain, normalised and outside the base domain."""
        host = normalise_domain(host)
        self.check_outside_base(host)
        return host

    def check_outside_base(self, host: str) -> None:
        """Refuse a custom domain that would shadow ``<label>.<base_domain>``."""
        base = self.base_domain
        if base is None:
            return
        if host == base:
            raise InvalidName(
                f"host name {host!r} is the base domain {base!r}; "
                "a custom domain must lie outside it"
            )
        if host.endswith("." + base):
            raise InvalidName(
                f"host name {host!r} is under the base domain {base!r}; "
                "use a subdomain instead"
            )

    def check_domain_count(self, slug: str, count: int) -> None:
        """Refuse ``count`` custom domains for tenant ``slug`` if over the limit."""
        if count > self.max_domains:
            raise TooManyDomains(
                f"tenant {slug!r} would have {count} custom domains; the limit "
                f"is {self.max_domains} (TenantRegistry's max_domains)"
            )


def check_data_server(value: Any) -> str | None:
    """A data server's name, as given, if it matches :data:`DATA_SERVER_PATTERN`;
    None stays None. Raises ``InvalidName``.

    Not normalised: it names a key of the deployment's configuration, which
    is spelt one way. Whether that server is configured is for ``TenantData``
    to check; the registry does not know the configuration.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidName(f"data server must be a string, not {type(value).__name__}")
    # fullmatch: re.match's "$" would also accept a trailing line break.
    if not _DATA_SERVER.fullmatch(value):
        raise InvalidName(
            f"data server {shown(value)} must match {DATA_SERVER_PATTERN}: a"
            " lower-case letter, then up to 62 of a-z, 0-9, '_' and '-'"
        )
    return value


def _check_fields(fields: TenantFields) -> None:
    # ``**fields`` takes any keyword: refuse a misspelt one as a signature would.
    unknown = fields.keys() - _FIELDS
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {', '.join(map(repr, sorted(unknown)))};"
            f" a tenant has {', '.join(sorted(_FIELDS))}"
        )
    if "owner_email" not in fields:
        raise TypeError("missing required keyword argument 'owner_email'")


def _check_max_domains(max_domains: int) -> int:
    if not isinstance(max_domains, int) or isinstance(max_domains, bool):
        raise TypeError(
            f"max_domains must be an integer, not {type(max_domains).__name__}"
        )
    if max_domains < 1:
        raise ValueError(f"max_domains must be at least 1, not {max_domains}")
    return max_domains
