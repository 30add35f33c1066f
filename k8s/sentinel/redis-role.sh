#!/bin/sh
# Decide this Redis pod's role as it starts, into a file redis.conf includes: a replica
# of the master the Sentinels name (after a failover, any pod may be master), or, when
# no Sentinel answers (a first start), of redis-0, which is then master itself. Run by
# the Redis pod's init container.
#   redis-role.sh <password dir> <output file>
set -eu
passwords=$1 out=$2
domain="${NAMESPACE}.svc.cluster.local"
me="$(hostname).redis-headless.$domain"
master=""
for n in 0 1 2; do
  master=$(REDISCLI_AUTH="$(cat "$passwords/sentinel-clients")" timeout 3 \
    redis-cli --no-auth-warning -h "sentinel-$n.sentinel-headless.$domain" -p 26379 \
    sentinel get-master-addr-by-name pipeline 2>/dev/null | head -n 1) || master=""
  [ -n "$master" ] && break
done
[ -n "$master" ] || master="redis-0.redis-headless.$domain"
umask 077
{
  # Sentinels and replicas know each node by its stable name, not its pod IP.
  echo "replica-announce-ip $me"
  echo "masteruser replication"
  printf 'masterauth %s\n' "$(tr -d '\n' < "$passwords/replication")"
  [ "$master" = "$me" ] || echo "replicaof $master 6379"
} > "$out"
