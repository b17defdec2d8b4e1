"""Validates Kubernetes objects against the API server's own OpenAPI v3 schemas, offline.

    validate_manifests.py [--openapi DIR] [--crds DIR] [FILE ... | -]
    kubectl kustomize manifests | validate_manifests.py -
    validate_manifests.py --self-test

Reads multi-document YAML (files, or stdin for `-` or no file) and prints one line per object:
`ok Kind/ns/name` or `FAIL Kind/ns/name: path: message` (cluster-scoped objects: `Kind/name`),
further errors of the same object indented below. Exits 1 if any object fails or has no schema.

Schemas: DIR/api_v1.json for the core group, DIR/apis_<group>_<version>.json otherwise (as
kube-apiserver serves them under /openapi/v3), the kind found by `x-kubernetes-group-version-kind`.
A group with no such file falls back to the CustomResourceDefinitions in --crds.

Strict, like kubeconform -strict: an unknown field is an error (the API server would only drop
it, or warn), and so is null where the schema does not say `nullable`. Not checked: CEL rules
(x-kubernetes-validations) and the uniqueness of list-map keys.
"""

import argparse
import base64
import binascii
import copy
import functools
import json
import re
import sys
from pathlib import Path

import jsonschema
import referencing
import referencing.jsonschema
import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_OPENAPI = HERE.parent.parent / "tests/fixtures/openapi-v3"
DEFAULT_CRDS = HERE.parent.parent / "tests/fixtures/crds"

DIALECT = jsonschema.Draft202012Validator
SPEC = referencing.jsonschema.DRAFT202012
QUANTITY = r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"


class Loader(yaml.SafeLoader):
    """YAML as kubectl reads it into JSON: timestamps stay strings."""


Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def strict(schema):
    """Returns a copy of an OpenAPI schema as a JSON Schema that refuses what the API server
    would not keep: unknown fields, and null unless `nullable`."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "$defs", "definitions"):
            out[key] = {k: strict(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = strict(value)
        else:
            out[key] = value
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-embedded-resource")
    # $ref and allOf wrappers are left open: the schema they point to is closed itself, and a
    # closed wrapper would refuse every property it declares through them.
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable"):
        out = {"anyOf": [{"type": "null"}, out]}
    return out


def _check_format(fmt):
    def register(fn):
        FORMATS.checks(fmt, raises=(ValueError, binascii.Error))(fn)
        return fn

    return register


FORMATS = jsonschema.FormatChecker(formats=())


@_check_format("byte")
def _byte(value):
    if isinstance(value, str):
        # Like Go's decoder, which the API server uses: line breaks are ignored.
        base64.b64decode(value.replace("\n", "").replace("\r", ""), validate=True)
    return True


@_check_format("int32")
def _int32(value):
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_check_format("int64")
def _int64(value):
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@_check_format("date-time")
def _date_time(value):
    return not isinstance(value, str) or re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value
    ) is not None


class Schemas:
    """Finds and compiles schemas lazily: a document is read and made strict the first time
    one of its kinds is asked for, and each kind's validator is built once."""

    def __init__(self, openapi_dir, crds_dir, crds_first=False):
        self.openapi_dir = Path(openapi_dir)
        self.crds_dir = Path(crds_dir) if crds_dir else None
        self.crds_first = crds_first
        self._crds = None

    @functools.lru_cache(maxsize=None)
    def _document(self, group, version):
        name = "api_v1.json" if group == "" else f"apis_{group}_{version}.json"
        path = self.openapi_dir / name
        if (group == "" and version != "v1") or not path.is_file():
            return None
        doc = json.loads(path.read_text())
        schemas = {key: strict(s) for key, s in doc["components"]["schemas"].items()}
        quantity = schemas.get("io.k8s.apimachinery.pkg.api.resource.Quantity")
        if quantity:
            # The published schema takes any string; the API server refuses "64MB".
            quantity["oneOf"] = [{"type": "string", "pattern": QUANTITY}, {"type": "number"}]
        return {"components": {"schemas": schemas}}

    def _crd_schemas(self):
        if self._crds is None:
            self._crds = {}
            for path in sorted(self.crds_dir.rglob("*.y*ml")) if self.crds_dir else []:
                for crd in yaml.load_all(path.read_text(), Loader=Loader):
                    if not crd or crd.get("kind") != "CustomResourceDefinition":
                        continue
                    spec = crd["spec"]
                    for v in spec.get("versions", []):
                        schema = (v.get("schema") or {}).get("openAPIV3Schema")
                        if schema:
                            key = (spec["group"], v["name"], spec["names"]["kind"])
                            self._crds[key] = strict(schema)
        return self._crds

    @functools.lru_cache(maxsize=None)
    def validator(self, api_version, kind):
        """The validator for apiVersion/kind, or None when no schema is known."""
        group, _, version = api_version.rpartition("/")
        if self.crds_first and (group, version, kind) in self._crd_schemas():
            return DIALECT(self._crd_schemas()[(group, version, kind)], format_checker=FORMATS)
        doc = self._document(group, version)
        if doc is not None:
            for name, schema in doc["components"]["schemas"].items():
                gvks = schema.get("x-kubernetes-group-version-kind", [])
                if {"group": group, "version": version, "kind": kind} in gvks:
                    uri = f"urn:openapi:{group or 'core'}:{version}"
                    registry = referencing.Registry().with_resource(uri, SPEC.create_resource(doc))
                    root = {"$ref": f"{uri}#/components/schemas/{name}"}
                    return DIALECT(root, registry=registry, format_checker=FORMATS)
        schema = self._crd_schemas().get((group, version, kind))
        if schema is not None:
            return DIALECT(schema, format_checker=FORMATS)
        return None


