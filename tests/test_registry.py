"""The registry (tracker/backends.py) is the one list of backends and secrets: every backend
module declares its contract, and the shipped unit's LoadCredential= lines and README's tables
of backends and credentials say what the registry says. A drift fails here with the line to
add (scripts/sync-registry writes them all)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

from tracker import backends, config
from tracker.senders.base import Sender
from tracker.senders.settings import SenderSettings

UNIT = Path("systemd/tracker.service")
README = Path("README.md")
SYNC = ROOT / "scripts" / "sync-registry"


def test_every_registered_backend_declares_its_contract():
    for section in backends.REGISTRY:
        m = backends.module(section)
        assert section == m.NAME, f"{m.__name__}: NAME is {m.NAME!r}, registered as {section!r}"
        assert issubclass(m.Settings, SenderSettings), m.__name__
        secret = m.Settings.SECRET
        assert (secret[1] if secret else None) == m.CREDENTIAL, (
            f"{m.__name__}: CREDENTIAL {m.CREDENTIAL!r} is not its Settings.SECRET's {secret!r}"
        )
        assert issubclass(m.SENDER, Sender) and callable(m.probe), m.__name__
        assert callable(getattr(m, "activity_done", print)), m.__name__


def test_each_secret_has_a_credential_of_its_own():
    secrets = backends.secrets()
    names = [s.credential for s in secrets]
    assert len(names) == len(set(names)), names
    assert {s.section for s in secrets} >= {"web", "mapmytracks", "gpsr", "mqtt"}
    for s in secrets:  # the key a secret comes from is a field of its section's settings
        settings = (backends.settings_class(s.section) if s.section in backends.REGISTRY
                    else config.WebConfig)  # fmt: skip
        assert {s.key, f"{s.key}_file"} <= set(settings.__dataclass_fields__), s


# --- what the shipped files say ---------------------------------------------------------------


def unit_drift(root: Path) -> list[str]:
    """What the unit at `root` lacks or has too many of, as lines to add or remove."""
    loaded = [line.split("=", 1)[1].strip() for line in (root / UNIT).read_text().splitlines()
              if line.startswith("LoadCredential=")]  # fmt: skip
    wanted = [s.credential for s in backends.secrets()]
    problems = [f"{UNIT}: add the line LoadCredential={c}" for c in wanted if c not in loaded]
    problems += [f"{UNIT}: remove the line LoadCredential={c} (no section reads it)"
                 for c in loaded if c not in wanted]  # fmt: skip
    problems += [f"{UNIT}: LoadCredential={c} is there {loaded.count(c)} times"
                 for c in sorted(set(loaded)) if loaded.count(c) > 1]  # fmt: skip
    return problems


def table(root: Path, marker: str) -> list[list[str]]:
    """The cells of README's table that follows `marker`, header and separator left out."""
    lines = (root / README).read_text().splitlines()
    assert marker in lines, f"{README}: the line {marker} is gone"
    rows = []
    for line in lines[lines.index(marker) + 1 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().strip("`") for c in line.strip().strip("|").split("|")])
    return rows[2:]


def readme_drift(root: Path) -> list[str]:
    problems = []
    listed = {row[0]: row for row in table(root, "<!-- registry:backends -->")}
    secrets = {s.section: s for s in backends.secrets()}
    for section, name in backends.REGISTRY.items():
        path = name.replace(".", "/") + ".py"
        s = secrets.get(section)
        credential = f"`{s.key}`, `{s.credential}`" if s else "none"
        row = listed.pop(f"[{section}]", None)
        if row is None or row[1] != path or row[2].strip("`") != credential.strip("`"):
            problems.append(f"{README}: the backends table needs the row "
                            f"| `[{section}]` | `{path}` | {credential} | ... |")  # fmt: skip
    problems += [f"{README}: the backends table lists {s}, which is not registered"
                 for s in listed]  # fmt: skip
    rows = {row[0]: row[1] for row in table(root, "<!-- registry:credentials -->")}
    for s in backends.secrets():
        if rows.pop(s.credential, None) != f"[{s.section}] {s.key}":
            problems.append(f"{README}: the credentials table needs the row "
                            f"| `{s.credential}` | `[{s.section}] {s.key}` |")  # fmt: skip
    problems += [f"{README}: the credentials table lists {c}, which no section reads"
                 for c in rows]  # fmt: skip
    return problems


def test_the_unit_loads_every_secret_a_section_may_take_once():
    """A secret the docs recommend as a systemd credential must reach the process under
    systemd (the unit once lacked mqtt-password and web-token)."""
    problems = unit_drift(ROOT)
    assert not problems, "\n".join([*problems, "(or run scripts/sync-registry)"])


def test_readme_lists_every_backend_and_every_credential():
    problems = readme_drift(ROOT)
    assert not problems, "\n".join([*problems, "(or run scripts/sync-registry)"])


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The files the registry writes, in a scratch checkout."""
    for path in (UNIT, README):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    return tmp_path


def sync(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SYNC), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_a_drifted_unit_or_readme_is_named_and_sync_registry_puts_it_back(copy):
    unit = copy / UNIT
    unit.write_text(unit.read_text().replace("LoadCredential=mqtt-password\n", ""))
    readme = copy / README
    readme.write_text(readme.read_text().replace("| `web-token` | `[web] token` |\n", "")
                      .replace("`tracker/senders/gpsr.py`", "`tracker/senders/gps.py`"))
    assert unit_drift(copy) == [f"{UNIT}: add the line LoadCredential=mqtt-password"]
    assert readme_drift(copy) == [
        f"{README}: the backends table needs the row "
        "| `[gpsr]` | `tracker/senders/gpsr.py` | `token`, `gpsr-token` | ... |",
        f"{README}: the credentials table needs the row | `web-token` | `[web] token` |",
    ]

    check = sync(copy, "--check")
    assert check.returncode == 1, check
    assert check.stdout.splitlines() == [
        f"{UNIT}: differs from the registry (scripts/sync-registry rewrites it)",
        f"{README}: differs from the registry (scripts/sync-registry rewrites it)",
    ]
    assert sync(copy).returncode == 0
    for path in (UNIT, README):
        assert (copy / path).read_text() == (ROOT / path).read_text(), path
    assert sync(copy, "--check").returncode == 0


def test_the_shipped_files_are_what_sync_registry_writes():
    done = sync(ROOT, "--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_example_config_names_each_backends_credential():
    """config/tracker.toml is what a rider copies: each backend's example block says which
    systemd credential its secret may come from, and it is the registered one."""
    lines = (ROOT / "config" / "tracker.toml").read_text().splitlines()
    for s in backends.secrets():
        if s.section not in backends.REGISTRY:
            continue  # the page has no example block
        start = lines.index(f"#[{s.section}]")
        block = lines[start : next((i for i in range(start, len(lines)) if not lines[i]),
                                   len(lines))]  # fmt: skip
        named = [line for line in block if f'"{s.credential}"' in line]
        assert named, f"config/tracker.toml [{s.section}]: name the credential {s.credential!r}"


def test_the_page_reads_its_token_from_the_credential_the_registry_lists(tmp_path, monkeypatch):
    """The credential the unit loads for a part that is not a backend is the one it reads."""
    from tracker.web import web_token

    (web,) = [s for s in backends.secrets() if s.section == "web"]
    (tmp_path / web.credential).write_text("page-secret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg = config.parse({"web": {"listen": "0.0.0.0:8080"}})  # needs a token off the loopback
    assert web_token(cfg) == "page-secret"
