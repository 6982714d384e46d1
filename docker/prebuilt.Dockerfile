# The image docker/Dockerfile builds, from a static binary built beforehand
# (no Rust image to pull): docker/build-images.sh uses it, for each
# architecture, with the binary alone as the build context.
FROM scratch
COPY metrocloud /metrocloud
# No user database in scratch: a numeric id, not root.
USER 65532:65532
ENTRYPOINT ["/metrocloud"]
CMD ["--help"]