def describe(obj):
    meta = obj.get("metadata") or {}
    parts = [str(obj.get("kind", "?")), meta.get("namespace"), str(meta.get("name", "?"))]
    return "/".join(p for p in parts if p)


def path_of(error):
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(object)"


def message_of(error):
    if error.validator == "additionalProperties" and error.validator_value is False:
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return "unknown field" + ("s " if len(extra) > 1 else " ") + ", ".join(map(repr, extra))
    if error.validator == "format":
        # Without the value: it may be a Secret's data.
        return "not valid base64" if error.validator_value == "byte" else f"not a valid {error.validator_value}"
    if error.validator == "pattern" and error.validator_value == QUANTITY:
        return f"{error.instance!r} is not a quantity (e.g. 64Mi, 500m, 1)"
    if error.instance is None and error.validator in ("type", "anyOf", "oneOf"):
        return "null is not allowed here (drop the field)"
    if error.validator == "type":
        # Without the value, as above.
        found = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
        return f"must be {error.validator_value}, not {found.get(type(error.instance), type(error.instance).__name__)}"
    text = error.message
    return text if len(text) <= 200 else text[:197] + "..."


def errors_of(validator, obj):
    found = []
    for error in validator.iter_errors(obj):
        # For a oneOf/anyOf, say what was wrong with the closest branch.
        best = jsonschema.exceptions.best_match([error])
        found.append(f"{path_of(best)}: {message_of(best)}")
    return sorted(set(found))


def validate(schemas, obj):
    """Returns the problems of one object: [] when it is valid."""
    if not isinstance(obj, dict):
        return [f"(document): not an object: {type(obj).__name__}"]
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["(object): apiVersion and kind are required"]
    validator = schemas.validator(api_version, kind)
    if validator is None:
        return [f"(object): no schema for {api_version} {kind}"]
    return errors_of(validator, obj)


def documents(text):
    for doc in yaml.load_all(text, Loader=Loader):
        if doc is None:
            continue
        # kubectl's List form (kubectl get -o yaml) holds its objects in items.
        if isinstance(doc, dict) and doc.get("kind") == "List" and "items" in doc:
            yield from doc["items"]
        else:
            yield doc


def run(schemas, sources, out=sys.stdout):
    failed = 0
    count = 0
    for source in sources:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        for obj in documents(text):
            count += 1
            problems = validate(schemas, obj)
            name = describe(obj) if isinstance(obj, dict) else "?"
            if problems:
                failed += 1
                print(f"FAIL {name}: {problems[0]}", file=out)
                for p in problems[1:]:
                    print(f"    {p}", file=out)
            else:
                print(f"ok {name}", file=out)
    return count, failed


SELF_TEST_GOOD = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: demo, labels: {app: demo}}
spec:
  replicas: 2
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      containers:
        - name: app
          image: example/app:1
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /readyz, port: http}}
          resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {cpu: 1}}
      volumes: [{name: tls, secret: {secretName: tls, defaultMode: 0440}}]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: web, namespace: demo}
spec:
  secretName: web-tls
  dnsNames: [web.demo.svc]
  duration: 2160h
  privateKey: {algorithm: ECDSA, size: 256, rotationPolicy: Always}
  issuerRef: {kind: Issuer, name: ca}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: hook}
webhooks:
  - name: v.example.com
    admissionReviewVersions: [v1]
    sideEffects: None
    clientConfig: {caBundle: Zm9v, service: {name: s, namespace: n, port: 443}}
