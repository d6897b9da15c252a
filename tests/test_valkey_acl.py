"""make run's embedded Valkey has two ACL users (issue 23): `councils`, limited to its key prefix and without
dangerous commands, and `gcs` for Ray's GCS; the default user is off. A real valkey-server."""

from __future__ import annotations

import os
import stat

import pytest
import valkey

from councils_local.valkey_server import ValkeyProcess

pytestmark = pytest.mark.valkey


@pytest.fixture
def server(tmp_path):
    s = ValkeyProcess(tmp_path / "v", acl_users="councils:").start()
    yield s
    s.stop()


def test_the_councils_user_reaches_its_keys_and_nothing_dangerous(server):
    c = valkey.Valkey.from_url(server.url, decode_responses=True)
    assert server.url.startswith("redis://councils:")
    assert c.set("councils:x", "1") and c.get("councils:x") == "1"
    assert c.eval("return redis.call('set', KEYS[1], 'v')", 1, "councils:y") == "OK"
    assert int(c.info("memory")["used_memory"]) > 0  # serve_app/valkey_guard.py reads these two
    assert c.config_get("appendfsync") == {"appendfsync": "always"}
    for command in (("SET", "other:x", "1"), ("GET", "ray:anything"), ("FLUSHALL",), ("CONFIG", "SET", "appendonly", "no"),
                    ("KEYS", "*"), ("ACL", "LIST"), ("SHUTDOWN",)):
        with pytest.raises(valkey.exceptions.NoPermissionError):
            c.execute_command(*command)
    with pytest.raises(valkey.exceptions.NoPermissionError):
        c.eval("return redis.call('set', KEYS[1], 'v')", 1, "other:y")
    c.close()


def test_the_gcs_user_reaches_everything_and_the_default_user_is_off(server, tmp_path):
    g = valkey.Valkey(port=server.port, username=server.gcs_username, password=server.gcs_password)
    assert g.set("ray:table", "1") and g.get("ray:table") == b"1"
    g.close()
    with pytest.raises(valkey.AuthenticationError):
        valkey.Valkey(port=server.port, password=server.password).ping()  # AUTH <password>: the default user
    for name in ("password", "gcs-password", "valkey.conf"):
        assert stat.S_IMODE(os.stat(tmp_path / "v" / name).st_mode) == 0o600, name
    cmdline = open(f"/proc/{server.proc.pid}/cmdline", "rb").read().decode()
    assert server.password not in cmdline and server.gcs_password not in cmdline
    assert server.password != server.gcs_password
