"""Pure NMEA 0183 decoding: raw bytes from a GPS receiver in, one `Fix` per valid epoch out.

No I/O, no threads, no clock: `Decoder.feed()` takes bytes as read from the port (any
chunking) and returns the fixes of the epochs that data completed; `Decoder.flush()` completes
the pending epoch when the line goes quiet. `decode_file()` does both for a capture file.
A `Decoder` is not thread-safe: it belongs to the one GPS reader thread. It never raises on
input: whatever it cannot use is counted in `Decoder.stats` and logged at most once a minute
per reason (`RateLimitedLog`).

Decisions, taken with the gpsd regression captures (`../shared/corpus/gpsd`) and gpsd's own
NMEA driver as the guide; `tests/test_corpus.py` lists every place where we differ from gpsd.

Framing
  Lines end in LF or CRLF. A `$` inside a line starts a new sentence (a lost line end, or
  noise before the `$`): the bytes before it count as `garbage`, or `partial` if they look
  like the tail of a sentence (they contain a comma, e.g. the stream began mid-sentence). A
  sentence cut short by the next `$`, or still unterminated at `flush()`, is only accepted
  with a valid checksum. NMEA allows 82 characters; real receivers exceed it (u-blox
  high-precision GGA, Unicore's 105-character GYOAC), so a sentence we use may have up to
  `MAX_SENTENCE` = 200; a longer one is `overlong`. Sentences we do not use are not
  length-checked (the MTK-3301's harmless $PMTKCHN has 203). More than `MAX_LINE` = 1024
  bytes without a line end (wrong baud rate, a binary protocol) are dropped as `overlong`,
  so the buffer stays bounded.

What is decoded, and what is not even looked at
  Any talker (GP, GN, GL, GA, GB, BD, QZ, IN...). RMC, GGA, GNS, GLL, VTG, GSA, GST and ZDA
  are split into their fields by `fields()` after our own checksum check (exactly what
  pynmea2's `parse(...).data` gives, tests/test_corpus.py holds that over every sentence of
  the gpsd captures, at a fifth of its cost: no regular expression, no message object), and
  the few fields we use are converted by us (pynmea2's properties cost ~2 us each and hand
  back the raw string when a field is malformed). The type is read from
  the first bytes before anything else, and sentences the fix does not need are counted as
  accepted (`sentences`) without parsing or checksumming: GSV (satellites used come from
  GGA), a VTG in an epoch that has an RMC, the second and later GSA of an epoch (one per
  constellation, same DOPs) and a GLL repeating its epoch's RMC/GGA position; a ZDA with the
  same date as the previous one is checksummed but only its time is read; a GSA with the
  same bytes as the last one decoded (satellites and DOPs change seldom) reuses its fields,
  and a GGA repeating its epoch's RMC position to the letter is not converted again. Proprietary
  `$P...` sentences, AIS `!` lines and other types are counted as `ignored`: not errors.

Instrument sentences
  Depth, wind, heading, water speed and log, water temperature, transducers and rudder (DBT,
  DPT, MWV, MWD, HDG, HDT, HDM, VHW, VLW, MTW, XDR, RSA: `tracker.instruments.INSTRUMENT_TYPES`),
  from any talker, are checksummed like the others, split on commas (not pynmea2) and handed
  to `tracker.instruments.decode`. Their readings, `(kind, value)` in SI units, wait in the
  order the stream sent them until `take_readings()`; they carry no time (the caller stamps
  them as they arrive, `tracker/sensors/clock.py`) and take no part in epochs: a fix is the
  same with or without them. Counted as `sentences` and `instruments`. Not taken, at most
  `MAX_READINGS` wait: the oldest go first (`readings_dropped`).

Checksums
  A bad checksum rejects the sentence. A missing one is accepted, as gpsd does, as long as
  the receiver has sent no checksummed sentence on this stream: old receivers send none at
  all (the HP 58534A in the corpus). Once a valid checksum has been seen, a missing one means
  the `*hh` was garbled and the sentence is rejected (`checksum`), until the line goes quiet
  (`flush()`: the receiver may have been swapped). A sentence without checksum must also
  have its type's full NMEA 2.0 field count (a cheap truncation guard).

Epochs
  Sentences with the same time of day (compared to the microsecond: "120000.0" and
  "120000.000" agree) make one epoch. A timed sentence (RMC, GGA, GNS, GLL, GST) with
  another time completes the open epoch. Untimed ones (GSA, VTG, GSV) attach to the open
  epoch, or to the next one when none is open (receivers that send GSA first). An epoch also
  completes without waiting for the next: when the time changes, the type that came last
  (talker included, e.g. "GPGLL") is a candidate end of cycle, as in gpsd; once a type has
  come last twice it ends the cycle, and its arrival completes the epoch (twice, so that a
  cycle cut short by lost bytes or a spliced capture teaches nothing). A timed sentence that
  arrives after its epoch was completed is `late` and dropped; if the fix lacked what it
  brings (a GGA after an RMC-only epoch, not a GLL repeating a position), the ender that
  came too early is unlearned. `flush()` completes the open epoch: the last fix before the
  receiver goes quiet is emitted too. Receivers whose cycle varies (optional GLL or ZDA, a
  different sentence every second) simply have several enders.

Time and date
  The time is the receiver's, with the fraction it sent. The date comes from RMC (only with
  status A: without a fix it carries whatever its clock says, 1980-01-05 in one capture) and
  ZDA, never from the system clock (a Pi has no RTC). ZDA only sets the date reference and
  takes no part in epochs: receivers stamp it with the next second (mr-350p) or two seconds
  ahead (ac12). An epoch without its own date takes the reference's, a day later (earlier)
  when its time of day is more than 12 h before (after) the reference's: the rollover at UTC
  midnight. The reference then follows the fixes, so a GGA-only stream rolls over every
  night (12 h with neither a dated sentence nor a valid fix could put the next fix on the
  wrong day). Valid epochs completed before any date is known are held (up to `MAX_HELD`)
  and emitted once one arrives; those still undated at `flush()` are dropped as `no_date`.
  Two-digit RMC years are 19yy from 80, else 20yy. The receiver's date is kept as sent: no
  correction of the 1024-week GPS era (some gpsd versions move old captures forward by
  eras, gpsdecode 3.22 shows a 2010 capture as 2030).

Validity
  An epoch is valid when at least one of its sentences says so (RMC/GLL status A, GGA
  quality > 0, a GNS mode other than N), none says otherwise (RMC/GLL status V or mode N,
  GGA quality 0, GNS modes all N) and it has a position. Conflicts are thus invalid: the
  corpus has two, a Garmin in simulator mode (RMC V mode S, GGA quality 8) and a Garmin dead
  reckoning without sky (RMC V mode E, GGA quality 6); gpsd stores neither. A satellite fix
  (GGA/GNS quality 1-5) from fewer than 3 satellites used is not a fix (gpsd's rule too: a
  Hemisphere reports quality 1 with 0 satellites while acquiring). Estimated (6), manual (7)
  and simulated (8) fixes alone are valid; `quality` says what they are. The NMEA 4.1
  navigational status ("V": no integrity information) is not a validity flag.

Merging
  Position from the sentence with the most decimals (RMC often has fewer than GGA), on a
  tie from GGA/GNS, then RMC, then GLL: GGA's position is the solution its altitude,
  satellites and quality describe (ch-4701 once sends an RMC still showing the previous
  solution next to a GGA with a new satellite and a position 8 m away). Altitude, quality
  and HDOP from GGA/GNS; satellites used from the GN talker (all systems), else the sum of
  the per-system talkers' GGAs (SiRFstarV sends GPGGA and GLGGA); HDOP else, VDOP and PDOP
  from GSA; speed and course from RMC, else VTG; 1-sigma errors from GST.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from os import PathLike

from tracker import instruments, plausible
from tracker.fix import Fix, new_fix
from tracker.logutil import RateLimitedLog
from tracker.plausible import ALT_MAX as _ALT_MAX
from tracker.plausible import ALT_MIN as _ALT_MIN
from tracker.plausible import DOP_MAX as _DOP_MAX
from tracker.plausible import SATS_MAX as _SATS_MAX
from tracker.plausible import SPEED_MAX as _SPEED_MAX
from tracker.plausible import TIME_MAX as _TIME_MAX
from tracker.plausible import TIME_MIN as _TIME_MIN

logger = logging.getLogger(__name__)

MAX_SENTENCE = 200  # characters of a sentence we decode, `$` to checksum
MAX_LINE = 1024  # bytes buffered without a line end before the run is dropped
MAX_HELD = 128  # valid epochs held while no date is known yet
MAX_READINGS = 4096  # instrument readings waiting for take_readings()

REJECT_REASONS = (
    "checksum",
    "garbage",
    "non_utf8",
    "overlong",
    "partial",
    "unparsable",
    "no_date",
    *plausible.REASONS,  # per fix: tracker/plausible.py
)

_KNOT = 1852.0 / 3600.0  # m/s
_HALF_DAY_US = 43_200_000_000
_DAY_S = 86400
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()

# Valid checksum digits, upper and lower case (a strict and cheaper `int(x, 16)`).
_HEX = {b"%02X" % i: i for i in range(256)} | {b"%02x" % i: i for i in range(256)}


def fields(text: str) -> list[str]:
    """The fields after the address of one talker sentence, `$` to before the checksum:
    "$GPRMC,a,b" -> ["a", "b"]. ValueError for an address that is not two talker and three
    type characters (letters or digits) followed by a comma."""
    if text[6:7] != "," or not (text[1:6].isascii() and text[1:6].isalnum()):
        raise ValueError(f"malformed address {text[:7]!r}")
    return text[7:].split(",")


@dataclass(slots=True)
class DecoderStats:
    """Counters of one Decoder, for status reports. Sentences, lines and epochs are counted
    separately: `rejected` is the sum of `rejected_by`, which also counts epochs (`no_date`)."""

    sentences: int = 0  # accepted: decoded, or recognised and not needed (GSV...)
    ignored: int = 0  # proprietary, AIS and types we do not use: not errors
    fixes: int = 0  # valid fixes emitted
    rejected: int = 0
    rejected_by: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))
    invalid_epochs: int = 0  # completed epochs without a valid position
    no_checksum: int = 0  # accepted sentences that had no checksum
    late: int = 0  # timed sentences after their epoch was complete (a GLL after its GGA...)
    # Instrument sentences decoded (also in `sentences`), and readings nobody took in time.
    # Not in as_dict() (the decoder's own report); tracker/daemon.py puts every counter, these
    # two too, in tracker/runtime.py's GpsStatus.
    instruments: int = 0
    readings_dropped: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "sentences": self.sentences,
            "ignored": self.ignored,
            "fixes": self.fixes,
            "rejected": self.rejected,
            "rejected_by": dict(self.rejected_by),
            "invalid_epochs": self.invalid_epochs,
            "no_checksum": self.no_checksum,
            "late": self.late,
        }


class _Epoch:
    """What the sentences of one epoch said so far. `tod` is None while only untimed
    sentences (GSA, VTG) have arrived: they wait for the epoch's first timed sentence."""

    __slots__ = (
        "tod", "kinds", "day", "good", "bad", "lat", "lon", "rank", "alt", "quality", "sats_gn",
        "sats", "hdop", "hdop_gsa", "vdop", "pdop", "speed", "course", "speed_vtg",
        "course_vtg", "err_lat", "err_lon", "err_alt", "pos_text",
    )  # fmt: skip

    def __init__(self, tod: int | None) -> None:
        self.tod = tod
        self.kinds = 0  # _BIT of the timed kinds merged, _BIT_GSA
        self.day: int | None = None
        self.good = False
        self.bad = False
        self.lat: float | None = None
        self.lon: float | None = None
        self.rank = -1
        self.pos_text: list[str] | None = None  # the fields lat, N/S, lon, E/W it came from
        self.alt: float | None = None
        self.quality: int | None = None
        self.sats_gn: int | None = None
        self.sats: dict[bytes, int] | None = None
        self.hdop: float | None = None
        self.hdop_gsa: float | None = None
        self.vdop: float | None = None
        self.pdop: float | None = None
        self.speed: float | None = None
        self.course: float | None = None
        self.speed_vtg: float | None = None
        self.course_vtg: float | None = None
        self.err_lat: float | None = None
        self.err_lon: float | None = None
        self.err_alt: float | None = None

    def sats_used(self) -> int | None:
        """A GN talker's count (all systems), else the sum of the per-system talkers'."""
        if self.sats_gn is not None:
            return self.sats_gn
        return sum(self.sats.values()) if self.sats else None

    def position(self, d: list[str], i: int, prio: int) -> None:
        """Take the lat/lon at fields i..i+3 if it has more decimals than the one we have
        (RMC often has fewer than GGA), or as many and a higher `prio`. Ranked from the text,
        so that a position that does not win is not even converted."""
        lat_s = d[i]
        if not lat_s:
            return
        dot = lat_s.find(".")
        rank = (len(lat_s) - dot - 1 if dot >= 0 else 0) * 4 + prio
        if rank <= self.rank:
            return
        text = d[i : i + 4]
        if text != self.pos_text:  # GGA usually repeats RMC's position to the letter
            lat = _angle(lat_s, d[i + 1], "N", "S", 90.0)
            self.lon = _angle(d[i + 2], d[i + 3], "E", "W", 180.0)
            self.lat = lat
            self.pos_text = text
        self.rank = rank


