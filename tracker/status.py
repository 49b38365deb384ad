"""`tracker status`: what the unit is doing, read from the store by any process.

Everything comes from the database, opened read-only: the stored data itself, and the live
counters the recorder writes every few seconds (GPS state, rejected sentences, storage errors).
So status works while the daemon runs, as another user who may only read the database, and
also after the daemon has stopped (then it says so).

While the storage fails the daemon cannot update its row: it then writes the same record to a
status file (tracker/runtime.py, in /run/tracker), which status reads when the row is stale. And
status looks at the file system itself, so that a read-only or full one is named even with no
daemon running.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

from tracker.config import Config
from tracker.fix import QUALITY_NAMES
from tracker.runtime import (
    DAEMON_KEY,
    BackendStatus,
    DaemonStatus,
    InputStatus,
    backend_key,
    read_status_file,
)
from tracker.store import Activity, Store
from tracker.store.control import RUNTIME_EVERY_S
from tracker.store.db import file_system
from tracker.words import duration, plural


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # running as another user (the service account)
        return True
    return True


def _backends(store: Store) -> dict[str, dict[str, Any]]:
    """Per backend: its sender's runtime row `backend:<name>` (state, last error, retry time,
    ...) with the backlog and the quarantined count from the store. Never a secret."""
    pending, quarantined, held = store.pending(), store.quarantined(), store.held_back()
    out: dict[str, dict[str, Any]] = {}
    for name in store.backends():
        row, updated = store.get_runtime(backend_key(name)) or ({}, None)
        # Typed (tracker/runtime.py): only the record's fields, none of them a secret.
        clean = BackendStatus.from_json(row).to_json()
        for key in ("last_error_at", "last_success_at", "next_retry_at"):
            if isinstance(clean.get(key), int | float):
                clean[key] = _iso(clean[key])
        out[name] = {
            **clean,
            "backlog": pending.get(name, 0),
            "quarantined": quarantined.get(name, 0),
            "held_back": held.get(name, 0),  # older than its `history`: kept, never sent
            **_gap(store.gap(name)),
            "updated": _iso(updated),
        }
    return out


def _gap(gap: dict[str, float | None]) -> dict[str, Any]:
    """The server's view against the unit's, in GPS time: `server_newest` (ISO), `behind_s`
    (from the newest fix the server holds to the newest the unit has for it) and `backlog_s`
    (the span of GPS time still to send: the history a server that took the present first
    is still filling in)."""
    held, oldest, newest = gap["server_newest"], gap["oldest_pending"], gap["newest_pending"]
    backlog = 0.0 if newest is None or oldest is None else newest - oldest
    if newest is None:
        behind = 0.0
    elif held is None:
        behind = backlog
    else:
        behind = max(0.0, newest - held)
    return {
        "server_newest": _iso(held),
        "behind_s": round(behind, 1),
        "backlog_s": round(backlog, 1),
        "delivery": delivery_words(newest is not None, behind, backlog),
    }


CATCHING_UP_S = 60.0  # behind by more than this is catching up, not a live send's own lag


def delivery_words(pending: bool, behind_s: float, backlog_s: float = 0.0) -> str:
    """What the server shows against the unit, as the page and `tracker status` say it."""
    if not pending:
        return "up to date"
    if behind_s >= CATCHING_UP_S:
        return f"catching up ({duration(behind_s)} behind)"
    if backlog_s >= CATCHING_UP_S:
        return f"live, filling in {duration(backlog_s)} of history"
    return f"live ({duration(behind_s)} behind)"


def _inputs(runtime: DaemonStatus) -> list[dict[str, Any]]:
    """Each `[[inputs]]` entry's row (tracker/runtime.py InputStatus), times as ISO strings."""
    out = []
    for raw in runtime.inputs:
        row = InputStatus.from_json(raw).to_json()
        last = row.get("last_seen")
        row["last_seen"] = _iso(last) if isinstance(last, int | float) else None
        out.append(row)
    return out


