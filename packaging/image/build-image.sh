#!/usr/bin/env bash
# Build the OCI images spoor-server:<version> and spoor-collector:<version> with buildah,
# from scratch and without a Docker daemon or a registry: each image holds one stripped
# binary, the shared libraries `ldd` names for it (glibc, libgcc_s, libm, the loader),
# the CA certificates, passwd/group entries for the non-root user spoor (uid/gid 10001),
# the packaged configuration file and an empty, spoor-owned state directory.
#
#   packaging/image/build-image.sh BIN_DIR VERSION [server|collector ...]
#
# `make image` calls it with the release build. Buildah keeps the images in its local
# storage (`buildah images`); push them with `buildah push spoor-server:VERSION docker://…`.
set -euo pipefail

bin_dir=$1
version=$2
shift 2
components=(server collector)
[ $# -eq 0 ] || components=("$@")
repo=$(cd "$(dirname "$0")/../.." && pwd)
uid=10001

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

for component in "${components[@]}"; do
    name=spoor-$component
    root=$stage/$name
    mkdir -p "$root"/{usr/bin,etc/spoor,etc/ssl/certs,tmp,"var/lib/$name"}
    chmod 1777 "$root/tmp"
    strip --strip-all -o "$root/usr/bin/$name" "$bin_dir/$name"
    # The shared libraries the binary needs, at the paths the loader looks them up.
    for lib in $(ldd "$bin_dir/$name" | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nspoor:x:%d:%d:spoor:/var/lib/%s:/sbin/nologin\n' \
        "$uid" "$uid" "$name" > "$root/etc/passwd"
    printf 'root:x:0:\nspoor:x:%d:\n' "$uid" > "$root/etc/group"
    cp "$repo/packaging/$component.yaml" "$root/etc/spoor/$component.yaml"
    chmod 0750 "$root/var/lib/$name"
    chown "$uid:$uid" "$root/var/lib/$name"
    # One layer from a tarball: `buildah add` unpacks it keeping owners and modes
    # (`buildah copy` would make everything root's, the state directory included).
    tar --numeric-owner -C "$root" -cf "$stage/$name.tar" .

    # A rebuild moves the tag; the image it leaves behind is removed after the commit.
    previous=$(buildah images --quiet "localhost/$name:$version" 2>/dev/null || true)
    container=$(buildah from scratch)
    buildah add --quiet "$container" "$stage/$name.tar" /
    labels=(
        --label "org.opencontainers.image.title=$name"
        --label "org.opencontainers.image.version=$version"
        --label "org.opencontainers.image.description=spoor $component (tracing appliance)"
        --label "org.opencontainers.image.licenses=$(sed -n 's/^license = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)"
    )
    if [ "$component" = server ]; then
        ports=(--port 3200 --port 4319 --port 4320)
        env=()
    else
        ports=(--port 4317 --port 4318 --port 8888 --port 13133)
        # The packaged config keeps health_check on loopback (a host); in a container the
        # probe comes from outside.
        env=(--env SPOOR_EXTENSIONS__HEALTH_CHECK__ENDPOINT=0.0.0.0:13133)
    fi
    buildah config \
        --user "$uid:$uid" \
        --workingdir "/var/lib/$name" \
        --entrypoint "[\"/usr/bin/$name\"]" \
        --cmd "--config /etc/spoor/$component.yaml" \
        --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        "${env[@]}" "${ports[@]}" "${labels[@]}" \
        --volume "/var/lib/$name" \
        --stop-signal SIGTERM \
        "$container"
    image=$(buildah commit --quiet --rm "$container" "localhost/$name:$version")
    if [ -n "$previous" ] && [[ $image != "$previous"* ]]; then
        buildah rmi "$previous" >/dev/null 2>&1 || true
    fi
    echo "localhost/$name:$version"
done
