"""scripts/install-pi.sh into a scratch root, and the unit checked by systemd's own tools.

The installer runs for real (a real venv, a real pip install of this checkout, real useradd
--prefix on the scratch root's /etc files); only systemctl is left out, since systemd is not PID
1 here. `systemd-analyze verify` then loads the installed unit inside that root, where
/opt/tracker/bin/tracker exists, as it would on the Pi.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import ROOT

pytestmark = pytest.mark.slow

INSTALLER = ROOT / "scripts" / "install-pi.sh"
UNIT = ROOT / "systemd" / "tracker.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None and not os.environ.get("CI"),
    reason="systemd-analyze is not installed (apt-get install systemd; scripts/test does)",
)


def seed_root(root: Path) -> None:
    """A minimal Debian /etc: dialout and i2c exist, bluetooth does not."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\ni2c:x:998:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\ni2c:*::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o600)


def install(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(INSTALLER), "--root", str(root), "--no-systemctl"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    if os.geteuid() != 0:
        pytest.skip("useradd --prefix needs root (the installer is run as root on the Pi)")
    root = tmp_path_factory.mktemp("root")
    seed_root(root)
    done = install(root)
    assert done.returncode == 0, done.stderr
    return root, done


def members(root: Path, group: str) -> list[str]:
    for line in (root / "etc/group").read_text().splitlines():
        name, _, _, users = line.split(":")
        if name == group:
            return [u for u in users.split(",") if u]
    return []


def test_first_install_writes_every_file(scratch):
    root, done = scratch
    passwd = (root / "etc/passwd").read_text()
    assert re.search(r"^tracker:x:\d+:\d+:.*:/var/lib/tracker:/usr/sbin/nologin$", passwd, re.M)
    assert members(root, "dialout") == ["tracker"]
    assert members(root, "i2c") == ["tracker"]
    assert "bluetooth" not in (root / "etc/group").read_text()  # not created when absent
    assert filecmp.cmp(root / "etc/systemd/system/tracker.service", UNIT, shallow=False)
    rules = root / "etc/udev/rules.d/99-tracker-gps.rules"
    assert filecmp.cmp(rules, ROOT / "config/99-tracker-gps.rules", shallow=False)
    config = root / "etc/tracker/tracker.toml"
    assert config.read_text() == (ROOT / "config/tracker.toml").read_text()
    assert config.stat().st_mode & 0o777 == 0o640
    assert (root / "etc/tracker").stat().st_mode & 0o777 == 0o750
    assert (root / "etc/credstore").stat().st_mode & 0o777 == 0o700
    tracker = root / "opt/tracker/bin/tracker"
    version = subprocess.run([str(tracker), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("tracker "), version.stderr
    doctor = subprocess.run([str(tracker), "doctor", "--help"], capture_output=True, text=True)
    assert doctor.returncode == 0, "the installed CLI has the doctor"
    assert "wrote" in done.stderr and "skipped systemctl" in done.stderr


def test_rerunning_upgrades_in_place_and_keeps_config_and_database(scratch):
    root, _ = scratch
    config = root / "etc/tracker/tracker.toml"
    config.write_text('[gps]\ndevice = "/dev/gps0"\n')
    db = root / "var/lib/tracker/tracker.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"SQLite format 3\0 the rider's queue")
    (root / "etc/systemd/system/tracker.service").write_text("[Service]\nExecStart=/bin/old\n")

    again = install(root)
    assert again.returncode == 0, again.stderr
    assert "keeping" in again.stderr
    assert config.read_text() == '[gps]\ndevice = "/dev/gps0"\n'
    assert db.read_bytes() == b"SQLite format 3\0 the rider's queue"
    assert filecmp.cmp(root / "etc/systemd/system/tracker.service", UNIT, shallow=False)
    assert (root / "etc/passwd").read_text().count("\ntracker:") == 1
    assert members(root, "dialout") == ["tracker"]
    assert (root / "etc/tracker/tracker.toml.example").read_text() == (
        ROOT / "config/tracker.toml"
    ).read_text()


def test_the_installer_refuses_the_real_root_unless_root(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("runs as root here")
    done = subprocess.run([str(INSTALLER), "--no-systemctl"], capture_output=True, text=True)
    assert done.returncode != 0 and "run as root" in done.stderr


def analyze_root(scratch_root: Path) -> Path:
    """systemd-analyze needs systemd's own units (sysinit.target...) inside the root."""
    units = scratch_root / "usr/lib/systemd/system"
    if not units.exists():
        for source in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
            if source.is_dir():
                shutil.copytree(source, units, symlinks=True)
                break
    return scratch_root


@needs_analyze
def test_systemd_analyze_verify_passes_on_the_installed_unit(scratch):
    root, _ = scratch
    assert ANALYZE, "CI must install systemd-analyze"
    analyze_root(root)
    done = subprocess.run(
        [ANALYZE, "verify", f"--root={root}", "tracker.service"], capture_output=True, text=True
    )
    # verify reports unknown keys and bad values as warnings with exit code 0: none allowed.
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


@needs_analyze
def test_systemd_analyze_verify_catches_a_broken_unit(scratch, tmp_path):
    root, _ = scratch
    analyze_root(root)
    broken = root / "etc/systemd/system/tracker-broken.service"
    broken.write_text(UNIT.read_text().replace("/opt/tracker/bin/tracker", "/opt/missing/bin/x"))
    try:
        done = subprocess.run(
            [ANALYZE, "verify", f"--root={root}", "tracker-broken.service"],
            capture_output=True, text=True,
        )  # fmt: skip
    finally:
        broken.unlink()
    assert done.returncode != 0 and "is not executable" in done.stderr


@needs_analyze
def test_security_exposure_is_ok_or_better():
    assert ANALYZE
    done = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True, text=True,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for tracker.service: ([\d.]+) (\w+)", done.stdout)
    assert m, done.stdout + done.stderr
    score, verdict = float(m.group(1)), m.group(2)
    assert verdict in ("SAFE", "OK"), (score, verdict)
    readme = (ROOT / "README.md").read_text()
    assert f"{score:.1f} OK" in readme or f"{score:.1f} SAFE" in readme, (
        f"README shows the measured score {score:.1f} {verdict}"
    )


@pytest.mark.slow
def test_the_checkout_builds_with_the_setuptools_of_a_fresh_debian_venv(tmp_path):
    """The offline path: no build isolation, the venv's own setuptools (65 with Python 3.11's
    ensurepip, 66 in Debian 12's), nothing newer fetched for the build."""
    import subprocess
    import sys

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    old = subprocess.run([str(py), "-c", "import setuptools; print(setuptools.__version__)"],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert int(old.split(".")[0]) < 77, f"this venv's setuptools is {old}: not an old one"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel"], check=True, capture_output=True)  # what Debian ships
    done = subprocess.run([*pip, "--no-build-isolation", "--no-deps", str(ROOT)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (venv / "bin" / "tracker").exists()
    shown = subprocess.run([str(py), "-m", "pip", "show", "pi-live-tracker"],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert "Name: pi-live-tracker" in shown