def daemon_row(store: Store) -> tuple[dict[str, Any], float | None, DaemonStatus, bool]:
    """The daemon's runtime row: (raw row, when it was written, typed, whether the daemon is
    running now: it says so, wrote recently, and its pid is alive). Also doctor's, to tell the
    running daemon holding a port from another program."""
    row, updated = store.get_runtime(DAEMON_KEY) or ({}, None)
    runtime = DaemonStatus.from_json(row)
    if _running(runtime, updated):
        return row, updated, runtime, True
    # The storage may be failing: the daemon then says how in its status file.
    found = read_status_file(store.path)
    if found is not None and (updated is None or found[1] > updated):
        runtime, updated = found
        return runtime.to_json(), updated, runtime, _running(runtime, updated)
    return row, updated, runtime, False


def _running(runtime: DaemonStatus, updated: float | None) -> bool:
    fresh = updated is not None and time.time() - updated < 3 * RUNTIME_EVERY_S + 5
    return runtime.running and fresh and _alive(runtime.pid or 0)


def _storage(recorder: dict[str, Any], running: bool, path: Any) -> dict[str, Any]:
    """The recorder's storage counters with `state`: the running daemon's word (ok, read-only,
    full, corrupt, error), else what the file system says now."""
    fs = file_system(path)
    state = recorder.get("storage_state") if running else None
    if not state:
        state = fs if fs in ("read-only", "full") else ("ok" if running else "")
    return {**recorder, "state": state, "file_system": fs}


def _instruments(store: Store, current: Activity | None) -> dict[str, Any]:
    """The newest reading of each instrument kind (depth, wind...) in the current activity:
    `{"activity": id, "readings": [...]}` (rides.instruments_json); without a current
    activity, or one without readings, no readings. The status page shows the newest
    activity's instead when none runs (web.py)."""
    if current is None:
        return {"activity": None, "readings": []}
    from tracker import rides

    readings = rides.instruments_json(rides.latest_instruments(store, current))
    return {"activity": current.id, "readings": readings}


def collect(store: Store, cfg: Config) -> dict[str, Any]:
    """The status as a JSON-ready dict."""
    row, updated, runtime, running = daemon_row(store)
    current = store.current_activity()
    last = store.last_fix()
    # A daemon that never ran here has written no row: no GPS line rather than an empty one.
    gps = runtime.gps.to_json() if "gps" in row else {}
    recorder = runtime.recorder.to_json() if "recorder" in row else {}
    counts = store.fix_counts()
    lifecycle = runtime.lifecycle.to_json()
    return {
        "fixes": counts["total"],
        # Stored but never sent: outside any activity (parked before a ride, after its end),
        # and paused fixes kept on the unit (paused_points).
        "fixes_outside": counts["outside"],
        "fixes_kept_local": counts["local"],
        "pending": store.pending(),
        "quarantined": store.quarantined(),
        "backends": _backends(store),
        "activity": None
        if current is None
        else {
            "id": current.id,
            "title": current.title,
            "type": current.type,
            "started": _iso(current.started_at),
            "state": lifecycle.get("state") if running else None,
        },
        "lifecycle": lifecycle if running else {},
        "last_fix": None
        if last is None
        else {
            "time": _iso(last.time),
            "lat": last.lat,
            "lon": last.lon,
            "alt": last.alt,
            "speed": last.speed,
            "quality": last.quality,
            "satellites": last.sats,
            "hdop": last.hdop,
        },
        "rejected": {
            "total": gps.get("rejected", 0),
            "by_reason": gps.get("rejected_by", {}),
        },
        "database": {
            "path": str(cfg.storage.path),
            "size_bytes": store.size_bytes(),
            "max_mb": cfg.storage.max_mb,
        },
        "daemon": {
            "running": running,
            "pid": runtime.pid,
            "started": _iso(runtime.started),
            "updated": _iso(updated),
        },
        "gps": {k: v for k, v in gps.items() if k not in ("rejected", "rejected_by")},
        "sensors": runtime.sensors,
        "inputs": _inputs(runtime),
        # Off ({}) without [share], and when the daemon never ran with it.
        "share": runtime.share.to_json() if runtime.share.listen else {},
        "instruments": _instruments(store, current),
        "storage": {**_storage(recorder, running, store.path), **store.counters()},
    }


