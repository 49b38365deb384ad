"""The GATT decoders against hand-worked packets, every flag combination, and broken input."""

from __future__ import annotations

import itertools
import struct

import pytest

from tracker.sensors.gatt import (
    CRANK_STOPPED_S,
    CrankCadence,
    CrankData,
    MalformedPacket,
    decode_csc,
    decode_cycling_power,
    decode_heart_rate,
)

# --- Heart Rate Measurement (0x2A37) ------------------------------------------------------


def test_heart_rate_hand_worked_examples():
    # flags 0x00: u8 value, no contact support, nothing else. 0x48 = 72 bpm.
    hr = decode_heart_rate(bytes([0x00, 0x48]))
    assert (hr.bpm, hr.contact, hr.energy_kj, hr.rr_s) == (72, None, None, ())
    # flags 0x01: u16 value 0x012C = 300 bpm (a bird, not a rider, but the format allows it).
    assert decode_heart_rate(bytes([0x01, 0x2C, 0x01])).bpm == 300
    # flags 0x06: contact supported and detected; 0x04: supported, not detected.
    assert decode_heart_rate(bytes([0x06, 0x5A])).contact is True
    assert decode_heart_rate(bytes([0x04, 0x5A])).contact is False
    assert decode_heart_rate(bytes([0x02, 0x5A])).contact is None  # bit 2 clear: unsupported
    # flags 0x18: energy 0x0110 = 272 kJ, then RR 0x0400 = 1.0 s and 0x0200 = 0.5 s.
    hr = decode_heart_rate(bytes([0x18, 0x50, 0x10, 0x01, 0x00, 0x04, 0x00, 0x02]))
    assert (hr.bpm, hr.energy_kj, hr.rr_s) == (80, 272, (1.0, 0.5))
    # flags 0x10 without energy: the RR list starts right after the value.
    assert decode_heart_rate(bytes([0x10, 0x50, 0x00, 0x03])).rr_s == (0.75,)


def _hr_packet(flags: int, bpm: int, energy: int, rr: list[int]) -> bytes:
    out = bytes([flags]) + (struct.pack("<H", bpm) if flags & 1 else bytes([bpm]))
    if flags & 0x08:
        out += struct.pack("<H", energy)
    if flags & 0x10:
        out += b"".join(struct.pack("<H", v) for v in rr)
    return out


@pytest.mark.parametrize("flags", range(32))
def test_heart_rate_every_flag_combination(flags):
    packet = _hr_packet(flags, 151, 1234, [800, 1100])
    hr = decode_heart_rate(packet)
    assert hr.bpm == 151
    assert hr.energy_kj == (1234 if flags & 0x08 else None)
    assert hr.rr_s == ((800 / 1024, 1100 / 1024) if flags & 0x10 else ())
    assert hr.contact == {0: None, 1: None, 2: False, 3: True}[(flags >> 1) & 3]
    # Every strict prefix missing announced bytes is refused with MalformedPacket, never
    # another exception (the RR list may legitimately be empty, so cut inside the fixed part).
    fixed = 1 + (2 if flags & 1 else 1) + (2 if flags & 0x08 else 0)
    for n in range(fixed):
        with pytest.raises(MalformedPacket):
            decode_heart_rate(packet[:n])


def test_heart_rate_odd_rr_bytes_are_malformed():
    with pytest.raises(MalformedPacket, match="RR"):
        decode_heart_rate(bytes([0x10, 0x50, 0x00, 0x04, 0x00]))


def test_heart_rate_ignores_reserved_flag_bits():
    assert decode_heart_rate(bytes([0xE0, 0x40])).bpm == 64


# --- CSC Measurement (0x2A5B) ---------------------------------------------------------------


