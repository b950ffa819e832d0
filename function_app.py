"""The function app: creates the FunctionApp and registers the blueprints, nothing else."""

import azure.functions as func

from shared.entrypoints import (
    alerts,
    api,
    approval_links,
    approvals,
    consent,
    dashboard,
    fleet,
    onboarding,
    partner_signin,
    push,
    queue,
    reports,
    tickets,
    timer,
)

# ANONYMOUS at the Functions host: App Service Authentication signs callers in and the code checks app roles
# (shared/entrypoints/access.py); a FUNCTION-level route would refuse every signed-in caller without a key.
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(timer.bp)
app.register_functions(push.bp)
app.register_functions(queue.bp)
app.register_functions(api.bp)
app.register_functions(dashboard.bp)
app.register_functions(consent.bp)
app.register_functions(alerts.bp)
app.register_functions(onboarding.bp)
app.register_functions(partner_signin.bp)
app.register_functions(fleet.bp)
app.register_functions(reports.bp)
app.register_functions(approvals.bp)
app.register_functions(approval_links.bp)
app.register_functions(tickets.bp)
