"""The HTTP routes, one thin module per resource over the service (serve_app/service.py):

    health.py        /healthz, /readyz
    councils.py      /v1/councils, /v1/councils/{role}, /v1/councils/{role}/agents[/{agent_id}]
    deliberations.py /v1/deliberations, /v1/deliberations/{id}, /v1/orchestrate
    events.py        /v1/deliberations/{id}/events (Server-Sent Events)
    status.py        /v1/status
    openai.py        /v1/models, /v1/chat/completions (serve_app/openai_compat.py)
    ui.py            /ui (the council viewer's static files, serve_app/ui/), /v1/whoami (the caller's scope)

serve_app/api.py mounts them (its `ROUTERS`) on the FastAPI app; deps.py holds what they share.
"""
