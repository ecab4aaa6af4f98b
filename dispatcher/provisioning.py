"""Runtime provisioning: a signup creates a tenant served on its next request.

Usage::

    provisioner = Provisioner(
        registry,
        on_create=[create_tenant_database, seed_demo_data],
        on_delete=[drop_tenant_database],
    )
    tenant = provisioner.create("acme", owner_email="ada@acme.test", subdomain="acme")

The owner and the tenant are written in one transaction, disabled while the
``on_create`` hooks run, so a half-made tenant is never served (its visitors
see the disabled page for those moments). When every hook has succeeded the
tenant is enabled, which evicts the disabled answer in this process at once.
A hook that raises runs the ``on_delete`` hooks (best effort; they must
tolerate a partly prepared tenant) and removes the tenant, then raises
:class:`ProvisioningFailed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from dispatcher.exceptions import DispatcherError
from dispatcher.registry import TenantRegistry
from dispatcher.tenant import Tenant, TenantFields

if TYPE_CHECKING:
    from typing import Unpack

__all__ = ["ProvisioningFailed", "Provisioner", "ProvisioningHook"]

log = logging.getLogger(__name__)

#: A hook may return a newer snapshot of the tenant (one it wrote to the
#: registry, as ``TenantData.create`` records the tenant's server): later hooks,
#: and the undo hooks if one fails, get that snapshot. Anything else it returns
#: (``TenantData.archive`` returns the archive's name) is ignored.
ProvisioningHook = Callable[[Tenant], object]

#: The disabled reason a tenant carries while its hooks run.
PROVISIONING = "provisioning"
DELETING = "deleting"


class ProvisioningFailed(DispatcherError):
    """A provisioning hook raised; the tenant was not created (or not deleted)."""


class Provisioner:
    """Creates and deletes tenants together with the user's hooks.

    :param on_create: called in order with the new tenant, before it is served;
        a hook may return a newer snapshot, which later hooks get.
    :param on_delete: called in reverse order before a tenant is deleted, and
        to undo ``on_create`` when a later hook fails.
    """

    def __init__(
        self,
        registry: TenantRegistry,
        *,
        on_create: Sequence[ProvisioningHook] = (),
        on_delete: Sequence[ProvisioningHook] = (),
    ) -> None:
        if not isinstance(registry, TenantRegistry):
            raise TypeError(
                f"registry must be a TenantRegistry, not {type(registry).__name__}"
            )
        self.registry = registry
        self.on_create = tuple(on_create)
        self.on_delete = tuple(on_delete)
        for name, hooks in (
            ("on_create", self.on_create),
            ("on_delete", self.on_delete),
        ):
            for hook in hooks:
                if not callable(hook):
                    raise TypeError(f"{name} hook {hook!r} is not callable")

    def create(
        self,
        slug: str,
        *,
        allow_existing_owner: bool = True,
        **fields: Unpack[TenantFields],
    ) -> Tenant:
        """Create and prepare a tenant; raises the registry's errors when a
        name is invalid or taken, :class:`ProvisioningFailed` when a hook fails.

        The tenant's keywords are :class:`~dispatcher.tenant.TenantFields`,
        as for :meth:`TenantRegistry.create_tenant`. A public signup passes
        ``allow_existing_owner=False``: an owner e-mail that already has an
        account then raises :class:`~dispatcher.exceptions.OwnerExists` before
        any hook runs.
        """
        tenant = self.registry.create_tenant(
            slug,
            disabled_reason=PROVISIONING if self.on_create else None,
            allow_existing_owner=allow_existing_owner,
            **fields,
        )
        if not self.on_create:
            return tenant
        for hook in self.on_create:
            try:
                newer = hook(tenant)
            except Exception as e:
                log.exception(
                    "provisioning hook %r failed for %r",
                    hook,
                    tenant.slug,
                    extra={"tenant": tenant.slug},
                )
                # A signup that refused existing owners created this account.
                self._undo(tenant, delete_owner=not allow_existing_owner)
                raise ProvisioningFailed(
                    f"preparing tenant {tenant.slug!r} failed ({e}); it was not created"
                ) from e
            if isinstance(newer, Tenant) and newer.slug == tenant.slug:
                tenant = newer
        return self.registry.enable_tenant(tenant.slug)

    def delete(self, slug: str) -> None:
        """Stop serving the tenant, run the ``on_delete`` hooks, delete it.

        If a hook raises, the tenant stays disabled (reason ``deleting``) and
        :class:`ProvisioningFailed` is raised; deleting again retries.
        """
        tenant = self.registry.disable_tenant(slug, DELETING)
        for hook in reversed(self.on_delete):
            try:
                hook(tenant)
            except Exception as e:
                log.exception(
                    "delete hook %r failed for %r",
                    hook,
                    tenant.slug,
                    extra={"tenant": tenant.slug},
                )
                raise ProvisioningFailed(
                    f"cleaning up tenant {tenant.slug!r} failed ({e}); it is "
                    "disabled, not deleted: fix the cause and delete it again"
                ) from e
        self.registry.delete_tenant(tenant.slug)

    def _undo(self, tenant: Tenant, *, delete_owner: bool) -> None:
        for hook in reversed(self.on_delete):
            try:
                hook(tenant)
            except Exception:
                log.exception(
                    "undo hook %r failed for %r",
                    hook,
                    tenant.slug,
                    extra={"tenant": tenant.slug},
                )
        self.registry.delete_tenant(tenant.slug, delete_owner=delete_owner)
