"""The local Functions host (test equipment, like `sandbox/`; never deployed: `.funcignore` leaves it out).

`devhost.host` serves the function app's HTTP functions as the Functions host does, with each function's `authLevel`
(`devhost.keys`) and App Service Authentication in front (`devhost.easyauth`, from `infra/app/easy-auth.json`);
`devhost.queues` runs its queue functions as the host's queue trigger does; `devhost.app` indexes the real app once.
"""
