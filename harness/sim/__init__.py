"""Simulation and exhaustive exploration of the pure 2PC core.

Both drive the real state machines (harness.protocol) through the same
simulated nodes (:mod:`harness.sim.model`), which execute a core's actions one
at a time so a crash can fall between two of them, and judge every step by the
same properties (:mod:`harness.sim.invariants`: AC1-AC4, what clients were
told, refinement of Gray and Lamport's TCommit, lock exclusion, every message
through the real codec, membership (the explorer's stranger); liveness and
identical replicas once faults stop).

* :mod:`harness.sim.explore`: every reachable state of a small configuration,
  breadth-first, with a shortest counterexample; the system it searches is
  :mod:`harness.sim.transitions` (a crash inside a step:
  :mod:`harness.sim.cuts`; its judgements and words for a trace:
  :mod:`harness.sim.judgement`), its vocabulary :mod:`harness.sim.states`,
  its store :mod:`harness.sim.interned`, :mod:`harness.sim.symmetry`
  stores one state per class up to renaming, :mod:`harness.sim.moves`
  memoises each step per state without its network, and
  :mod:`harness.sim.parallel` shares each level with a second core;
* :mod:`harness.sim.simulate`: seeded random runs with a virtual clock, loss,
  duplication, reordering, delay, crashes and restarts; one seed, one run.

``python -m harness.sim --help`` for the command line.
"""
