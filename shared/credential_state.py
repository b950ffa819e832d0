"""One credential's state, said the same way by the API (and so the dashboard), the export and the customer report:
a code to filter and colour by, and the words a person reads ("expired, renewed", "within 14 d", "snooze (...)").
Pure: plain data in, plain data out."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from shared.expiry_warnings import Exclusion, covering_certificate, renewed, stage
from shared.inventory import InventoryCredential


class CredentialState(str, Enum):
    """What a credential's state is, first match wins (the order of the members)."""

    EXCLUDED = "excluded"  # an exclusion without an end covers it: listed, greyed, never warned
    SNOOZED = "snoozed"  # a snooze covers it until a date
    MICROSOFT = "microsoft"  # a Microsoft first-party principal's or a managed identity's: Microsoft renews it
    ROTATED = "rotated"  # a registered target's app, the target enabled: the rotator renews it
    PAUSED = "paused"  # a registered target's app whose target is disabled: nobody renews it by itself
    EXPIRED_RENEWED = "expired-renewed"  # ended, and a newer credential of the same object outlives it
    RENEWED = "renewed"  # inside a threshold, and a newer credential of the same object outlives it
    EXPIRED = "expired"
    DUE = "due"  # inside one of the customer's warning thresholds
    HEALTHY = "healthy"  # outside every threshold, or no end


@dataclass(frozen=True)
class Line:
    """One credential with what is known of it now: its days left, the threshold it crossed, the exclusion covering
    it, whether it was renewed, whether its target is disabled."""

    credential: InventoryCredential
    days_left: int | None
    threshold: int | None  # the tightest warning threshold crossed (None: none)
    exclusion: Exclusion | None
    renewed: bool  # a newer credential of the same object, kind and usage outlives the threshold
    paused: bool = False  # a registered target's app whose target is disabled: the rotator does not renew it

    @property
    def rotated(self) -> bool:
        """The rotator renews it: a registered target's app, the target enabled."""
        return self.credential.managed and not self.paused

    @property
    def expired(self) -> bool:
        return self.days_left is not None and self.days_left < 0

    @property
    def needs_customer(self) -> bool:
        """Inside a warning threshold and nobody else will act: not the rotator's (managed and enabled), not
        Microsoft's (first party), not renewed already, not excluded or snoozed by the MSP."""
        c = self.credential
        return (self.threshold is not None and not self.rotated and not c.first_party and not self.renewed
                and self.exclusion is None)

    @property
    def state(self) -> CredentialState:
        if self.exclusion is not None:
            return CredentialState.EXCLUDED if self.exclusion.until is None else CredentialState.SNOOZED
        if self.credential.first_party:
            return CredentialState.MICROSOFT
        if self.rotated:
            return CredentialState.ROTATED
        if self.paused:
            return CredentialState.PAUSED
        if self.renewed:
            return CredentialState.EXPIRED_RENEWED if self.expired else CredentialState.RENEWED
        if self.expired:
            return CredentialState.EXPIRED
        if self.threshold is not None:
            return CredentialState.DUE
        return CredentialState.HEALTHY

    @property
    def words(self) -> str:
        """The state in a few words, the same in the API, the dashboard, the CSV, the HTML report and the PDF."""
        state = self.state
        if self.exclusion is not None:
            return f"{self.exclusion.kind} ({self.exclusion.why})"
        if state is CredentialState.DUE:
            return f"within {self.threshold} d"
        return WORDS[state]


WORDS = {
    CredentialState.MICROSOFT: "Microsoft's",
    CredentialState.ROTATED: "managed by the rotator",
    CredentialState.PAUSED: "rotation disabled",
    CredentialState.EXPIRED_RENEWED: "expired, renewed",
    CredentialState.RENEWED: "renewed",
    CredentialState.EXPIRED: "expired",
    CredentialState.HEALTHY: "ok",
}


def lines_of(credentials: Iterable[InventoryCredential], exclusions: Sequence[Exclusion],
             thresholds: Sequence[int], now: datetime, paused_app_ids: Collection[str] = ()) -> list[Line]:
    """The lines of one tenant's credentials, in the order given (pure). `paused_app_ids`: the apps of disabled
    targets. Renewal is judged among the credentials given: pass each object's credentials together."""
    rows = list(credentials)
    by_object: dict[tuple[str, str], list[InventoryCredential]] = {}
    for c in rows:
        by_object.setdefault((c.object_kind.value, c.object_id), []).append(c)
    lines = []
    for c in rows:
        left = c.days_left(now)
        crossed = stage(left, thresholds)
        siblings = by_object[(c.object_kind.value, c.object_id)]
        lines.append(Line(c, left, crossed, covering_certificate(c, siblings, exclusions, now),
                          crossed is not None and renewed(c, siblings, now, crossed),
                          c.managed and c.app_id in paused_app_ids))
    return lines
