"""The models of the test tenants' apps, at their newest revision.

``tests/tenant_migrations`` is their Alembic environment: ``0001`` creates
``items``, ``0002`` adds ``slug`` and fills it with a raw ``UPDATE``.
"""

from __future__ import annotations

from sqlalchemy import MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    metadata = MetaData()


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200), index=True)
    slug: Mapped[str | None] = mapped_column(String(200))
