#!/usr/bin/env bash
# For comparison only: the approach kubeecr replaces, as the scripts operators run from cron
# do it (issue 10's "seed's script"). For every opted-in Secret, one `aws ecr
# get-login-password` and one `kubectl patch` that replaces the whole .dockerconfigjson (so it
# loses foreign entries, and it takes only the first registry of each annotation).
#
#   scripts/bench/baseline-script.sh KUBECONFIG ECR_ENDPOINT
set -euo pipefail
kubeconfig=$1; endpoint=$2
kubectl --kubeconfig "$kubeconfig" get secrets -A \
  -o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.metadata.name}{" "}{.metadata.annotations.deft\.com/kubeecr}{"\n"}{end}' |
  while read -r ns name registries; do
    [ -n "$registries" ] || continue
    first=${registries%%,*}; account=${first%%/*}; region=${first#*/}
    host="$account.dkr.ecr.$region.amazonaws.com"
    password=$(aws ecr get-login-password --region "$region" --endpoint-url "$endpoint")
    auth=$(printf 'AWS:%s' "$password" | base64 -w0)
    config=$(printf '{"auths":{"%s":{"username":"AWS","password":"%s","auth":"%s"}}}' "$host" "$password" "$auth" | base64 -w0)
    kubectl --kubeconfig "$kubeconfig" -n "$ns" patch secret "$name" --type merge \
      -p "{\"data\":{\".dockerconfigjson\":\"$config\"}}" >/dev/null
  done
