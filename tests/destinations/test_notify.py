"""Notify-only destinations: a human is told where the value is and where it goes, never the value."""

from __future__ import annotations

import logging

import pytest

from shared.destinations import NotifyOnlyDestination
from shared.domain import DestinationConfig
from shared.errors import DestinationRejected, RotationError
from tests.destinations import NEW_SECRET, SECRET_NAME, SECRET_VERSION, assert_no_secret, delivery


async def test_deliver_waits_for_a_human_naming_the_vault_secret_and_version(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RotationError) as caught:
        await NotifyOnlyDestination().deliver(DestinationConfig("helpdesk", "notify-only"), delivery())
    error = caught.value
    assert error.code == "AwaitingAcknowledgement"
    assert SECRET_NAME in error.message and SECRET_VERSION in error.message
    assert "User Management > Azure Active Directory Sync" in error.message and "Save" in error.message
    assert "helpdesk" in error.message
    assert NEW_SECRET not in error.message
    assert_no_secret(error, caplog.records)


async def test_custom_instructions_say_where_to_paste() -> None:
    config = DestinationConfig("portal-by-hand", "notify-only",
                               {"instructions": "the Vircom Portal: Office 365 > Azure Active Directory"})
    with pytest.raises(RotationError) as caught:
        await NotifyOnlyDestination().deliver(config, delivery())
    assert "the Vircom Portal: Office 365 > Azure Active Directory" in caught.value.message
    assert "User Management" not in caught.value.message


async def test_an_invalid_entry_is_rejected_not_awaited() -> None:
    with pytest.raises(DestinationRejected) as caught:
        await NotifyOnlyDestination().deliver(DestinationConfig("x", "notify-only", {"url": "https://a.example"}),
                                              delivery())
    assert caught.value.code == "InvalidDestinationConfig"
