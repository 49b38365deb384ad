"""Test servers for the protocols tracker speaks, used by the tests and the demo.

`faults` holds what every such server shares, independent of the protocol: scripted network
faults, the request log, and an HTTP server that can be stopped and started again on the same
port. `mapmytracks` and `gpsr` are the Map My Tracks- and json-gpsr-compatible servers built on
it (`tracker serve-mapmytracks`, `tracker serve-gpsr`).
"""
