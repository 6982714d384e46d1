# The image docker/Dockerfile builds, from a static binary built beforehand
# (no Rust image to pull): docker/build-images.sh uses it, for each
# architecture, with the binary and an empty data folder as the build context.
FROM scratch
COPY metrocloud /metrocloud
# The storage stage writes under /data (METROCLOUD_DATA_DIR in the Compose file).
COPY --chown=65532:65532 data /data
# No user database in scratch: a numeric id, not root.
USER 65532:65532
ENTRYPOINT ["/metrocloud"]
CMD ["--help"]