def _angle(value: str, hemi: str, pos: str, neg: str, limit: float) -> float:
    """dddmm.mmmm and a hemisphere letter to signed degrees; ValueError when malformed."""
    v = float(value)
    deg = v // 100.0
    minutes = v - deg * 100.0
    angle = deg + minutes / 60.0
    if not (0.0 <= minutes < 60.0 and angle <= limit):  # also refuses nan, inf, negatives
        raise ValueError(value)
    if hemi == pos:
        return angle
    if hemi == neg:
        return -angle
    raise ValueError(hemi)


@lru_cache(maxsize=64)
def _tod(s: str) -> int:
    """hhmmss[.sss] to microseconds of the day. Cached: every sentence of an epoch repeats it."""
    if len(s) < 6 or (len(s) > 6 and s[6] != "."):
        raise ValueError(s)
    h = int(s[0:2])
    m = int(s[2:4])
    sec = float(s[4:])
    if h > 23 or m > 59 or not 0.0 <= sec < 61.0:  # 60.x: a leap second
        raise ValueError(s)
    return (h * 3600 + m * 60) * 1_000_000 + round(sec * 1_000_000)


@lru_cache(maxsize=8)
def _day(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01; ValueError for an impossible date."""
    try:
        return datetime.date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except OverflowError:  # a number too big for C: out of range like any other bad date
        raise ValueError(f"date {year}-{month}-{day} out of range") from None


@lru_cache(maxsize=8)
def _rmc_day(s: str) -> int | None:
    """ddmmyy to days since 1970-01-01; None when absent or impossible."""
    if len(s) != 6:
        return None  # empty, or a receiver's placeholder: no date, not a broken sentence
    yy = int(s[4:6])
    try:
        return _day(1900 + yy if yy >= 80 else 2000 + yy, int(s[2:4]), int(s[0:2]))
    except ValueError:
        return None


def _num(s: str) -> float | None:
    return float(s) if s else None


_GNS_QUALITY = {"A": 1, "D": 2, "P": 3, "R": 4, "F": 5, "E": 6, "M": 7, "S": 8}

# Sentence kinds we decode. Timed kinds carry the epoch's time of day.
_RMC, _GGA, _GNS, _GLL, _GST, _VTG, _GSA, _ZDA, _GSV, _INSTRUMENT = range(10)
_KINDS = {
    b"RMC": _RMC,
    b"GGA": _GGA,
    b"GNS": _GNS,
    b"GLL": _GLL,
    b"GST": _GST,
    b"VTG": _VTG,
    b"GSA": _GSA,
    b"ZDA": _ZDA,
    b"GSV": _GSV,
} | {t.encode(): _INSTRUMENT for t in instruments.INSTRUMENT_TYPES}
# Fields (after the sentence id) of a complete sentence of each kind, required when it has no
# checksum to catch a truncated one. NMEA 2.0 lengths: later versions only add fields.
_MIN_FIELDS = {_RMC: 11, _GGA: 14, _GNS: 12, _GLL: 6, _GST: 8, _VTG: 4, _GSA: 17, _ZDA: 6}
# Index of the time field of the timed kinds.
_TIME_FIELD = {_RMC: 0, _GGA: 0, _GNS: 0, _GLL: 4, _GST: 0}
# What each timed kind contributes to an epoch, and which contributions make a late one of
# that kind redundant (GLL only brings a position, which RMC and GGA/GNS bring too).
_BIT = {_RMC: 1, _GGA: 2, _GNS: 2, _GLL: 4, _GST: 8}
_COVER = {_RMC: 1, _GGA: 2, _GNS: 2, _GLL: 7, _GST: 8}
_BIT_GSA = 16
# Kinds not worth parsing once their epoch has these (for GLL: if it is of the same epoch).
_REDUNDANT_IF = {_VTG: _BIT[_RMC], _GSA: _BIT_GSA, _GLL: _BIT[_RMC] | _BIT[_GGA]}
# The same, for Decoder.feed()'s inline skip, keyed by the type and its comma: 0 means always
# (GSV). GLL is left to _sentence(): whether it repeats its epoch needs its time read.
_SKIP_UNLESS = {b"GSV,": 0, b"VTG,": _REDUNDANT_IF[_VTG], b"GSA,": _REDUNDANT_IF[_GSA]}


class Decoder:
    """Not thread-safe: owned by the one GPS reader thread.

    `feed(data)` returns the fixes of the epochs completed by this data, in order; `flush()`
    completes the pending epoch (call it on a read timeout, a closed port, end of file);
    `take_readings()` returns the instrument readings decoded meanwhile (see the module
    docstring), to be stamped with their arrival time by the caller.
    """

    def __init__(self, *, log_interval_s: float = 60.0) -> None:
        self.stats = DecoderStats()
        self._log = RateLimitedLog(logger, log_interval_s)
        self._buf = b""
        self._skipping = False  # dropping the rest of an overlong line
        self._out: list[Fix] = []
        self._ep: _Epoch | None = None
        self._done_tod: int | None = None  # time of the last completed epoch
        self._done_by: bytes | None = None  # the ender that completed it, if any
        self._done_kinds = 0  # what it was merged from
        self._last_key: bytes | None = None  # talker+type of the last accepted sentence
        self._enders: set[bytes] = set()
        self._last_counts: dict[bytes, int] = {}  # type -> times it came last in a cycle
        self._checksummed = False  # the receiver sends checksums: require them
        self._ref: tuple[int, int] | None = None  # (day, tod) of the latest known date
        self._held: list[tuple[_Epoch, int]] = []  # valid epochs, their time of day
        self._zda: tuple[tuple[str, str, str], int] | None = None  # last ZDA date, its day
        self._readings: list[tuple[str, float]] = []
        # The last checksummed GSA decoded, and its PDOP, HDOP, VDOP.
        self._gsa: tuple[bytes, tuple[float | None, ...]] = (b"", ())
        self._last_dops: tuple[float | None, ...] = ()

    def take_readings(self) -> list[tuple[str, float]]:
        """The instrument readings decoded since the last call, `(kind, value)` in the
        stream's order (tracker/instruments.py has the kinds and units); clears them."""
        out, self._readings = self._readings, []
        return out

    # -- input ---------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Fix]:
        """Decode raw bytes; returns the fixes of the epochs they completed, oldest first."""
        out = self._out = []
        if type(data) is not bytes:
            data = bytes(data)  # bytearray, memoryview: lines must be hashable
        buf = self._buf + data if self._buf else data
        if b"\n" not in data:
            self._keep(buf)
            return out
        lines = buf.split(b"\n")
        tail = lines.pop()
        if self._skipping:  # an earlier feed() dropped the start of an overlong run
            self._skipping = False
            del lines[0]  # and this is its end
        self._keep(tail)
        sentence = self._sentence
        stats = self.stats
        enders = self._enders
        body = buf[: len(buf) - len(tail)]
        # The usual chunk: every line one sentence, `$` first and nowhere else, none overlong.
        # Checked once for all its lines (C loops over the bytes) instead of line by line.
        clean = (
            body[:1] == b"$"
            and body.count(b"$") == len(lines) == body.count(b"\n$") + 1
            and max(map(len, lines)) <= MAX_LINE
        )
        skipped = 0  # sentences skipped unread here (counted into stats at the end)
        try:
            for line in lines:
                if clean:
                    # What _sentence() does with a sentence the fix does not need, inline and
                    # before the strip (the key and the checks are the same with or without
                    # the CR): GSV always (half the sentences of a multi-GNSS receiver), a VTG
                    # beside its epoch's RMC, the second GSA of an epoch. Five of the nine
                    # sentences of a multi-GNSS epoch; a call each would cost a sixth of it.
                    need = _SKIP_UNLESS.get(line[3:7])
                    if (
                        need is not None
                        and line[1] != 80
                        and len(line) <= MAX_SENTENCE
                        and (not need or (ep := self._ep) is not None and ep.kinds & need)
                    ):
                        skipped += 1
                        key = line[1:6]
                        if key in enders:
                            self._after(key, self._ep)
                        else:
                            self._last_key = key
                        continue
                    line = line.rstrip()
                elif len(line) > MAX_LINE:  # as if it had come in pieces: see _keep()
                    self._reject("overlong", "dropped %d bytes without a line end", len(line))
                    continue
                else:
                    line = line.rstrip()  # CR, and the odd trailing blank
                    if line[:1] != b"$" or line.find(b"$", 1) >= 0:  # not one sentence
                        if line:
                            self._line(line, True)
                        continue
                sentence(line, True)
        finally:
            stats.sentences += skipped
        return out

    def flush(self) -> list[Fix]:
        """The line went quiet: decode an unterminated last sentence (only with a valid
        checksum), complete the open epoch, settle the held ones. Returns the fixes."""
        out = self._out = []
        tail, self._buf = self._buf, b""
        if tail and not self._skipping:
            self._line(tail, False)
        self._skipping = False
        self._checksummed = False  # quiet line: perhaps another receiver next
        ep = self._ep
        if ep is not None and ep.tod is not None:
            self._complete(ep, ep.tod, None)
        else:
            self._ep = None  # untimed data alone belongs to no epoch
        if self._held:
            n = len(self._held)
            self._held.clear()
            self._reject("no_date", "dropped %d valid fixes: no date (RMC/ZDA) came", n, count=n)
        return out

    def _keep(self, tail: bytes) -> None:
        if len(tail) > MAX_LINE:
            self._buf = b""
            if not self._skipping:
                self._skipping = True
                self._reject("overlong", "dropped %d bytes without a line end", len(tail))
        else:
            self._buf = tail

    def _line(self, line: bytes, terminated: bool) -> None:
        """A line that is not one plain sentence: AIS, garbage, several sentences."""
        line = line.rstrip()
        if not line:
            return
        if line[0] == 33:  # "!": AIS encapsulation, not ours
            self.stats.ignored += 1
            return
        first = line.find(b"$")
        if first != 0:
            head = line if first < 0 else line[:first]
            if b"," in head:
                self._reject("partial", "sentence fragment without start: %r", head[:40])
            else:
                self._reject("garbage", "non-NMEA bytes: %r", head[:40])
            if first < 0:
                return
        pieces = line[first + 1 :].split(b"$")
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            self._sentence(b"$" + piece, terminated and i == last)

    def _sentence(self, line: bytes, terminated: bool) -> None:
        """One sentence from `$` to its checksum, CR LF stripped. `terminated`: it ended at a
        line end, not at the next `$` or the end of the data."""
        kind = _KINDS.get(line[3:6])
        if kind is None or line[1] == 80 or line[6:7] != b",":  # 80: "P", proprietary
            if len(line) < 6:
                self._reject("partial", "sentence fragment: %r", line)
            else:
                self.stats.ignored += 1
            return
        n = len(line)
        if n > MAX_SENTENCE:
            self._reject("overlong", "sentence of %d characters: %r", n, line[:40])
            return
        ep = self._ep
        if (
            kind == _GSV
            or (ep is not None and ep.kinds & _REDUNDANT_IF.get(kind, 0))
            and (kind != _GLL or self._same_epoch(line, ep))
        ) and (terminated or line[n - 3] == 42):
            # Nothing in it the fix needs: GSV (satellites used come from GGA), a VTG next to
            # an RMC, the second GSA of an epoch (multi-GNSS receivers send one per system,
            # with the same DOPs), a GLL repeating the position of its epoch's RMC or GGA.
            # Counted as accepted and used to learn the cycle, but neither parsed nor even
            # checksummed: a corrupted one could not reach a fix anyway.
            self.stats.sentences += 1
            self._after(line[1:6], ep)
            return
        if kind == _GSA and line == self._gsa[0]:
            # The same bytes as the last GSA decoded (satellites and DOPs change seldom):
            # its checksum was right and its fields are known.
            self._checksummed = True
            self._after(line[1:6], self._dops(*self._gsa[1]))
            self.stats.sentences += 1
            return
        star = n - 3
        checked = line[star] == 42  # "*"
        if checked:
            # The XOR of the bytes between $ and *, for up to 256 of them (MAX_SENTENCE is
            # less): a big int folded in halves, C-level shifts, twice as fast as reducing
            # over the bytes. Inline: it runs for every RMC and GGA.
            x = int.from_bytes(line[1:star], "little")
            if star > 129:
                x ^= x >> 1024
            if star > 65:
                x ^= x >> 512
            x ^= x >> 256
            x ^= x >> 128
            x ^= x >> 64
            x ^= x >> 32
            x ^= x >> 16
            x ^= x >> 8
            if x & 255 != _HEX.get(line[star + 1 :]):
                self._reject("checksum", "bad checksum: %r", line)
                return
            self._checksummed = True
            body = line[:star]
        elif 42 in line:
            self._reject("checksum", "malformed checksum: %r", line)
            return
        elif not terminated:
            self._reject("partial", "sentence cut short: %r", line)
            return
        elif self._checksummed:
            self._reject("checksum", "missing checksum from a receiver that sends them: %r", line)
            return
        else:
            body = line
        if kind == _INSTRUMENT:
            self._instrument(line[3:6].decode(), body, checked)
            return
        try:
            text = body.decode()
        except UnicodeDecodeError:
            self._reject("non_utf8", "non-UTF-8 sentence: %r", line[:40])
            return
        if kind == _ZDA and self._zda is not None and self._zda_shortcut(text, *self._zda):
            return
        try:
            d = fields(text)
            if not checked and len(d) < _MIN_FIELDS[kind]:
                raise ValueError("truncated")
            tf = _TIME_FIELD.get(kind)
            tod = _tod(d[tf]) if tf is not None and d[tf] else None
            self._dispatch(kind, line[1:6], d, tod)
        except (ValueError, IndexError) as e:
            self._reject("unparsable", "cannot decode %r: %s", line, e)
            return
        if kind == _GSA and checked:
            self._gsa = (line, self._last_dops)
        self.stats.sentences += 1
        if not checked:
            self.stats.no_checksum += 1

    def _instrument(self, stype: str, body: bytes, checked: bool) -> None:
        """An instrument sentence (`body`: `$` to before the checksum, verified): its readings
        wait for take_readings()."""
        try:
            fields = body[7:].decode().split(",")  # after "$ttTTT,"
        except UnicodeDecodeError:
            self._reject("non_utf8", "non-UTF-8 sentence: %r", body[:40])
            return
        try:
            if not checked and len(fields) < instruments.MIN_FIELDS[stype]:
                raise ValueError("truncated")
            got = instruments.decode(stype, fields)
        except ValueError as e:
            self._reject("unparsable", "cannot decode %r: %s", body, e)
            return
        s = self.stats
        s.sentences += 1
        s.instruments += 1
        if not checked:
            s.no_checksum += 1
        if got:
            readings = self._readings
            readings += got
            over = len(readings) - MAX_READINGS
            if over > 0:
                del readings[:over]
                s.readings_dropped += over

    def _zda_shortcut(self, text: str, date: tuple[str, str, str], day: int) -> bool:
        """A ZDA with the same date as the last one (`date`, which is `day`) only moves the
        date reference's time: that is read from a peek at its time field. False: decode it."""
        f = text.split(",", 6)
        if len(f) < 6 or (f[2], f[3], f[4]) != date:
            return False
        try:
            tod = _tod(f[1])
        except ValueError:
            return False  # the full decoding will say what is wrong
        self._set_date(day, tod)
        self.stats.sentences += 1
        return True

    @staticmethod
    def _same_epoch(line: bytes, ep: _Epoch) -> bool:
        """Whether a GLL has the time of the open epoch: a peek at its time field only."""
        try:
            return _tod(line.split(b",", 6)[5].decode()) == ep.tod
        except (ValueError, IndexError):
            return False  # the full decoding will say what is wrong

    # -- epochs --------------------------------------------------------------------------

    def _dispatch(self, kind: int, key: bytes, d: list[str], tod: int | None) -> None:
        """Convert a sentence's fields, then place it in its epoch. Conversions that can
        raise ValueError come before any state changes, except the position, which is only
        converted when it beats the epoch's (it goes first in its epoch)."""
        if kind == _RMC:
            if tod is None:
                return
            status = d[1]
            valid = status == "A" and (len(d) < 12 or d[11] != "N")
            day = _rmc_day(d[8]) if valid else None
            speed = float(d[6]) * _KNOT if d[6] else None
            course = float(d[7]) if d[7] else None
            ep = self._place(kind, key, tod)
            if day is not None:
                if self._held:
                    self._set_date(day, tod)
                else:
                    self._ref = (day, tod)  # what _set_date does with nothing held
            if ep is None:
                return
            ep.position(d, 2, 1)
            if valid:
                ep.good = True
            elif status:
                ep.bad = True
            ep.speed = speed
            ep.course = course
            if day is not None:
                ep.day = day
        elif kind in (_GGA, _GNS):
            if tod is None:
                # Receivers send "$GPGGA,,,,,,0,..." before they know the time: it cannot
                # be placed in an epoch and says nothing about one.
                return
            if kind == _GGA:
                q = int(d[5]) if d[5] else None
            else:
                mode = d[5]
                q = next((_GNS_QUALITY.get(c, 1) for c in mode if c != "N"), 0) if mode else None
            sats = int(d[6]) if d[6] else None
            hdop = float(d[7]) if d[7] else None
            alt = float(d[8]) if d[8] else None
            ep = self._place(kind, key, tod)
            if ep is None:
                return
            ep.position(d, 1, 2)
            if q is not None:
                ep.quality = q
                if q > 0:
                    ep.good = True
                else:
                    ep.bad = True
            if sats is not None:
                # The largest count per talker: some send GGA with "00" next to a GNS with
                # the real count (Furuno), or per-constellation GGAs next to a GN one.
                talker = key[:2]
                if talker == b"GN":
                    if ep.sats_gn is None or sats > ep.sats_gn:
                        ep.sats_gn = sats
                elif ep.sats is None:
                    ep.sats = {talker: sats}
                elif sats > ep.sats.get(talker, -1):
                    ep.sats[talker] = sats
            if hdop is not None:
                ep.hdop = hdop
            if alt is not None:
                ep.alt = alt
        elif kind == _GSA:
            dops = (
                float(d[14]) if d[14] else None,
                float(d[15]) if d[15] else None,
                float(d[16]) if d[16] else None,
            )
            ep = self._dops(*dops)
            self._last_dops = dops
        elif kind == _GLL:
            if tod is None:
                return
            status = d[5] if len(d) > 5 else ""
            ep = self._place(kind, key, tod)
            if ep is None:
                return
            ep.position(d, 0, 0)
            if status == "A" and (len(d) < 7 or d[6] != "N"):
                ep.good = True
            elif status:
                ep.bad = True
        elif kind == _VTG:
            if d[1] == "T":  # NMEA 2.x: course,T,course,M,knots,N,kmh,K[,mode]
                if len(d) > 8 and d[8] == "N":
                    self._after(key, self._ep)
                    return
                crs_s, knots, kmh = d[0], d[4], d[6]
            else:  # NMEA 1.x: course true, course magnetic, knots, kmh
                crs_s, knots, kmh = d[0], d[2], d[3]
            speed = float(knots) * _KNOT if knots else (float(kmh) / 3.6 if kmh else None)
            crs = float(crs_s) if crs_s else None
            ep = self._open()
            ep.speed_vtg = speed
            ep.course_vtg = crs
        elif kind == _GST:
            if tod is None:
                return
            err = _num(d[5]), _num(d[6]), _num(d[7])
            ep = self._place(kind, key, tod)
            if ep is None:
                return
            ep.err_lat, ep.err_lon, ep.err_alt = err
        else:  # _ZDA: only the date, see the module docstring
            if d[0] and d[1] and d[2] and d[3]:
                day = _day(int(d[3]), int(d[2]), int(d[1]))
                self._set_date(day, _tod(d[0]))
                self._zda = ((d[1], d[2], d[3]), day)
            return
        self._after(key, ep)

    def _open(self) -> _Epoch:
        """The epoch an untimed sentence belongs to: the open one, else the next one."""
        ep = self._ep
        if ep is None:
            ep = self._ep = _Epoch(None)
        return ep

    def _place(self, kind: int, key: bytes, tod: int) -> _Epoch | None:
        """The epoch of a timed sentence; completes the open one if the time changed.
        None when the sentence is late (its epoch is complete already)."""
        ep = self._ep
        if ep is not None and ep.tod is not None:
            if tod != ep.tod:
                # The time changed: whatever came last ends this receiver's cycle, once it
                # has done so twice (one cycle cut short by lost bytes or a spliced capture
                # would otherwise teach a wrong ender).
                k = self._last_key
                if k is not None:
                    n = self._last_counts.get(k, 0) + 1
                    self._last_counts[k] = n
                    if n >= 2 and k not in self._enders:
                        self._enders.add(k)
                        logger.debug("NMEA cycle end learned: %s", k.decode(errors="replace"))
                self._complete(ep, ep.tod, None)
                ep = self._ep = _Epoch(tod)
            ep.kinds |= _BIT[kind]
            return ep
        if tod == self._done_tod:
            # Its epoch was completed already. If that lost something the fix lacks (a GGA
            # after an RMC-only epoch, not a GLL repeating the GGA's position), the ender
            # that completed it came too early: unlearn it.
            self.stats.late += 1
            if self._done_by is not None and not self._done_kinds & _COVER[kind]:
                self._enders.discard(self._done_by)
                self._last_counts[self._done_by] = 0
                self._done_by = None
            self._last_key = key
            return None
        if ep is None:
            ep = self._ep = _Epoch(tod)
        else:
            ep.tod = tod  # untimed sentences that came first belong to this epoch
        ep.kinds |= _BIT[kind]
        return ep

    def _dops(self, pdop: float | None, hdop: float | None, vdop: float | None) -> _Epoch:
        """A GSA's DOPs into the open epoch (the next one when none is open); that epoch."""
        ep = self._open()
        ep.kinds |= _BIT_GSA
        if pdop is not None:
            ep.pdop = pdop
        if hdop is not None:
            ep.hdop_gsa = hdop
        if vdop is not None:
            ep.vdop = vdop
        return ep

    def _after(self, key: bytes, ep: _Epoch | None) -> None:
        """Remember the last type seen; complete the epoch if this type ends the cycle and
        the epoch has a position (without one, completing could only throw it away: a wrong
        ender that comes before the position sentences is then harmless)."""
        self._last_key = key
        if ep is not None and ep.lat is not None and key in self._enders and ep.tod is not None:
            self._complete(ep, ep.tod, key)

    def _set_date(self, day: int, tod: int) -> None:
        self._ref = (day, tod)
        if self._held:
            held, self._held = self._held, []
            for ep, ep_tod in held:
                self._emit(ep, ep_tod, self._infer_day(ep_tod))

    def _infer_day(self, tod: int) -> int:
        """The day of an epoch at `tod` from the date reference (there is one: callers know)."""
        assert self._ref is not None
        rday, rtod = self._ref
        if tod < rtod - _HALF_DAY_US:
            return rday + 1  # past midnight since the reference
        if tod > rtod + _HALF_DAY_US:
            return rday - 1  # before the midnight the reference is after
        return rday

    def _complete(self, ep: _Epoch, tod: int, ender: bytes | None) -> None:
        """The open epoch `ep` (at `tod`, the time of day it has by now) is complete."""
        self._ep = None
        self._done_tod = tod
        self._done_by = ender
        self._done_kinds = ep.kinds
        sats = ep.sats_used()
        q = ep.quality
        if (
            not ep.good
            or ep.bad
            or ep.lat is None
            # A satellite fix (GGA quality 1-5) from fewer than 3 satellites is not one.
            or (q is not None and 0 < q < 6 and sats is not None and sats < 3)
        ):
            self.stats.invalid_epochs += 1
            return
        day = ep.day
        if day is None:
            if self._ref is None:
                if len(self._held) >= MAX_HELD:
                    del self._held[0]
                    self._reject("no_date", "dropped a valid fix: no date (RMC/ZDA) yet")
                self._held.append((ep, tod))
                return
            day = self._infer_day(tod)
            # Carry the date along so that a GGA-only stream rolls over every midnight.
            self._ref = (day, tod)
        self._emit(ep, tod, day)

    def _emit(self, ep: _Epoch, tod: int, day: int) -> None:
        t = day * _DAY_S + tod / 1e6
        sats = ep.sats_used()
        speed = ep.speed if ep.speed is not None else ep.speed_vtg
        course = ep.course if ep.course is not None else ep.course_vtg
        alt = ep.alt
        hdop = ep.hdop if ep.hdop is not None else ep.hdop_gsa
        vdop = ep.vdop
        pdop = ep.pdop
        raw = new_fix(  # positional, in Fix's field order (fix.new_fix: half the cost)
            t, ep.lat, ep.lon, alt, speed, course, ep.quality, sats, hdop, vdop, pdop,
            ep.err_lat, ep.err_lon, ep.err_alt,
        )  # fmt: skip
        # The bounds of docs/values.md, once per epoch: inline for the usual fix (its values
        # plausible or absent; the position is bounded by _angle already), the rest through
        # plausible.check, which sets what is out to unknown and counts it. A third of the
        # cost of calling check for every fix.
        if (
            _TIME_MIN <= t < _TIME_MAX
            and (speed is None or 0.0 <= speed <= _SPEED_MAX)
            and (alt is None or _ALT_MIN <= alt <= _ALT_MAX)
            and (course is None or 0.0 <= course <= 360.0)
            and (sats is None or 0 <= sats <= _SATS_MAX)
            and (hdop is None or 0.0 < hdop <= _DOP_MAX)
            and (vdop is None or 0.0 < vdop <= _DOP_MAX)
            and (pdop is None or 0.0 < pdop <= _DOP_MAX)
            and ep.err_lat is None  # GST, less common: checked in full below
            and ep.err_lon is None
            and ep.err_alt is None
        ):
            fix: Fix | None = raw
        else:
            fix = plausible.check(raw, self.stats)
            if fix is not raw:
                self._log.warning("implausible", "NMEA fix with impossible values: %s",
                                  plausible.describe(raw, fix))  # fmt: skip
        if fix is not None:
            self._out.append(fix)
            self.stats.fixes += 1

    def _reject(self, reason: str, msg: str, *args: object, count: int = 1) -> None:
        s = self.stats
        s.rejected += count
        s.rejected_by[reason] += count
        self._log.warning(reason, "NMEA input rejected (" + reason + "): " + msg, *args)


def decode_file(path: str | PathLike[str], decoder: Decoder | None = None) -> list[Fix]:
    """Decode a capture file as if it came from a port, in chunks, then flush.

    Lines starting with "#" are skipped: they are the comment header of the gpsd-style
    captures (`../shared/corpus/gpsd/*.log`), not something a receiver sent.
    """
    dec = decoder if decoder is not None else Decoder()
    fixes: list[Fix] = []
    chunk: list[bytes] = []
    size = 0
    with open(path, "rb") as f:
        for line in f:
            if line[:1] == b"#":
                continue
            chunk.append(line)
            size += len(line)
            if size >= 65536:
                fixes += dec.feed(b"".join(chunk))
                chunk.clear()
                size = 0
    fixes += dec.feed(b"".join(chunk))
    fixes += dec.flush()
    return fixes