def report(cfg: Config) -> dict[str, Any]:
    """The status of the configured database, as `tracker status` shows it: collect(), or
    unopened() when the database cannot even be opened for reading."""
    from tracker.store import StoreError, open_store

    try:
        store = open_store(cfg.storage.path, readonly=True)
    except StoreError as e:
        return unopened(cfg, e)
    try:
        return collect(store, cfg)
    finally:
        store.close()


def unopened(cfg: Config, error: Exception) -> dict[str, Any]:
    """The status when opening the database for reading failed with `error` (a full file
    system where no -shm can be made, I/O errors): collect_unopened() as long as a database or
    a daemon's status file is there to speak of; with neither, `error` is raised again."""
    if not cfg.storage.path.exists() and not daemon_wrote(cfg):
        raise error
    return collect_unopened(cfg, str(error))


def daemon_wrote(cfg: Config) -> bool:
    """Whether a daemon left a status file for this database (tracker/runtime.py)."""
    return read_status_file(cfg.storage.path) is not None


def collect_unopened(cfg: Config, error: str) -> dict[str, Any]:
    """The status when the database cannot even be opened for reading (a full file system
    where no -shm can be made, I/O errors): the daemon's status file and the file system's
    word, with `error` as the storage line. The same keys as `collect()`."""
    found = read_status_file(cfg.storage.path)
    runtime, updated = found if found is not None else (DaemonStatus(), None)
    running = _running(runtime, updated)
    recorder = runtime.recorder.to_json() if found is not None else {}
    storage = _storage(recorder, running, cfg.storage.path)
    if storage["state"] in ("", "ok"):
        storage["state"] = "error"
    storage["storage_error"] = error
    return {
        "fixes": 0, "fixes_outside": 0, "fixes_kept_local": 0, "pending": {},
        "quarantined": {}, "backends": {}, "activity": None,
        "lifecycle": runtime.lifecycle.to_json() if running else {},
        "last_fix": None, "rejected": {"total": 0, "by_reason": {}},
        "database": {"path": str(cfg.storage.path), "size_bytes": None,
                     "max_mb": cfg.storage.max_mb, "error": error},
        "daemon": {"running": running, "pid": runtime.pid, "started": _iso(runtime.started),
                   "updated": _iso(updated)},
        "gps": runtime.gps.to_json() if running else {}, "sensors": [], "inputs": [],
        "share": {}, "instruments": {"activity": None, "readings": []}, "storage": storage,
    }  # fmt: skip


