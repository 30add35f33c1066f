#!/bin/sh
# Render this Sentinel's configuration (Sentinel rewrites the file as it learns, so it
# lives in an emptyDir of its own): it watches the master its peers name, or redis-0
# on a first start. Run by the Sentinel pod's init container.
#   sentinel-conf.sh <password dir> <output file>
set -eu
passwords=$1 out=$2
domain="${NAMESPACE}.svc.cluster.local"
clients=$(tr -d '\n' < "$passwords/sentinel-clients")
master=""
for n in 0 1 2; do
  [ "sentinel-$n" = "$(hostname)" ] && continue
  master=$(REDISCLI_AUTH="$clients" timeout 3 redis-cli --no-auth-warning \
    -h "sentinel-$n.sentinel-headless.$domain" -p 26379 \
    sentinel get-master-addr-by-name pipeline 2>/dev/null | head -n 1) || master=""
  [ -n "$master" ] && break
done
[ -n "$master" ] || master="redis-0.redis-headless.$domain"
umask 077
cat > "$out" <<CONF
port 26379
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $(hostname).sentinel-headless.$domain
sentinel monitor pipeline $master 6379 2
sentinel down-after-milliseconds pipeline 5000
sentinel failover-timeout pipeline 60000
sentinel parallel-syncs pipeline 1
sentinel auth-user pipeline sentinel
sentinel auth-pass pipeline $(tr -d '\n' < "$passwords/sentinel")
requirepass $clients
sentinel sentinel-pass $clients
CONF
