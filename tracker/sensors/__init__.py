"""Fitness sensors: BLE, ANT+, I2C and simulated sources of heart rate, cadence and power.

`manager.SensorManager` runs them in the daemon; this module is `tracker sensors`, the command
line (no radio library is imported until a command needs one).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sensors_command", required=True)
    p = sub.add_parser("scan", help="list nearby Bluetooth LE devices and the services they offer")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to scan (default 10)")
    p.add_argument("--adapter", help="Bluetooth adapter, e.g. hci1 (default: the system's)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    import asyncio

    from tracker.sensors.ble import render_scan, scan
    from tracker.sensors.link import SensorError

    try:
        devices = asyncio.run(scan(args.timeout, args.adapter))
    except SensorError as e:  # bleak not installed
        print(f"tracker sensors scan: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # no adapter, BlueZ not running, no permission
        print(f"tracker sensors scan: no Bluetooth ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    print(json.dumps(devices, indent=2) if args.json else render_scan(devices))
    return 0
