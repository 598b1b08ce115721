"""`isola doctor`: what this host can do for each kind of isolation, and why not where it can't."""
