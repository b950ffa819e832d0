"""The sync-secret rotator: domain, services, adapters and entry points."""
