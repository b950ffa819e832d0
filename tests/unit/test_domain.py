"""The pure core on plain data: assessment, retirement rules, names, lifetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain import (
    Ack,
    Application,
    AssessmentStatus,
    Credential,
    DestinationConfig,
    Policy,
    RotationState,
    Secret,
    Stage,
    Target,
    all_acknowledged,
    assess,
    credential_display_name,
    in_use,
    lifetime_days,
    retirement_plan,
    target_of_secret,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ROTATION = "0123456789abcdef0123456789abcdef"


def cred(key: str, days: float, name: str = "by hand") -> Credential:
    return Credential(key, name, NOW - timedelta(days=300), NOW + timedelta(days=days))


def app(*credentials: Credential) -> Application:
    return Application("obj", "app", "Proofpoint Essentials", credentials)


@pytest.mark.parametrize(
    ("credentials", "status", "days"),
    [
        ((cred("a", 200),), AssessmentStatus.HEALTHY, 200),
        ((cred("a", 31),), AssessmentStatus.HEALTHY, 31),
        ((cred("a", 30),), AssessmentStatus.DUE, 30),
        ((cred("a", 0.5),), AssessmentStatus.DUE, 0),
        ((cred("a", -1),), AssessmentStatus.EXPIRED, -1),
        ((), AssessmentStatus.MISSING, None),
        # The longest-lived live credential is the one taken to be in use.
        ((cred("old", -5), cred("new", 90)), AssessmentStatus.HEALTHY, 90),
        ((cred("a", 10), cred("b", 100)), AssessmentStatus.HEALTHY, 100),
    ],
)
def test_assess(credentials: tuple[Credential, ...], status: AssessmentStatus, days: int | None) -> None:
    result = assess(app(*credentials), NOW, renew_before_days=30)
    assert (result.status, result.days_left) == (status, days)
    assert result.status.needs_rotation is (status in (AssessmentStatus.DUE, AssessmentStatus.EXPIRED,
                                                       AssessmentStatus.MISSING))


def test_the_credential_we_delivered_is_in_use_even_if_another_lives_longer() -> None:
    ours, other = cred("ours", 20), cred("other", 500)
    assert in_use((ours, other), NOW, known_key_id="ours") == ours
    assert assess(app(ours, other), NOW, 30, known_key_id="ours").status is AssessmentStatus.DUE


def test_rotation_id_round_trips_through_the_display_name() -> None:
    c = Credential("k", credential_display_name(ROTATION), None, NOW)
    assert c.rotation_id == ROTATION
    assert Credential("k", "Proofpoint sync", None, NOW).rotation_id is None


def test_lifetime_is_capped_at_two_years() -> None:
    assert lifetime_days(Policy(), 180) == 180
    assert lifetime_days(Policy(lifetime_days=90), 180) == 90
    assert lifetime_days(Policy(lifetime_days=5000), 180) == 730


def test_secret_names_map_back_to_their_target() -> None:
    target = Target("C0A70000-0000-4000-8000-00000000C001", "a1b2c3d4-0000-4000-8000-00000000c0a1")
    assert target_of_secret(target.secret_name) == (target.tenant_id.lower(), target.app_id)
    assert target_of_secret("proofpoint-api-account") is None


def test_a_secret_never_shows_its_value() -> None:
    secret = Secret("abc8Q~value")
    assert "value" not in repr(secret) and "value" not in str(secret) and "value" not in f"{secret}"
    assert secret.reveal() == "abc8Q~value" and secret == Secret("abc8Q~value")


def test_all_acknowledged_needs_every_destination_on_the_new_key() -> None:
    dests = (DestinationConfig("proofpoint", "proofpoint"), DestinationConfig("portal", "http"))
    state = RotationState(stage=Stage.VERIFIED, new_key_id="new", acks={"proofpoint": Ack("new", NOW)})
    target = Target("t", "a", destinations=dests, state=state)
    assert not all_acknowledged(target)
    target = target.with_state(acks={**state.acks, "portal": Ack("old", NOW)})
    assert not all_acknowledged(target), "an acknowledgement of the old key does not count"
    target = target.with_state(acks={**state.acks, "portal": Ack("new", NOW)})
    assert all_acknowledged(target)


class TestRetirement:
    def plan(self, state: RotationState, *credentials: Credential, others: bool = False) -> list[tuple[str, str]]:
        removals, _ = retirement_plan(credentials, state, NOW, remove_other_expired=others)
        return [(r.key_id, r.reason) for r in removals]

    def test_superseded_only_after_the_grace_period(self) -> None:
        credentials = (cred("old", 5), cred("new", 180, credential_display_name(ROTATION)))
        waiting = RotationState(current_key_id="new", superseded=("old",), retire_after=NOW + timedelta(hours=1))
        assert self.plan(waiting, *credentials) == []
        due = RotationState(current_key_id="new", superseded=("old",), retire_after=NOW - timedelta(seconds=1))
        assert self.plan(due, *credentials) == [("old", "superseded")]

    def test_superseded_waits_for_the_destinations_own_sync_but_expired_ones_still_go(self) -> None:
        mine = credential_display_name(ROTATION)
        credentials = (cred("old", 5), cred("older", -1, mine), cred("new", 180, mine))
        state = RotationState(current_key_id="new", superseded=("old",), retire_after=NOW - timedelta(days=2))
        removals, _ = retirement_plan(credentials, state, NOW, remove_other_expired=False, sync_proven=False)
        assert [(r.key_id, r.reason) for r in removals] == [("older", "expired")]
        removals, _ = retirement_plan(credentials, state, NOW, remove_other_expired=False, sync_proven=True)
        assert [(r.key_id, r.reason) for r in removals] == [("old", "superseded"), ("older", "expired")]

    def test_never_the_credential_in_use_or_being_rolled_out(self) -> None:
        state = RotationState(current_key_id="cur", new_key_id="new", superseded=("cur", "new"),
                              retire_after=NOW - timedelta(days=1), stage=Stage.VERIFIED)
        assert self.plan(state, cred("cur", -3, credential_display_name(ROTATION)), cred("new", 100)) == []

    def test_expired_rotator_credentials_go_others_only_when_configured(self) -> None:
        state = RotationState(current_key_id="cur")
        mine = cred("mine", -1, credential_display_name(ROTATION))
        theirs = cred("theirs", -1)
        assert self.plan(state, cred("cur", 100), mine, theirs) == [("mine", "expired")]
        assert self.plan(state, cred("cur", 100), mine, theirs, others=True) == [
            ("mine", "expired"), ("theirs", "expired")]

    def test_other_live_credentials_are_reported_not_removed(self) -> None:
        state = RotationState(current_key_id="cur")
        removals, others = retirement_plan((cred("cur", 100), cred("someone-elses", 50)), state, NOW, True)
        assert removals == [] and [c.key_id for c in others] == ["someone-elses"]

    def test_before_any_rotation_the_longest_lived_credential_is_in_use_and_kept(self) -> None:
        state = RotationState()
        removals, others = retirement_plan((cred("sync", -1), cred("spare", -2)), state, NOW, True)
        assert [r.key_id for r in removals] == ["spare"] and others == []
