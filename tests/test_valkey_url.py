"""The Valkey URL and its secrets, no server: read from COUNCILS_VALKEY_URL_FILE, its password kept out of
every message, TLS clients for rediss://, and handed to Ray's GCS as address, user and password
(docs/security.md#valkey-credentials-and-tls)."""

from __future__ import annotations

import pytest

from serve_app import redact
from tests.valkey_raw import raw

pytestmark = pytest.mark.unit


def test_the_valkey_url_can_come_from_a_file(tmp_path):
    """COUNCILS_VALKEY_URL_FILE (the cluster configs): the URL and its password stay out of every environment; a
    file that is set but unreadable or empty stops the replica, naming the variable, never the URL."""
    from serve_app.settings import EnvSettings, valkey_url

    path = tmp_path / "url"
    path.write_text("redis://:s3cret-pw@valkey:6379/0\n")
    assert valkey_url(EnvSettings.from_env({"COUNCILS_VALKEY_URL_FILE": str(path)})) == "redis://:s3cret-pw@valkey:6379/0"
    assert valkey_url(EnvSettings.from_env({"COUNCILS_VALKEY_URL": "redis://h:1/0"})) == "redis://h:1/0"
    assert valkey_url(EnvSettings.from_env({})) is None
    (tmp_path / "empty").write_text("")
    for environ, needle in [({"COUNCILS_VALKEY_URL_FILE": str(tmp_path / "missing")}, "cannot be read"),
                            ({"COUNCILS_VALKEY_URL_FILE": str(tmp_path / "empty")}, "is empty"),
                            ({"COUNCILS_VALKEY_URL_FILE": str(path), "COUNCILS_VALKEY_URL": "redis://h:1/0"}, "not both")]:
        with pytest.raises(ValueError, match=needle) as info:
            valkey_url(EnvSettings.from_env(environ))
        assert "s3cret-pw" not in str(info.value)


def test_redaction():
    assert redact.redact_url("redis://127.0.0.1:6389/0") == "redis://127.0.0.1:6389/0"
    assert redact.redact_url("rediss://alice:s3cr%40t@valkey:6380/0?ssl_ca_certs=/ca.pem") == \
        "rediss://alice:***@valkey:6380/0?ssl_ca_certs=/ca.pem"
    assert redact.redact_url("redis://:pw123456@h:1/0") == "redis://:***@h:1/0"
    assert redact.redact_url("redis://h:1/0?password=abcdef&db=1") == "redis://h:1/0?password=***&db=1"
    redact.register_url("redis://:p%40ssw0rd@h:1/0")
    assert redact.scrub("auth p@ssw0rd failed (p%40ssw0rd)") == "auth *** failed (***)"


def test_rediss_url_uses_tls():
    import valkey as valkey_sync
    from valkey.asyncio.connection import SSLConnection as AsyncSSLConnection
    from valkey.connection import SSLConnection

    from actors.store import Store

    store = Store("rediss://councils:pw@valkey.example:6380/0?ssl_cert_reqs=required", "councils:")
    assert raw(store).connection_pool.connection_class is AsyncSSLConnection
    sync = valkey_sync.from_url("rediss://councils:pw@valkey.example:6380/0")
    assert sync.connection_pool.connection_class is SSLConnection


def test_launcher_passes_valkey_credentials_and_tls_to_ray():
    from councils_local.ray_nodes import ray_redis_args

    assert ray_redis_args("redis://127.0.0.1:6389/0") == ("127.0.0.1:6389", None, None)
    assert ray_redis_args("rediss://alice:p%40ss@valkey.internal:6380/0") == ("rediss://valkey.internal:6380", "alice", "p@ss")
    assert ray_redis_args("redis://:pw@h") == ("h:6379", None, "pw")
