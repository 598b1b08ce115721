"""What every engine with one monitor process per guest shares: the instance's state directory, starting the
monitor detached and hearing whether the guest runs, and the relay of a guest's output to its console and log.
The vm and metal engines use it; each keeps only what is particular to its rung."""
