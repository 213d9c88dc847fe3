import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_str, redis_url_for_test_worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("", False),
    ],
)
def test_env_bool_reads_common_spellings(raw, expected):
    assert env_bool("X", environ={"X": raw}) is expected


def test_env_bool_refuses_garbage_and_uses_default_when_unset():
    with pytest.raises(ImproperlyConfigured, match="X must be a boolean"):
        env_bool("X", environ={"X": "maybe"})
    assert env_bool("X", True, environ={}) is True


def test_env_int_refuses_non_numbers_and_values_below_minimum():
    assert env_int("N", 5, environ={}) == 5
    assert env_int("N", 5, environ={"N": " 7 "}) == 7
    with pytest.raises(ImproperlyConfigured, match="integer"):
        env_int("N", 5, environ={"N": "seven"})
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env_int("N", 5, minimum=1, environ={"N": "0"})


def test_env_float_list_and_str():
    assert env_float("F", 1.5, environ={"F": "2.5"}) == 2.5
    with pytest.raises(ImproperlyConfigured):
        env_float("F", 1.5, environ={"F": "x"})
    assert env_list("L", environ={"L": "a, b,,c "}) == ["a", "b", "c"]
    assert env_list("L", ["d"], environ={}) == ["d"]
    assert env_str("S", "x", environ={"S": " y "}) == "y"


def test_each_xdist_worker_gets_a_redis_database_of_its_own():
    assert redis_url_for_test_worker("redis://127.0.0.1:6379/1", "") == "redis://127.0.0.1:6379/1"
    assert redis_url_for_test_worker("redis://127.0.0.1:6379/1", "gw0") == "redis://127.0.0.1:6379/1"
    assert redis_url_for_test_worker("redis://127.0.0.1:6379/1", "gw2") == "redis://127.0.0.1:6379/3"
    assert redis_url_for_test_worker("redis://:pw@h:6379", "gw1") == "redis://:pw@h:6379/1"
    assert redis_url_for_test_worker("rediss://h/?db=4&ssl_cert_reqs=none", "gw1") == "rediss://h/5?ssl_cert_reqs=none"
    with pytest.raises(ImproperlyConfigured, match="past Redis's last database"):
        redis_url_for_test_worker("redis://127.0.0.1:6379/15", "gw1")
    with pytest.raises(ImproperlyConfigured, match="unix://"):
        redis_url_for_test_worker("unix:///run/redis.sock", "gw1")


def test_this_worker_uses_its_own_redis_database(settings):
    """Under `make test` (xdist) the settings moved REDIS_URL, and the cache, channel layer and Celery with it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not (settings.REDIS_URL and worker):
        pytest.skip("runs under pytest-xdist with REDIS_URL (make test, CI)")
    assert os.environ["REDIS_URL"] == settings.REDIS_URL  # the processes a test starts inherit it
    assert settings.CACHES["default"]["LOCATION"] == settings.REDIS_URL
    assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] == [settings.REDIS_URL]
    assert settings.CELERY_BROKER_URL == settings.REDIS_URL
    from django.core.cache import cache

    db = cache._cache.get_client(write=True).connection_pool.connection_kwargs["db"]
    assert settings.REDIS_URL.endswith(f"/{db}")


def _start(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS"}}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def test_production_start_stops_without_secret_key():
    result = _start({"DEBUG": "0"})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_start_stops_without_encryption_keys():
    result = _start({"DEBUG": "0", "SECRET_KEY": "x" * 60})
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS is not set" in result.stderr


def test_bad_debug_value_stops_start_up():
    result = _start({"DEBUG": "perhaps"})
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr


def test_development_start_works_with_no_env():
    result = _start({"DEBUG": "1"})
    assert result.returncode == 0, result.stderr


def test_build_time_commands_run_without_secrets():
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS"}}
    result = subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "No changes detected" in result.stdout
