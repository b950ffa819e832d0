"""A redeploy after `azd down` recovers the soft-deleted vault instead of failing on its name.

The vault has purge protection, so after `azd down` its name stays taken for 90 days and the same azd
environment computes the same name again. The choice (infra/README.md, "Redeploy after azd down"): the
azd preprovision hook (infra/scripts/pre-provision.sh) sets KEY_VAULT_CREATE_MODE=recover when the vault
of the last deployment is soft-deleted, and `default` otherwise; main.bicep passes it to the vault's
`createMode`. The hook runs here against stand-ins for `az` and `azd` that answer as the real CLIs do
(`az keyvault show-deleted` prints the name or fails with "not found") and record what is set.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.infra.bicep_model import INFRA, MAIN, ROOT, body, decorator, parse, resources

HOOK = INFRA / "scripts" / "pre-provision.sh"


def test_the_vault_create_mode_is_a_parameter_fed_by_the_hook() -> None:
    key_vault = INFRA / "core" / "security" / "key-vault.bicep"
    vault = body(next(iter(resources(key_vault, "Microsoft.KeyVault/vaults").values())))
    assert vault["properties"]["createMode"] == "createMode"
    param = parse(key_vault)["parameters"]["createMode"]
    assert param["default"] == "default"
    assert decorator(param, "allowed") == ["default", "recover"]
    main_param = parse(MAIN)["parameters"]["keyVaultCreateMode"]
    assert main_param["default"] == "default"
    assert body(parse(MAIN)["modules"]["keyVault"])["params"]["createMode"] == "keyVaultCreateMode"
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert given["keyVaultCreateMode"]["value"] == "${KEY_VAULT_CREATE_MODE=default}"
    azure_yaml = (ROOT / "azure.yaml").read_text()
    assert "preprovision:" in azure_yaml and "run: infra/scripts/pre-provision.sh" in azure_yaml


def _stand_ins(tmp_path: Path, deleted_vaults: list[str]) -> Path:
    """`az` answering show-deleted for the given vaults, `azd` recording `env set`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "deleted").write_text("\n".join(deleted_vaults) + "\n")
    az = bin_dir / "az"
    az.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{tmp_path}/az-calls"\n'
        '[ "$1 $2" = "keyvault show-deleted" ] || exit 2\n'
        'name=""; while [ $# -gt 0 ]; do [ "$1" = "--name" ] && name="$2"; shift; done\n'
        f'if grep -qx "$name" "{tmp_path}/deleted"; then echo "$name"; exit 0; fi\n'
        'echo "(DeletedVaultNotFound) Deleted vault $name not found" >&2; exit 3\n'
    )
    azd = bin_dir / "azd"
    azd.write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path}/azd-calls"\n')
    az.chmod(0o755)
    azd.chmod(0o755)
    return bin_dir


def _run_hook(tmp_path: Path, bin_dir: Path, env: dict[str, str], with_az: bool = True) -> str:
    if not with_az:
        (bin_dir / "az").unlink()
    result = subprocess.run(
        ["sh", str(HOOK)],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "KEY_VAULT_CREATE_MODE=" in result.stdout
    calls = tmp_path / "azd-calls"
    return calls.read_text() if calls.exists() else ""


def test_a_soft_deleted_vault_of_the_last_deployment_is_recovered(tmp_path: Path) -> None:
    bin_dir = _stand_ins(tmp_path, ["kv-abc123"])
    set_calls = _run_hook(tmp_path, bin_dir, {"AZURE_KEY_VAULT_NAME": "kv-abc123"})
    assert set_calls == "env set KEY_VAULT_CREATE_MODE recover\n"
    assert "keyvault show-deleted --name kv-abc123" in (tmp_path / "az-calls").read_text()


@pytest.mark.parametrize(
    ("env", "deleted"),
    [
        ({"AZURE_KEY_VAULT_NAME": "kv-abc123"}, []),  # the vault is live: a normal redeploy
        ({"AZURE_KEY_VAULT_NAME": "kv-abc123"}, ["kv-other"]),  # another vault is deleted, not ours
        ({}, ["kv-abc123"]),  # first deployment of this environment: nothing to recover
        ({"AZURE_KEY_VAULT_NAME": "kv-abc123", "KEY_VAULT_CREATE_MODE": "recover"}, []),  # recovered last time
    ],
    ids=["live-vault", "other-vault-deleted", "first-deployment", "back-to-default-after-recovery"],
)
def test_otherwise_the_vault_is_created_normally(tmp_path: Path, env: dict[str, str], deleted: list[str]) -> None:
    bin_dir = _stand_ins(tmp_path, deleted)
    assert _run_hook(tmp_path, bin_dir, env) == "env set KEY_VAULT_CREATE_MODE default\n"


def test_nothing_is_set_when_the_mode_is_already_right(tmp_path: Path) -> None:
    bin_dir = _stand_ins(tmp_path, ["kv-abc123"])
    env = {"AZURE_KEY_VAULT_NAME": "kv-abc123", "KEY_VAULT_CREATE_MODE": "recover"}
    assert _run_hook(tmp_path, bin_dir, env) == ""


def test_without_the_az_cli_the_default_is_kept(tmp_path: Path) -> None:
    bin_dir = _stand_ins(tmp_path, ["kv-abc123"])
    env = {"AZURE_KEY_VAULT_NAME": "kv-abc123"}
    assert _run_hook(tmp_path, bin_dir, env, with_az=False) == "env set KEY_VAULT_CREATE_MODE default\n"
    assert os.access(HOOK, os.X_OK)
