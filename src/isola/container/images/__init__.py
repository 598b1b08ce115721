"""OCI images for `isola container`: a content-addressed store, importers for OCI layouts and docker-save
tarballs, layer unpacking with whiteouts, an overlayfs root per container, and an offline busybox build.

Every module here is one concept: `digest` (sha256 and verified reading), `archive` (files of a directory or a
tarball), `model` (what an importer hands the store), `oci_layout` / `docker_archive` (the two formats),
`reader` (which one a path is), `unpack` (applying one layer), `store` (blobs, layers, images, names),
`rootfs` (overlayfs), `build` (the busybox base image), `export` (an image back to a tarball).
"""