"""

# (what is wrong, how to break the good objects above, a word the error must contain)
SELF_TEST_BAD = [
    ("unknown field in a Deployment container", 0,
     lambda o: o["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicyy="Always"), "imagePullPolicyy"),
    ("replicas: \"two\"", 0, lambda o: o["spec"].update(replicas="two"), "spec.replicas"),
    ("unknown field in metadata", 0, lambda o: o["metadata"].update(label={"a": "b"}), "label"),
    ("a memory of 64MB", 0,
     lambda o: o["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"].update(memory="64MB"), "memory"),
    ("null where not nullable", 0, lambda o: o["spec"].update(replicas=None), "null"),
    ("container without a name", 0, lambda o: o["spec"]["template"]["spec"]["containers"][0].pop("name"), "name"),
    ("unknown field in a Certificate spec", 1, lambda o: o["spec"].update(dnsName=["x"]), "dnsName"),
    ("wrong enum in a Certificate", 1, lambda o: o["spec"]["privateKey"].update(algorithm="DSA"), "DSA"),
    ("caBundle that is not base64", 2, lambda o: o["webhooks"][0]["clientConfig"].update(caBundle="not base64!"), "caBundle"),
    ("unknown kind", 0, lambda o: o.update(kind="Deploymint"), "no schema"),
    ("unknown apiVersion", 1, lambda o: o.update(apiVersion="cert-manager.io/v2"), "no schema"),
]


# The OpenAPI extensions that strict() translates, on a schema of its own.
KEYWORD_SCHEMA = {
    "type": "object",
    "properties": {
        "nullable": {"type": "string", "nullable": True},
        "intOrString": {"x-kubernetes-int-or-string": True},
        "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"known": {"type": "string"}}},
        "wrapped": {"allOf": [{"$ref": "#/$defs/closed"}]},
    },
    "$defs": {"closed": {"type": "object", "properties": {"known": {"type": "string"}}}},
}
KEYWORD_CASES = [
    ({"nullable": None, "intOrString": 1, "open": {"known": "x", "anything": 1}, "wrapped": {"known": "x"}}, True),
    ({"intOrString": "50%"}, True),
    ({"intOrString": 1.5}, False),
    ({"wrapped": {"unknown": 1}}, False),
    ({"unknown": 1}, False),
]


def self_test(openapi_dir, crds_dir):
    good = list(documents(SELF_TEST_GOOD))
    missed = 0
    keywords = DIALECT(strict(KEYWORD_SCHEMA))
    for instance, valid in KEYWORD_CASES:
        if keywords.is_valid(instance) != valid:
            missed += 1
            print(f"self-test: {instance} should be {'valid' if valid else 'refused'}")
    # Both sources of cert-manager schemas: the served document, and the CRDs alone.
    variants = [("openapi", Schemas(openapi_dir, crds_dir)), ("crds", Schemas(openapi_dir, crds_dir, crds_first=True))]
    for source, schemas in variants:
        for obj in good:
            problems = validate(schemas, obj)
            if problems:
                missed += 1
                print(f"self-test ({source}): a valid {obj['kind']} was refused: {problems}")
        for what, index, breaks, expect in SELF_TEST_BAD:
            if source == "crds" and good[index]["apiVersion"].split("/")[0] != "cert-manager.io":
                continue
            obj = copy.deepcopy(good[index])
            breaks(obj)
            problems = validate(schemas, obj)
            if not any(expect in p for p in problems):
                missed += 1
                print(f"self-test ({source}): not caught: {what} (got {problems})")
            else:
                print(f"self-test ({source}): caught {what}: {problems[0]}")
    print("self-test: " + ("FAILED" if missed else "ok"))
    return 1 if missed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openapi", default=DEFAULT_OPENAPI, help="directory of OpenAPI v3 documents (default: %(default)s)")
    parser.add_argument("--crds", default=DEFAULT_CRDS, help="directory of CustomResourceDefinitions (default: %(default)s)")
    parser.add_argument("--self-test", action="store_true", help="check that the validator catches known mistakes")
    parser.add_argument("files", nargs="*", help="YAML files; - or none for stdin")
    args = parser.parse_args()
    if not Path(args.openapi, "api_v1.json").is_file():
        parser.error(f"{args.openapi}: no api_v1.json")
    if args.self_test:
        sys.exit(self_test(args.openapi, args.crds))
    count, failed = run(Schemas(args.openapi, args.crds), args.files or ["-"])
    if count == 0:
        print("FAIL no objects in the input")
        sys.exit(1)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
