"""`isola container`: docker-like containers from the image store, run by `isola-oci`.

`store` (one directory and JSON record per container), `profile` (the default confinement: namespaces,
capabilities, masked paths, the seccomp profile), `bundle` (an OCI bundle from an image and `run`'s flags),
`runtime` (calling `isola-oci`), `logs` (the log format), `supervise` (the process that owns a running
container: output, exit status), `monitor` (the detached form of it), `lifecycle` (run, stop, kill, rm, exec).
"""