def test_csc_hand_worked_example():
    # flags 0x03, wheel 0x00000102 revs at 0x0400 (1 s), crank 0x0010 revs at 0x0800 (2 s).
    m = decode_csc(bytes([0x03, 0x02, 0x01, 0, 0, 0x00, 0x04, 0x10, 0x00, 0x00, 0x08]))
    assert m.wheel is not None and (m.wheel.revolutions, m.wheel.event_time) == (258, 1024)
    assert m.crank == CrankData(16, 2048)
    # Crank only: the crank fields follow the flags directly.
    assert decode_csc(bytes([0x02, 0x05, 0x00, 0x00, 0x04])).crank == CrankData(5, 1024)
    assert decode_csc(bytes([0x00])).crank is None


@pytest.mark.parametrize("flags", range(4))
def test_csc_every_flag_combination_and_truncation(flags):
    packet = bytes([flags])
    if flags & 1:
        packet += struct.pack("<IH", 70000, 60000)
    if flags & 2:
        packet += struct.pack("<HH", 65535, 12345)
    m = decode_csc(packet)
    assert (m.wheel is not None) == bool(flags & 1)
    assert m.crank == (CrankData(65535, 12345) if flags & 2 else None)
    if m.wheel:
        assert (m.wheel.revolutions, m.wheel.event_time) == (70000, 60000)
    for n in range(len(packet)):
        with pytest.raises(MalformedPacket):
            decode_csc(packet[:n])


# --- Cycling Power Measurement (0x2A63) -----------------------------------------------------


def test_cycling_power_hand_worked_examples():
    # flags 0x0000, power 0x00C8 = 200 W.
    assert decode_cycling_power(bytes([0x00, 0x00, 0xC8, 0x00])).watts == 200
    # Negative power is a signed 16-bit value (back-pedalling on some meters): 0xFFF6 = -10 W.
    assert decode_cycling_power(bytes([0x00, 0x00, 0xF6, 0xFF])).watts == -10
    # flags 0x0021: balance 0x64 (50 %), crank 0x002A revs at 0x1800 (6 s); 250 W.
    m = decode_cycling_power(bytes([0x21, 0x00, 0xFA, 0x00, 0x64, 0x2A, 0x00, 0x00, 0x18]))
    assert (m.watts, m.balance_pct, m.crank) == (250, 50.0, CrankData(42, 6144))
    # flags 0x0034: accumulated torque (2), wheel (6), crank (4): the crank is after both.
    packet = bytes([0x34, 0x00, 0x2C, 0x01]) + bytes(2) + bytes(6) + bytes([7, 0, 0, 4])
    assert decode_cycling_power(packet).crank == CrankData(7, 1024)


# Sizes of the optional fields by flag bit, from the specification (see gatt.py's docstring).
_SIZES = {0: 1, 2: 2, 4: 6, 5: 4, 6: 4, 7: 4, 8: 3, 9: 2, 10: 2, 11: 2}


def _cp_packet(flags: int) -> bytes:
    out = struct.pack("<Hh", flags, 321)
    for bit in sorted(_SIZES):
        if flags & (1 << bit):
            if bit == 5:
                out += struct.pack("<HH", 4321, 54321)
            elif bit == 11:
                out += struct.pack("<H", 99)
            else:
                out += bytes([0xAB]) * _SIZES[bit]  # filler that must be skipped
    return out


def test_cycling_power_every_flag_combination():
    for flags in range(1 << 13):  # all defined bits (0-12); 13-15 are reserved
        packet = _cp_packet(flags)
        m = decode_cycling_power(packet)
        assert m.watts == 321, hex(flags)
        assert m.crank == (CrankData(4321, 54321) if flags & (1 << 5) else None), hex(flags)
        assert m.energy_kj == (99 if flags & (1 << 11) else None), hex(flags)
        # A packet one byte short of what its flags announce is refused.
        with pytest.raises(MalformedPacket):
            decode_cycling_power(packet[:-1] if len(packet) > 4 else packet[:3])


def test_cycling_power_reserved_bits_and_trailing_bytes_are_ignored():
    packet = struct.pack("<Hh", 0xE000, 150) + b"\x01\x02"
    assert decode_cycling_power(packet).watts == 150


