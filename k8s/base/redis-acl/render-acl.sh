#!/bin/sh
# Render Redis's ACL file: the rules (users.acl) with each user's password added as a
# SHA-256 hash, read from <password dir>/<user>. Run by the Redis pod's init container,
# and by tests/test_security.py against a real redis-server.
#   render-acl.sh <rules file> <password dir> <output file>
set -eu
rules=$1 passwords=$2 out=$3
umask 077
: > "$out"
while IFS= read -r line; do
  case $line in
    "user "*)
      name=$(printf '%s\n' "$line" | cut -d' ' -f2)
      if [ -f "$passwords/$name" ]; then
        hash=$(tr -d '\n' < "$passwords/$name" | sha256sum | cut -d' ' -f1)
        line=$(printf '%s\n' "$line" | sed "s/^user $name on /user $name on #$hash /")
      fi
      printf '%s\n' "$line" >> "$out" ;;
  esac
done < "$rules"
