"""What goes wrong on a simulated receiver's line, and how often: `FaultRates` (the
`--faults` text), and the `Injector` that applies the line faults to an epoch's bytes.

Not to be confused with tracker/testing/faults.py's `Faults`: the test servers' network faults."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, fields, replace

LINE_FAULTS = ("checksum", "garbage", "truncate", "overlong")  # per sentence (per line)
_RUN_FAULTS = ("outage", "silence")  # per second: the start of a run
FAULT_KINDS = LINE_FAULTS + _RUN_FAULTS

FAULTS_HELP = """\
comma-separated KEY=VALUE. Probabilities in [0, 1], per sentence: checksum (a character of the
sentence changed, checksum kept, so it no longer matches), garbage (1-40 random bytes, some not
UTF-8, before the sentence, sometimes on their own line), truncate (the sentence cut mid-line,
no newline: the next sentence follows on the same line), overlong (a 200-4000 byte line before
the sentence); per second, whatever the rate: outage (a loss of fix starts: RMC status V, GGA
quality 0, like a tunnel), silence (the receiver stops talking, like a pulled cable).
Durations in seconds, N or MIN-MAX: outage_s (default 5-30), silence_s (default 2-10). Example:
checksum=0.01,garbage=0.01,truncate=0.01,overlong=0.001,outage=0.002,silence=0.001"""


@dataclass(frozen=True, slots=True)
class FaultRates:
    """What goes wrong, and how often. All zero: a perfect receiver on a perfect line.

    The line faults (checksum, garbage, truncate, overlong) are probabilities per sentence line
    written (each GSV message is a line); outage and silence are the probability that a run of
    them starts in a given second (so the same numbers mean the same ride at 1 Hz and at 25 Hz;
    at 1 Hz that is per epoch), with a duration drawn uniformly from `outage_s` / `silence_s`
    seconds. See FAULTS_HELP for what each one does to the bytes.
    """

    checksum: float = 0.0
    garbage: float = 0.0
    truncate: float = 0.0
    overlong: float = 0.0
    outage: float = 0.0
    silence: float = 0.0
    outage_s: tuple[float, float] = (5.0, 30.0)
    silence_s: tuple[float, float] = (2.0, 10.0)

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            p = getattr(self, kind)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fault {kind!r}: {p!r} is not a probability between 0 and 1")
        for name in ("outage_s", "silence_s"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi:
                raise ValueError(f"fault {name!r}: needs 0 < MIN <= MAX seconds, got {lo}-{hi}")

    @property
    def any(self) -> bool:
        """Whether any fault can happen at all."""
        return any(getattr(self, kind) > 0 for kind in FAULT_KINDS)

    def to_spec(self) -> str:
        """The `--faults` text that gives back these faults (non-default values only)."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if isinstance(value, tuple):
                lo, hi = value
                parts.append(f"{f.name}={lo:g}" if lo == hi else f"{f.name}={lo:g}-{hi:g}")
            else:
                parts.append(f"{f.name}={value:g}")
        return ",".join(parts)


def parse_faults(spec: str) -> FaultRates:
    """Parse the `--faults` syntax (see FAULTS_HELP); "" or "none" means no fault.

    Raises ValueError with a one-line message naming the offending key or value.
    """
    spec = spec.strip()
    if not spec or spec.lower() == "none":
        return FaultRates()
    values: dict[str, object] = {}
    known = FAULT_KINDS + ("outage_s", "silence_s")
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = (s.strip() for s in item.partition("="))
        key = key.lower()
        if key not in known:
            raise ValueError(f"unknown fault {key!r} (known: {', '.join(known)})")
        if not sep or not raw:
            raise ValueError(f"fault {key!r} needs a value: {key}=VALUE")
        if key in values:
            raise ValueError(f"fault {key!r} given twice")
        if key in FAULT_KINDS:
            try:
                p = float(raw)
            except ValueError:
                p = math.nan
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fault {key!r}: {raw!r} is not a probability between 0 and 1")
            values[key] = p
        else:
            m = re.fullmatch(r"(\d+(?:\.\d*)?)(?:-(\d+(?:\.\d*)?))?", raw)
            lo = float(m.group(1)) if m else 0.0
            hi = float(m.group(2)) if m and m.group(2) else lo
            if not m or not 0.0 < lo <= hi:
                raise ValueError(f"fault {key!r}: {raw!r} is not SECONDS or MIN-MAX seconds")
            values[key] = (lo, hi)
    return replace(FaultRates(), **values)  # type: ignore[arg-type]


# --- epochs -------------------------------------------------------------------------------------


class Injector:
    """Applies the line faults to an epoch's lines; one random stream per kind, so turning one
    fault on or off never moves where the others land."""

    def __init__(self, faults: FaultRates, seed: int, talker: str) -> None:
        self.faults = faults
        self.talker = talker
        self.rngs = {kind: random.Random(f"{seed}:fault:{kind}") for kind in FAULT_KINDS}

    def lines(self, lines: list[bytes], injected: list[str]) -> bytes:
        f, rngs = self.faults, self.rngs
        out = bytearray()
        for line in lines:
            if rngs["garbage"].random() < f.garbage:
                out += self._garbage(rngs["garbage"])
                injected.append("garbage")
            if rngs["overlong"].random() < f.overlong:
                out += self._overlong(rngs["overlong"])
                injected.append("overlong")
            if rngs["checksum"].random() < f.checksum:
                line = _corrupt(line, rngs["checksum"])
                injected.append("checksum")
            if rngs["truncate"].random() < f.truncate:
                # Cut inside the sentence, before its checksum can be complete; no newline,
                # so the next sentence starts on the same line (a receiver reset mid-write).
                out += line[: rngs["truncate"].randint(1, len(line) - 2)]
                injected.append("truncate")
            else:
                out += line + b"\r\n"
        return bytes(out)

    @staticmethod
    def _garbage(rng: random.Random) -> bytes:
        n = rng.randint(1, 40)
        # Line noise or a wrong baud rate: any byte at all, and at least one that is not UTF-8.
        # (0x80-0xBF cannot start a UTF-8 character, 0xF8-0xFF cannot appear in UTF-8 at all.)
        first = rng.choice((rng.randint(0x80, 0xBF), rng.randint(0xF8, 0xFF)))
        junk = bytes([first]) + rng.randbytes(n - 1)
        return junk + b"\r\n" if rng.random() < 0.5 else junk

    def _overlong(self, rng: random.Random) -> bytes:
        n = rng.randint(200, 4000)
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.-"
        return ("$" + self.talker + "".join(rng.choices(alphabet, k=n)) + "\r\n").encode("ascii")


def _corrupt(line: bytes, rng: random.Random) -> bytes:
    """Change one letter or digit between '$' and '*' to another of its kind: the XOR checksum
    then cannot match (a one-byte change always changes an XOR)."""
    star = line.rindex(b"*")
    positions = [i for i in range(1, star) if chr(line[i]).isalnum()]
    i = rng.choice(positions)
    c = chr(line[i])
    pool = "0123456789" if c.isdigit() else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    new = rng.choice([x for x in pool if x != c])
    return line[:i] + new.encode("ascii") + line[i + 1 :]
