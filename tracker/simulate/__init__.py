"""The NMEA simulator behind `tracker simulate`: a route in, timed NMEA 0183 out.

A route (a GPX file, a generated loop, or the bundled demo ride) is followed at a fixed speed and
sampled at a fixed rate; every sample is an `Epoch` holding the sentences a receiver would send
for it and the truth a test needs to judge a decoder (`Epoch.valid`: a fix that a correct decoder
must store). Noise and faults (bad checksums, garbage, truncated and overlong lines, loss of fix,
silence) are injected from seeded random streams, so a given seed always produces the same bytes.

`simulate_phases()` rides in phases instead (parked, riding, parked under a poor sky: see
PHASES_HELP), with the noise, speed spikes and phantom walks a detector of ride start, pause
and end has to see through; `Epoch.phase` and `Epoch.moving` say what really happened.

`simulate()` and `simulate_phases()` are pure (no I/O, no clock); `run()` paces epochs out to
any `write(bytes)` callable in real time, faster, or as fast as possible; `main()` is the CLI
glue (a file, stdout, a serial port or a pty). Riders use it to test a unit indoors, the demo
and the end-to-end tests to feed the daemon a ride whose every fix is known in advance.

One module a part, data flowing down the list:
    routes     GPX, generated loops, the demo ride; RoutePath (where a rider is after s metres)
    sky        satellites in view and the DOPs they give
    steady     simulate(): a constant speed along the route       } rider models: Truths
    phases     simulate_phases(): park / ride / bad phases         }
    receiver   Epoch; receive(): Truths -> Epochs (time, sentences, faults, validity)
    sentences  NMEA 0183 encoding of one epoch's values
    faults     FaultRates (--faults) and the Injector that breaks lines
    pacing     run(): epochs to a write() in real time; Summary
    cli        `tracker simulate` (add_arguments, main)
This package is the simulator's public face: callers import from `tracker.simulate`.
"""

from tracker.simulate.cli import add_arguments, main
from tracker.simulate.faults import FAULT_KINDS, FAULTS_HELP, FaultRates, parse_faults
from tracker.simulate.pacing import Summary, run
from tracker.simulate.phases import PHASE_KINDS, PHASES_HELP, Phase, parse_phases, simulate_phases
from tracker.simulate.receiver import Epoch
from tracker.simulate.routes import (
    DEMO_ROUTE,
    RoutePoint,
    bearing_deg,
    demo_route,
    generated_loop,
    haversine_m,
    load_route,
)
from tracker.simulate.sentences import DEFAULT_SENTENCES, MAX_NMEA_LINE, SENTENCES, nmea_checksum
from tracker.simulate.steady import simulate

__all__ = [
    "DEFAULT_SENTENCES",
    "DEMO_ROUTE",
    "FAULTS_HELP",
    "FAULT_KINDS",
    "MAX_NMEA_LINE",
    "PHASES_HELP",
    "PHASE_KINDS",
    "SENTENCES",
    "Epoch",
    "FaultRates",
    "Phase",
    "RoutePoint",
    "Summary",
    "add_arguments",
    "bearing_deg",
    "demo_route",
    "generated_loop",
    "haversine_m",
    "load_route",
    "main",
    "nmea_checksum",
    "parse_faults",
    "parse_phases",
    "run",
    "simulate",
    "simulate_phases",
]
