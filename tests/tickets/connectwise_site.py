"""One ConnectWise Manage site for the tests: the stand-in's seed and the desk configuration that logs into it."""

from __future__ import annotations

import base64
from typing import Any

COMPANY_ID = "contoso_msp"
PUBLIC_KEY = "pubKEY-a1b2c3d4e5"
PRIVATE_KEY = "privKEY-z9y8x7w6v5u4"
CLIENT_ID = "6b7c1d2e-0f4a-4b5c-9d8e-7f6a5b4c3d2e"
READ_ONLY_PUBLIC, READ_ONLY_PRIVATE = "pubRO-1111", "privRO-2222"
CUSTOMER = "Bäckerei Müller & Söhne GmbH"  # non-ASCII, as many MSP customers' names are
CUSTOMER_ID = "BaeckereiMueller"


def seed(**overrides: Any) -> dict[str, Any]:
    """The `psa_connectwise` seed section: one API member, one read-only member, a board with its statuses."""
    section: dict[str, Any] = {
        "companyId": COMPANY_ID,
        "members": [{"publicKey": PUBLIC_KEY, "privateKey": PRIVATE_KEY, "memberId": "ssr-api"},
                    {"publicKey": READ_ONLY_PUBLIC, "privateKey": READ_ONLY_PRIVATE, "memberId": "viewer",
                     "readOnly": True}],
        "clientIds": [CLIENT_ID],
        "boards": [
            {"name": "Managed Services", "types": ["Alert", "Maintenance"],
             "statuses": [{"name": "New (Automation)", "default": True}, {"name": "In Progress"},
                          {"name": "Resolved", "closed": True}, {"name": "Closed", "closed": True}]},
            {"name": "Help Desk",
             "statuses": [{"name": "New", "default": True}, {"name": "Completed", "closed": True}]},
        ],
        "priorities": [{"name": "Priority 3 - Normal Response", "default": True},
                       {"name": "Priority 1 - Emergency Response"}],
        "companies": [{"identifier": CUSTOMER_ID, "name": CUSTOMER},
                      {"identifier": "株式会社テスト", "name": "株式会社テスト"},
                      {"identifier": "ContosoMSP", "name": "Contoso MSP"}],
    }
    section.update(overrides)
    return section


def authorization(company: str = COMPANY_ID, public: str = PUBLIC_KEY, private: str = PRIVATE_KEY) -> str:
    return "Basic " + base64.b64encode(f"{company}+{public}:{private}".encode()).decode()


def headers(**kwargs: str) -> dict[str, str]:
    """A caller's headers as ConnectWise's developer guide asks: Basic authorization and the clientId."""
    return {"Authorization": authorization(**kwargs), "clientId": CLIENT_ID}


def desk_config(site: str, **overrides: str) -> dict[str, str]:
    """The Key Vault secret's JSON for this site (docs/tickets-connectwise.md)."""
    config = {"site": site, "companyId": COMPANY_ID, "publicKey": PUBLIC_KEY, "privateKey": PRIVATE_KEY,
              "clientId": CLIENT_ID, "board": "Managed Services", "company": "ContosoMSP"}
    config.update(overrides)
    return config


SECRETS = (PUBLIC_KEY, PRIVATE_KEY, CLIENT_ID, authorization().removeprefix("Basic "))
