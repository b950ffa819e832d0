"""The function app: creates the FunctionApp and registers the blueprints, nothing else."""

import azure.functions as func

from shared.entrypoints import api, consent, dashboard, push, queue, timer

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(timer.bp)
app.register_functions(push.bp)
app.register_functions(queue.bp)
app.register_functions(api.bp)
app.register_functions(dashboard.bp)
app.register_functions(consent.bp)
