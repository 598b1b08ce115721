"""isola-oci: an OCI runtime (runtime-spec config.json and bundles) with runc's command line."""
