"""Every data shape the project exchanges, as pydantic v2 models shared by the actors, the protocol and the
ingress, so a value that validated at the HTTP edge is the same value a council stores in Valkey.

- base.py      the strict base class (unknown fields are errors) and the name patterns
- limits.py    the hard ceilings of the request models, and the input limits in force within them
- councils.py  engine, agent, scoring and council specs; the PUT body; the default councils and their personas
- requests.py  a deliberation request and its constraints
- records.py   the deliberation record and its parts (proposals, versions, checks, rankings, result); completions
- config.py    the Serve application's arguments (AppConfig) and the live settings (RuntimeSettings)

Import each name from its module; this package re-exports nothing.
"""
