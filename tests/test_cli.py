"""The installed ``spakky-outbox`` command with every workspace package installed beside it.

Run as a process, as an operator would: spakky-rabbitmq and both storage
packages are installed in this environment, so these tests check which
plugins the command loads and how it fails.
"""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from spakky.plugins.outbox_sqlalchemy.inbox import create_inbox_table, inbox_table
from spakky.plugins.outbox_sqlalchemy.schema import (
    create_outbox_table,
    drop_outbox_table,
)
from sqlalchemy import create_engine, insert, inspect, select
from sqlalchemy.engine import make_url

COMMAND = str(Path(sys.executable).parent / "spakky-outbox")
SECRET = "hunter2-" + uuid4().hex[:6]
"""A password that must never appear in anything the command prints."""


def spakky_outbox(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the command with only the given ``SPAKKY_*`` variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPAKKY_")}
    return subprocess.run(
        [COMMAND, *argv], env=clean | env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def redis_env(redis_url: str) -> dict[str, str]:
    """Settings of a Redis outbox under a fresh prefix (deleted afterwards: it stays empty)."""
    return {
        "SPAKKY_OUTBOX__STORAGE": "redis",
        "SPAKKY_OUTBOX_REDIS__URL": redis_url,
        "SPAKKY_OUTBOX_REDIS__KEY_PREFIX": "{cli-" + uuid4().hex[:8] + "}",
    }


def test_cli_other_plugins_unconfigured_expect_status_works(redis_env: dict[str, str]) -> None:
    """Half-configured spakky-rabbitmq and unconfigured spakky-sqlalchemy are not loaded (they crashed it with a traceback holding the password)."""
    done = spakky_outbox(
        "status", SPAKKY_RABBITMQ__PASSWORD=SECRET, SPAKKY_RABBITMQ__HOST="broker", **redis_env
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[1] == (
        "pending=0 claimed=0 published=0 abandoned=0 oldest_pending_age=-"
    )


def test_cli_included_plugin_with_bad_settings_expect_one_line_exit_2_without_secret(
    redis_env: dict[str, str],
) -> None:
    """A plugin the operator includes on purpose fails in one line naming its variables, never their secret values."""
    done = spakky_outbox(
        "--include",
        "spakky-data,spakky-domain,spakky-event,spakky-tracing,spakky-outbox,spakky-outbox-redis,spakky-rabbitmq",
        "status",
        SPAKKY_RABBITMQ__PASSWORD=SECRET,
        SPAKKY_RABBITMQ__PORT="not-a-port",
        **redis_env,
    )
    assert done.returncode == 2
    assert SECRET not in done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("spakky-outbox: error: invalid settings (RabbitMQConnectionConfig): ")
    assert "SPAKKY_RABBITMQ__HOST: Field required" in line
    assert "SPAKKY_RABBITMQ__PORT='not-a-port': Input should be a valid integer" in line


def test_cli_two_storages_none_chosen_expect_one_line_exit_2() -> None:
    """With both storage packages installed and none chosen, the command says which variable to set."""
    done = spakky_outbox("status")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "Several outbox storages are installed" in line and "SPAKKY_OUTBOX__STORAGE" in line


def test_cli_sqlite_storage_expect_loaded_with_spakky_sqlalchemy(tmp_path: Path) -> None:
    """Choosing the SQLAlchemy storage loads spakky-sqlalchemy (which it needs) and not Redis or RabbitMQ."""
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    create_outbox_table(engine)
    engine.dispose()
    done = spakky_outbox(
        "status",
        "--json",
        SPAKKY_OUTBOX__STORAGE="sqlalchemy",
        SPAKKY_SQLALCHEMY__CONNECTION_STRING=f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        SPAKKY_RABBITMQ__PASSWORD=SECRET,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert '"pending": 0' in done.stdout


def test_cli_sqlite_unreachable_path_expect_one_line_exit_2(tmp_path: Path) -> None:
    """A SQLite path in a missing directory fails in one line, exit 2."""
    done = spakky_outbox(
        "status",
        SPAKKY_OUTBOX__STORAGE="sqlalchemy",
        SPAKKY_SQLALCHEMY__CONNECTION_STRING=f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'app.db'}",
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("spakky-outbox: error: ") and "unable to open database file" in line


def test_cli_health_unreachable_redis_expect_exit_1_without_password() -> None:
    """``health`` against a Redis that does not answer exits 1 and never prints the URL's password."""
    done = spakky_outbox(
        "health",
        "--json",
        SPAKKY_OUTBOX__STORAGE="redis",
        SPAKKY_OUTBOX_REDIS__URL=f"redis://:{SECRET}@127.0.0.1:1/0",
        SPAKKY_OUTBOX_REDIS__KEY_PREFIX="{cli-health}",
    )
    assert done.returncode == 1, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert '"storage_reachable": false' in done.stdout and '"healthy": false' in done.stdout


def test_cli_status_missing_table_expect_one_line_exit_2_and_nothing_created(tmp_path: Path) -> None:
    """``status`` against a database without the outbox table says how to create it and creates nothing."""
    database = tmp_path / "mistyped.db"
    done = spakky_outbox(
        "status",
        SPAKKY_OUTBOX__STORAGE="sqlalchemy",
        SPAKKY_SQLALCHEMY__CONNECTION_STRING=f"sqlite+aiosqlite:///{database}",
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "The outbox table does not exist" in line and "spakky_outbox_message" in line
    assert "create_outbox_table" in line
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            assert not inspect(connection).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_sqlalchemy_password_in_url_query_expect_never_printed(postgres_url: str, as_json: bool) -> None:
    """A ``?password=`` in the connection string shows neither in the target line (text or JSON) nor in the missing-table error."""
    url = make_url(postgres_url).set(drivername="postgresql+asyncpg").update_query_dict({"password": SECRET})
    table = f"cli_{uuid4().hex[:10]}"
    env = {
        "SPAKKY_OUTBOX__STORAGE": "sqlalchemy",
        "SPAKKY_SQLALCHEMY__CONNECTION_STRING": url.render_as_string(hide_password=False),
        "SPAKKY_OUTBOX_SQLALCHEMY__TABLE_NAME": table,
    }
    flags = ["--json"] if as_json else []
    missing = spakky_outbox("status", *flags, **env)
    assert missing.returncode == 2 and "The outbox table does not exist" in missing.stderr
    engine = create_engine(make_url(postgres_url).set(drivername="postgresql+psycopg"))
    create_outbox_table(engine, table)
    try:
        done = spakky_outbox("status", *flags, **env)
    finally:
        drop_outbox_table(engine, table)
        engine.dispose()
    assert (done.returncode, done.stderr) == (0, "")
    assert f"/test table {table}" in done.stdout
    assert SECRET not in missing.stdout + missing.stderr + done.stdout


@pytest.mark.parametrize("template", ["redis://:{}/x@127.0.0.1:1/0", "rediss//:{}@127.0.0.1:1/0"])
def test_cli_malformed_redis_url_expect_password_never_printed(template: str) -> None:
    """A password with an unencoded ``/``, or a URL missing the ``:`` of its scheme, never shows in the target line."""
    done = spakky_outbox(
        "status",
        SPAKKY_OUTBOX__STORAGE="redis",
        SPAKKY_OUTBOX_REDIS__URL=template.format(SECRET),
        SPAKKY_OUTBOX_REDIS__KEY_PREFIX="{cli-malformed}",
    )
    target = done.stdout.splitlines()[0]
    assert target.startswith("target: redis ") and "***@127.0.0.1:1/0 key prefix {cli-malformed}" in target
    assert SECRET not in done.stdout


@pytest.mark.parametrize(
    ("storage", "variable", "template"),
    [
        ("redis", "SPAKKY_OUTBOX_REDIS__URL", "redis://:{}@127.0.0.1:6x79/0"),
        ("sqlalchemy", "SPAKKY_SQLALCHEMY__CONNECTION_STRING", "postgresql+asyncpg://u:{}@127.0.0.1:5x32/test"),
        ("sqlalchemy", "SPAKKY_SQLALCHEMY__CONNECTION_STRING", "postgresql+asyncpg://u:pw@127.0.0.1:{}/test"),
    ],
)
def test_cli_malformed_url_expect_one_line_naming_setting_exit_2_without_secret(
    storage: str, variable: str, template: str
) -> None:
    """A URL a driver cannot parse (its error quotes the piece it choked on) is one line naming the setting, exit 2, no secret (it was a 136-line traceback, exit 1)."""
    done = spakky_outbox(
        "status",
        SPAKKY_OUTBOX__STORAGE=storage,
        SPAKKY_OUTBOX_REDIS__KEY_PREFIX="{cli-malformed}",
        **{variable: template.format(SECRET)},
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("spakky-outbox: error: ") and variable in line and "percent-encode" in line
    assert SECRET not in done.stdout + done.stderr


def test_cli_sqlalchemy_inbox_status_purge_expect_records_counted_and_swept(postgres_url: str) -> None:
    """``inbox status`` counts a PostgreSQL inbox's records, leases and oldest age, ``inbox purge`` deletes old ones in batches; neither creates a missing table; purge refuses a defaulted inbox table."""
    table = f"cli_inbox_{uuid4().hex[:10]}"
    env = {
        "SPAKKY_OUTBOX__STORAGE": "sqlalchemy",
        "SPAKKY_SQLALCHEMY__CONNECTION_STRING": make_url(postgres_url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False),
        "SPAKKY_OUTBOX_SQLALCHEMY__INBOX_TABLE_NAME": table,
    }
    engine = create_engine(make_url(postgres_url).set(drivername="postgresql+psycopg"))
    inbox = inbox_table(table)
    try:
        for argv in (("inbox", "status"), ("inbox", "purge")):
            missing = spakky_outbox(*argv, **env)
            assert missing.returncode == 2 and "The inbox table does not exist" in missing.stderr, missing.stderr
            assert f"table {table!r}" in missing.stderr and "INBOX_TABLE_NAME" in missing.stderr
        with engine.connect() as connection:
            assert not inspect(connection).has_table(table), "status or purge created the inbox table"
        with engine.begin() as connection:
            create_inbox_table(connection, inbox)  # as the first record does
        empty = spakky_outbox("inbox", "status", **env)
        assert empty.returncode == 0 and f"table {table}" in empty.stdout and "records 0" in empty.stdout, empty.stderr
        with engine.begin() as connection:
            now = datetime.now(UTC)
            connection.execute(
                insert(inbox),
                [{"consumer": "billing", "message_id": f"m{n}", "recorded_at": now - timedelta(days=2 if n < 3 else 0)} for n in range(5)],
            )
            connection.execute(  # a lease-mode record still running
                insert(inbox).values(consumer="mailer", message_id="m0", recorded_at=now, lease_until=now + timedelta(minutes=1), lease_owner="o")
            )
        shown = json.loads(spakky_outbox("inbox", "status", "--json", **env).stdout)
        assert (shown["records"], shown["leased"]) == (6, 1) and shown["oldest_age_seconds"] >= 2 * 86400 - 60
        dry = spakky_outbox("inbox", "purge", "--before", "1d", "--dry-run", **env)
        assert dry.returncode == 0 and "nothing changed" in dry.stdout
        # The inbox table's setting decides, not the outbox table's (which purge once asked for).
        unchosen = {**{k: v for k, v in env.items() if "INBOX_TABLE_NAME" not in k}, "SPAKKY_OUTBOX_SQLALCHEMY__TABLE_NAME": "chosen"}
        refused = spakky_outbox("inbox", "purge", "--before", "1d", **unchosen)
        assert refused.returncode == 2, refused.stdout
        assert "refuses to change an inbox" in refused.stderr and "set SPAKKY_OUTBOX_SQLALCHEMY__INBOX_TABLE_NAME," in refused.stderr
        done = spakky_outbox("inbox", "purge", "--before", "1d", "--batch", "2", **env)
        assert done.returncode == 0, done.stderr
        assert [line.split()[1] for line in done.stdout.splitlines() if line.startswith("purged")] == ["2", "3"]
        with engine.connect() as connection:
            left = sorted((r.consumer, r.message_id) for r in connection.execute(select(inbox)))
        assert left == [("billing", "m3"), ("billing", "m4"), ("mailer", "m0")]
    finally:
        with engine.begin() as connection:
            inbox.drop(connection, checkfirst=True)
        engine.dispose()
