"""Where a run's nodes live: on loopback, in network namespaces of their own, or on remote hosts.

* ``netns``: network namespaces, a bridge, addresses, setns, cleanup by the run's prefix.
* ``kernel_faults``: partitions, loss and bandwidth limits made by nftables and tc in those namespaces.
* ``placement``: the runner's launcher: where a node's process runs and how it is signalled.
* ``ssh`` and ``remote``: the inventory of remote hosts, OpenSSH commands, and the entry point
  a remote host runs.
"""
