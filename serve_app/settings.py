"""Every `COUNCILS_*` environment variable read in serve_app/ and councils_local/, in one pydantic-settings class.

The deployment's own settings are elsewhere: the config's `args` (actors.models.config.AppConfig) and the live
`user_config` (RuntimeSettings). This class is what the environment of a process says: where Valkey is, the
API tokens (or the files holding them), and the local launcher's ports and directories.

    EnvSettings()             reads os.environ (COUNCILS_VALKEY_URL -> valkey_url, ...)
    EnvSettings.from_env(m)   reads the mapping m only (tests, a child's environment)
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "COUNCILS_"


class EnvSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    # The ingress (serve_app/app.py) and the launcher: the Valkey that holds councils and records.
    valkey_url: str | None = None
    valkey_url_file: str = ""  # or a file holding it (clusters: a mounted secret, out of every environment)
    # API tokens (serve_app/auth.py, the CLI): a value or a file holding it; empty means unset.
    api_token: str = ""
    api_token_file: str = ""
    admin_token: str = ""
    admin_token_file: str = ""
    # The ingress (serve_app/records.py): the key of the Idempotency-Key HMAC, a value or a file holding it.
    idempotency_secret: str = ""
    idempotency_secret_file: str = ""
    # The CLI: the service it talks to.
    url: str = "http://127.0.0.1:8000"
    # The local launcher (`make run`) and the embedded Valkey.
    data_dir: str | None = None
    valkey_port: int = 6389
    valkey_maxmemory: str = "1gb"
    ray_port: int = 6380
    dashboard_port: int = 8265
    metrics_port: int = 8080
    gcs_namespace: str = "councils-local"
    ray_auth: str = "token"
    ray_temp_dir: str | None = None
    # serve_app/ray_start.py: the GCS's Valkey password, handed over by the launcher in the environment only.
    gcs_redis_password: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "EnvSettings":
        """The settings of `environ` (a mapping of variable names), or of os.environ when it is None."""
        if environ is None:
            return cls()
        fields = {k[len(PREFIX):].lower(): v for k, v in environ.items() if k.upper().startswith(PREFIX)}
        return _MappingOnly(**{k: v for k, v in fields.items() if k in cls.model_fields})


class _MappingOnly(EnvSettings):
    """EnvSettings from its keyword arguments alone (not os.environ)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return (init_settings,)


def env_var(field: str) -> str:
    """The variable that sets a field: env_var("api_token") == "COUNCILS_API_TOKEN"."""
    return PREFIX + field.upper()


def valkey_url(env: EnvSettings | None = None) -> str | None:
    """The Valkey URL from COUNCILS_VALKEY_URL or the file COUNCILS_VALKEY_URL_FILE names (its password stays out of
    every process's environment), or None. A file that is set but unreadable or empty raises ValueError naming the
    variable and the path, never the URL."""
    env = env or EnvSettings()
    var, file_var = env_var("valkey_url"), env_var("valkey_url_file")
    if env.valkey_url and env.valkey_url_file:
        raise ValueError(f"set {var} or {file_var}, not both")
    if not env.valkey_url_file:
        return env.valkey_url or None
    try:
        url = Path(env.valkey_url_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file_var}={env.valkey_url_file} cannot be read: {type(exc).__name__}") from None
    if not url:
        raise ValueError(f"{file_var}={env.valkey_url_file} is empty")
    return url