def render(status: dict[str, Any]) -> str:
    """The status as a few lines for a person."""
    d, gps, last, act = status["daemon"], status["gps"], status["last_fix"], status["activity"]
    lines = []
    if d["running"]:
        lines.append(f"daemon:    running (pid {d['pid']}, since {d['started']})")
    else:
        lines.append(f"daemon:    not running (last seen {d['updated'] or 'never'})")
    if gps:
        device = str(gps.get("device"))
        at = "" if device.startswith("gpsd://") else f" at {gps.get('baudrate')} baud"
        what = "reports" if device.startswith("gpsd://") else "sentences"
        lines.append(
            f"gps:       {device} {gps.get('state')}{at}, "
            f"{gps.get('sentences', 0)} {what}, {status['rejected']['total']} rejected"
        )
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(status["rejected"]["by_reason"].items()) if v)
    if reasons:
        lines.append(f"rejected:  {reasons}")
    for sensor in status["sensors"]:
        values = ", ".join(f"{k} {v:g}" for k, v in sorted(sensor.get("last", {}).items()))
        problem = f" ({sensor['error']})" if sensor.get("error") else ""
        lines.append(
            f"sensor:    {sensor['label']} ({sensor['type']}) {sensor['state']}{problem}"
            + (f": {values}" if values else "")
        )
    for i in status.get("inputs", []):
        problem = f" ({i['error']})" if i.get("error") else ""
        seen = f", last seen {i['last_seen']}" if i.get("last_seen") else ", nothing yet"
        lines.append(
            f"input:     {i['name']} ({i['url']}) {i['state']}{problem}: "
            f"{i['sentences']} sentences, {i['readings']} readings{seen}"
        )
    share = status.get("share") or {}
    if share.get("error"):
        lines.append(f"SHARE:     tcp {share['listen']} not serving: {share['error']}")
    elif share:
        dropped = share.get("dropped_bytes", 0)
        lines.append(
            f"share:     tcp {share['listen']}, {share['clients']} clients"
            + (f", {dropped} bytes dropped for slow clients" if dropped else "")
        )
    if last:
        quality = QUALITY_NAMES.get(last["quality"], "fix") if last["quality"] else "fix"
        lines.append(
            f"last fix:  {last['time']}  {last['lat']:.6f}, {last['lon']:.6f}"
            + (f"  alt {last['alt']:.1f} m" if last["alt"] is not None else "")
            + f"  {quality}"
            + (f", {last['satellites']} satellites" if last["satellites"] is not None else "")
        )
    else:
        lines.append("last fix:  none yet")
    if act:
        state = f", {act['state']}" if act.get("state") else ""
        lines.append(
            f"activity:  {act['id']} \"{act['title']}\" ({act['type']}) since {act['started']}"
            + state
        )
        readings = (status.get("instruments") or {}).get("readings") or []
        if readings:
            lines.append("readings:  " + ", ".join(f"{r['label']} {r['text']}" for r in readings))
    else:
        life = status.get("lifecycle") or {}
        waiting = {"waiting": ", waiting for movement", "starting": ", movement starting",
                   "off": ", starts with `tracker activity start`"}  # fmt: skip
        lines.append("activity:  none running" + waiting.get(life.get("state", ""), ""))
    apart = []
    if status.get("fixes_outside"):
        apart.append(f"{status['fixes_outside']} outside any activity, never sent")
    if status.get("fixes_kept_local"):
        apart.append(f"{status['fixes_kept_local']} paused, kept on the unit")
    detail = f" ({'; '.join(apart)})" if apart else ""
    lines.append(f"fixes:     {status['fixes']} stored{detail}")
    if status["pending"]:
        for name, n in sorted(status["pending"].items()):
            q = status["quarantined"].get(name, 0)
            b = status.get("backends", {}).get(name, {})
            apart = [f"{q} quarantined"] if q else []
            if b.get("held_back"):
                apart.append(f"{b['held_back']} older than its history, kept, not sent")
            apart += [f"{b['repeats']} sent again after a lost reply"] if b.get("repeats") else []
            lines.append(f"backlog:   {name}: {plural(n, 'fix', 'fixes')}"
                         + (f", {b['delivery']}" if n and b.get("delivery") else "")
                         + (f" ({'; '.join(apart)})" if apart else ""))  # fmt: skip
        for name, b in sorted(status.get("backends", {}).items()):
            line = f"sender:    {name}: {b['state']}"
            if b.get("state") == "retrying" and b.get("next_retry_at"):
                line += f", next try {b['next_retry_at']}"
            if b.get("last_error") and b.get("state") != "ok":
                line += f"; {b['last_error']}"
            lines.append(line)
    else:
        lines.append("backlog:   no backend configured")
    db = status["database"]
    if db.get("size_bytes") is None:
        lines.append(f"database:  {db['path']} cannot be read")
    else:
        size = db["size_bytes"] / 1e6
        lines.append(f"database:  {db['path']} {size:.1f} MB of {db['max_mb']:g} MB")
    storage = status["storage"]
    state = storage.get("state")
    if state and state != "ok":
        held = storage.get("held") if d["running"] else None
        lines.append(
            f"STORAGE:   {state}"
            + (f", {held} fixes held in memory" if held else "")
            + (f": {storage['storage_error']}" if storage.get("storage_error") else "")
        )
    elif storage.get("storage_error"):
        lines.append(f"STORAGE:   {storage['storage_error']}")
    if storage.get("unspilled"):
        lines.append(f"spill:     {storage['unspilled']} fixes taken in from a spill file")
    if storage.get("dropped_undelivered"):
        lines.append(
            f"PRUNED:    {storage['dropped_undelivered']} undelivered fixes deleted at max_mb"
        )
    if storage.get("dropped_fixes"):
        lines.append(
            f"DROPPED:   {storage['dropped_fixes']} fixes lost while storage was unwritable"
        )
    return "\n".join(lines)
