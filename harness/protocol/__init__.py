"""The pure 2PC core: messages and codec, participant and coordinator state machines.

No module in this package does I/O, reads a clock or draws a random number; the
same code is driven by real sockets (harness.node) and by the simulator.
"""
