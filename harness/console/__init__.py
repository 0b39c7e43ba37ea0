"""What every command line shares with a person at a terminal: widths, wrapping, exit statuses, one-line errors.

Below every other package of ours but the protocol's (it imports none of them), so
that the nodes' echo lines, the runner's progress and the reports all use it.
"""
