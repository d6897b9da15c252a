"""`make run`'s steps, one module each; launcher.py runs them in order.

options.py      the command line (typer, like the `councils` command), defaults from COUNCILS_*
environment.py  the private data directory, Ray's token mode, the dev model, the nodes' environment
start.py        the start sequence: the Serve config, Valkey, the Ray head and worker node, `serve deploy`
readiness.py    the wait for /readyz, a failed deploy said at once
supervision.py  Ctrl-C and SIGTERM, the supervisor's loop, stopping what was started
"""
