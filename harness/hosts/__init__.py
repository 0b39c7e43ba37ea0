"""Where a run's nodes live: on loopback, in network namespaces of their own, or on remote hosts.

* ``netns``: network namespaces, a bridge, addresses, setns, cleanup by the run's prefix.
* ``kernel_faults``: partitions, loss and bandwidth limits made by nftables and tc in those namespaces.
* ``ssh``: the inventory of remote hosts, OpenSSH commands, and the relay of a remote node.

The runner's launcher, which picks one of these per run, is harness.experiment.placement; what a
remote host runs is harness.experiment.remote. This package imports nothing of the experiment.
"""
