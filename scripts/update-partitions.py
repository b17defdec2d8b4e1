#!/usr/bin/env python3
"""Copies the AWS SDK's partition data (regions per partition) into src/contract/partitions.json.

Run after bumping aws-sdk-ecr: kubeecr accepts only the regions this data lists, plus those an
operator names with --extra-regions. The unit test `partitions_match_the_sdk` fails until the
copy matches the SDK in Cargo.lock.
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def host_triple() -> str:
    out = subprocess.check_output(["rustc", "-vV"], text=True)
    return next(l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("host: "))


def sdk_partitions() -> tuple[dict, str]:
    meta = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--filter-platform", host_triple()], cwd=ROOT
        )
    )
    [ecr] = [p for p in meta["packages"] if p["name"] == "aws-sdk-ecr"]
    src = os.path.join(os.path.dirname(ecr["manifest_path"]), "src", "endpoint_lib.rs")
    text = open(src, encoding="utf-8").read()
    found = re.search(r'new_from_json\(b"(.*?)"\)\.expect', text, re.S)
    if not found:
        sys.exit(f"{src}: no embedded partitions JSON; has the SDK changed its layout?")
    return json.loads(found.group(1).encode().decode("unicode_escape")), ecr["version"]


def main() -> None:
    data, version = sdk_partitions()
    data["_source"] = f"aws-sdk-ecr {version}, src/endpoint_lib.rs"
    out = os.path.join(ROOT, "src", "contract", "partitions.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {out} from aws-sdk-ecr {version}")


if __name__ == "__main__":
    main()
