#!/bin/sh
# The local base image: Debian bookworm's python3 (3.11) and its venv module, from Debian
# packages only (debootstrap, then import), for building the images where no container
# registry answers. Named for what it is, never as the official python image. Skipped when
# the image exists: the engine's storage keeps it between runs on one machine.
#   containers/build-base-image.sh [image]     (root: debootstrap needs it)
# ENGINE (podman or docker, default podman) imports it; DEBIAN_MIRROR overrides the mirror,
# which is otherwise apt's own (and apt's proxy, if it has one, is used too).
set -eu
image=${1:-localhost/stream-pipeline-base:bookworm}
engine=${ENGINE:-podman}
if "$engine" image inspect "$image" >/dev/null 2>&1; then
  echo "$image: present"
  exit 0
fi
for tool in debootstrap "$engine"; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is missing (make setup installs it)" >&2; exit 1; }
done

# apt's mirror for bookworm: deb822 sources first, then the one-line format.
mirror=${DEBIAN_MIRROR:-$(sed -n 's|^URIs: *\(\S*/debian\)/*$|\1|p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)}
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
eval "$(apt-config shell http_proxy Acquire::http::Proxy 2>/dev/null || true)"
[ -z "${http_proxy:-}" ] || export http_proxy

rootfs=$(mktemp -d /var/tmp/stream-pipeline-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "$image: debootstrap bookworm from $mirror (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" \
  > "$rootfs.log" 2>&1 || { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# What an image never needs: downloaded packages, package lists, documentation.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/man "$rootfs"/usr/share/info
find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
tar -C "$rootfs" -c . | "$engine" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "Debian bookworm minbase with python3 and python3-venv (debootstrap)" \
  - "$image"
echo "$image: built"
