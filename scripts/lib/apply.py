"""Creates the Secrets of YAML files through the Kubernetes API (local run only)."""
import json
import sys
import urllib.error
import urllib.request

import yaml

api = sys.argv[1]
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") != "Secret":
            continue
        ns = doc["metadata"].get("namespace", "default")
        name = doc["metadata"]["name"]
        req = urllib.request.Request(
            f"{api}/api/v1/namespaces/{ns}/secrets",
            data=json.dumps(doc).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req) as res:
                print(f"  created {ns}/{name} ({path})")
                for warning in res.headers.get_all("Warning") or []:
                    print(f"    warning: {warning}")
        except urllib.error.HTTPError as e:
            print(f"  refused {ns}/{name} ({path}): {json.load(e)['message']}")
