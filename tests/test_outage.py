"""Outage: one line when the registry goes away, one when it is back."""

from __future__ import annotations

import logging

import pytest

from dispatcher.exceptions import RegistryUnavailable
from dispatcher.outage import Outage

log = logging.getLogger("test.outage")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_logged_once_each_way_with_its_length_and_refusals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = Outage(clock, log)
    with caplog.at_level(logging.WARNING, logger="test.outage"):
        outage.succeeded()  # nothing under way: nothing to say
        for _ in range(3):
            outage.failed(RegistryUnavailable("db down"))
            outage.refused()
        clock.now += 12.5
        outage.succeeded()
        outage.succeeded()

    assert [record.getMessage() for record in caplog.records] == [
        "the registry is unavailable: db down; tenants without a built app get"
        " 503 until it is back",
        "the registry is available again after 12.5 s; 3 requests got 503 meanwhile",
    ]


def test_a_new_outage_counts_afresh(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outage = Outage(clock, log)
    outage.failed(RegistryUnavailable("first"))
    outage.refused()
    outage.succeeded()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="test.outage"):
        outage.failed(RegistryUnavailable("second"))
        outage.refused()
        clock.now += 1
        outage.succeeded()

    assert "1 requests got 503" in caplog.records[-1].getMessage()
    assert "second" in caplog.records[0].getMessage()
