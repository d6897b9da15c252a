"""Who may reach Valkey, against a real valkey-server. make run's embedded Valkey has two ACL users (issue 23):
`councils`, limited to its key prefix and without dangerous commands, and `gcs` for Ray's GCS; the default user is
off; its password is generated once and kept off its command line, with protected mode, maxmemory (noeviction) and
appendfsync always. The store and the council's sync client connect with a password or as an ACL user, and a
wrong password is named nowhere."""

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


# -- the embedded Valkey ----------------------------------------------------------------------------------
def test_embedded_valkey_password_protected_mode_maxmemory_nothing_on_its_command_line(tmp_path):
    import valkey

    from councils_local.valkey_server import ValkeyProcess

    server = ValkeyProcess(tmp_path / "v", maxmemory="64mb").start()
    try:
        password = (tmp_path / "v" / "password").read_text().strip()
        assert server.password == password and len(password) >= 32
        for name in ("password", "valkey.conf"):
            assert stat.S_IMODE(os.stat(tmp_path / "v" / name).st_mode) == 0o600, name
        assert stat.S_IMODE(os.stat(tmp_path / "v").st_mode) == 0o700
        cmdline = (open(f"/proc/{server.proc.pid}/cmdline", "rb").read()).decode()
        assert password not in cmdline
        with pytest.raises(valkey.AuthenticationError):
            valkey.Valkey(port=server.port).ping()
        client = valkey.Valkey.from_url(server.url, decode_responses=True)
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert int(client.config_get("maxmemory")["maxmemory"]) == 64 * 1024 * 1024
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        client.close()
    finally:
        server.stop()
    again = ValkeyProcess(tmp_path / "v").start()  # a restart keeps the password (and so the data) reachable
    try:
        assert again.password == password
    finally:
        again.stop()


# -- the store and the council's client through a password or an ACL user --------------------------------
async def test_store_with_password_and_acl_user(tmp_path):
    import valkey as valkey_sync

    from actors.store import Store
    from councils_local.valkey_server import ValkeyProcess

    server = ValkeyProcess(tmp_path / "valkey", password="pw-0123456789").start()
    try:
        admin = valkey_sync.Valkey.from_url(server.url, decode_responses=True)
        admin.execute_command("ACL", "SETUSER", "councils", "on", ">user-pw-987654", "~councils:*", "+@all")
        admin.close()
        user_url = f"redis://councils:user-pw-987654@127.0.0.1:{server.port}/0"
        for url in (server.url, user_url):
            store = Store(url, "councils:")
            try:
                assert await store.ping()
                await store.bump("probe")
                assert (await store.stats())["probe"] >= 1
            finally:
                await store.close()
            # The council actor's constructor reads with the sync client from the same URL.
            sync = valkey_sync.from_url(url, decode_responses=True)
            assert sync.ping()
            sync.close()
        wrong = Store(f"redis://councils:wrong@127.0.0.1:{server.port}/0", "councils:")
        with pytest.raises(Exception) as exc:
            await wrong.ping()
        await wrong.close()
        assert "wrong" not in str(exc.value)
    finally:
        server.stop()
