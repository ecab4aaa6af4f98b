"""The demo SaaS served by ``dispatcher.wsgi`` when no app factory is configured."""

from dispatcher.demo.tenant_app import create_app as create_app

__all__ = ["create_app"]
