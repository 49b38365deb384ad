"""The command line's shape: every command is there and the module commands are wired."""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import time

import requests
from support import ROOT, wait_for

from tracker.cli import MODULE_COMMANDS, build_parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_command_is_there_and_module_commands_call_their_main():
    names = {"run", "status", "activities", "activity", "poi", "export"}
    names |= {n for n, _, _ in MODULE_COMMANDS}
    assert set(subcommands(build_parser())) == names
    for name, module_name, _ in MODULE_COMMANDS:  # wired when it is the command asked for
        sub = subcommands(build_parser(name))[name]
        assert sub.get_default("func") is importlib.import_module(module_name).main


def test_serve_mapmytracks_runs_the_test_server():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker", "serve-mapmytracks", "--port", "0",
         "--user", "rider:pw"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        line = wait_for(proc.stdout.readline, what="the server's first line")
        url = re.search(r"http://127\.0\.0\.1:\d+/api/", line).group(0)
        reply = requests.post(url, data={"request": "get_time"}, auth=("rider", "pw"), timeout=5)
        assert reply.status_code == 200
        server_time = int(re.search(r"<server_time>(\d+)<", reply.text).group(1))
        assert abs(server_time - time.time()) < 60
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_a_reader_that_leaves_ends_the_command_quietly(tmp_path):
    """`tracker status --json | head -n 0`: stdout's pipe is closed before the command writes;
    that is the reader's choice, not an error (exit 0, nothing on stderr)."""
    from tracker.store import open_store

    db = tmp_path / "tracker.db"
    open_store(db).close()
    config = tmp_path / "tracker.toml"
    config.write_text(f'[storage]\npath = "{db}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker", "status", "--json", "-c", str(config)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    proc.stdout.close()  # long before the child has imported anything
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == b""
