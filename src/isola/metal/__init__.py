"""The `metal` rung: a tenant's programs run directly on a leased host, each instance a process tree in its own
cgroup, and cleaning that leaves no trace of the tenant when the lease ends."""
