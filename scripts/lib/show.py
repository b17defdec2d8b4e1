"""Prints the opted-in Secrets: registries, expiry, foreign entries. Passwords stay hidden."""
import base64
import json
import sys
import urllib.request

api = sys.argv[1]
with urllib.request.urlopen(f"{api}/api/v1/secrets") as res:
    items = json.load(res)["items"]
for s in items:
    meta = s["metadata"]
    annotations = meta.get("annotations") or {}
    if "deft.com/kubeecr" not in annotations:
        continue
    print(f"  {meta['namespace']}/{meta['name']}  (resourceVersion {meta['resourceVersion']})")
    print(f"    deft.com/kubeecr:            {annotations['deft.com/kubeecr']}")
    print(f"    deft.com/kubeecr-expires-at: {annotations.get('deft.com/kubeecr-expires-at', '(not yet)')}")
    print(f"    deft.com/kubeecr-managed:    {(meta.get('labels') or {}).get('deft.com/kubeecr-managed', '(not yet)')}")
    config = json.loads(base64.b64decode(s.get("data", {}).get(".dockerconfigjson", "e30=")))
    for host, entry in config.get("auths", {}).items():
        kind = "ECR token" if ".dkr.ecr." in host else "kept as it was"
        length = len(entry.get("password") or entry.get("auth") or "")
        print(f"    auths[{host}]: {kind} ({length} characters, hidden)")