@pytest.mark.parametrize("junk", [b"", b"\x00", b"\xff" * 3, bytearray(b"\x20\x00\x10")])
def test_short_packets_are_malformed_for_every_decoder(junk):
    for decode in (decode_cycling_power, decode_heart_rate):
        if decode is decode_heart_rate and len(junk) >= 2 and not junk[0] & 0x19:
            continue  # two bytes are a valid u8 heart rate packet
        with pytest.raises(MalformedPacket):
            decode(junk)


# --- Crank cadence ----------------------------------------------------------------------


def feed(cad: CrankCadence, steps) -> list:
    return [cad.update(CrankData(r, t), now) for r, t, now in steps]


def test_cadence_from_revolutions_and_event_time():
    cad = CrankCadence()
    # 3 revolutions in 2048/1024 = 2 s: 90 rpm. Then 1 revolution in 0.75 s: 80 rpm.
    out = feed(cad, [(100, 1000, 0.0), (103, 3048, 2.0), (104, 3816, 2.8)])
    assert out == [None, 90.0, 80.0]


def test_cadence_with_both_counters_rolling_over():
    cad = CrankCadence()
    # revolutions 65534 -> 1 is 3 revolutions; event time 64512 -> 1024 is 2048 ticks.
    assert feed(cad, [(65534, 64512, 10.0), (1, 1024, 12.0)]) == [None, 90.0]
    # Only the event time rolling over: 65000 -> 488 is 1024 ticks, one revolution: 60 rpm.
    cad = CrankCadence()
    assert feed(cad, [(5, 65000, 0.0), (6, 488, 1.0)]) == [None, 60.0]


def test_cadence_repeats_then_drops_to_zero_when_the_crank_stops():
    cad = CrankCadence()
    steps = [(10, 0, 0.0), (11, 1024, 1.0)]  # 60 rpm
    steps += [(11, 1024, 1.0 + s) for s in (0.5, 1.0, CRANK_STOPPED_S - 0.01)]  # no new event
    steps += [(11, 1024, 1.0 + CRANK_STOPPED_S), (11, 1024, 30.0)]
    assert feed(cad, steps) == [None, 60.0, 60.0, 60.0, 60.0, 0.0, 0.0]


def test_cadence_after_a_long_stop_rebaselines_instead_of_guessing():
    cad = CrankCadence()
    # Stopped for 100 s: the event time rolled over more than once, the delta means nothing.
    out = feed(cad, [(10, 0, 0.0), (11, 1024, 1.0), (11, 1024, 50.0), (12, 5000, 101.0)])
    assert out == [None, 60.0, 0.0, None]
    assert cad.update(CrankData(14, 5000 + 2048), 103.0) == 60.0
    assert cad.glitches == 0


def test_impossible_cadence_is_a_counted_glitch():
    cad = CrankCadence()
    # 50 revolutions in one second is 3000 rpm: a sensor reset or a corrupt packet.
    assert feed(cad, [(0, 0, 0.0), (50, 1024, 1.0)]) == [None, None]
    assert cad.glitches == 1
    # Revolutions without time moving is also impossible.
    assert cad.update(CrankData(51, 1024), 1.5) is None
    assert cad.glitches == 2
    assert cad.update(CrankData(52, 2048), 2.5) == 60.0


def test_reset_forgets_the_baseline():
    cad = CrankCadence()
    feed(cad, [(0, 0, 0.0), (1, 1024, 1.0)])
    cad.reset()
    # After a reconnect the sensor may have restarted at zero: no bogus delta from the old one.
    assert cad.update(CrankData(0, 0), 2.0) is None
    assert cad.update(CrankData(2, 2048), 4.0) == 60.0


def test_every_truncation_of_every_cp_packet_is_only_malformed():
    # Exhaustive over a few flag sets: no cut point raises anything but MalformedPacket.
    for flags, n in itertools.product((0x0000, 0x0021, 0x0FFF), range(40)):
        packet = _cp_packet(flags)
        if n >= len(packet):
            continue
        with pytest.raises(MalformedPacket):
            decode_cycling_power(packet[:n])
