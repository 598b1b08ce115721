"""The `container` rung: processes isolated by namespaces and limited by cgroups on the host's own kernel.
`oci/` is isola-oci, a runtime with runc's command line."""
