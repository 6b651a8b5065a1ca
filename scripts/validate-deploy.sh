#!/usr/bin/env bash
# Validates docker-compose.yml and the Kubernetes manifests offline (no Docker engine, no cluster):
# the compose spec's JSON schema, Kubernetes' bundled schemas (strict), and our schemas for the KEDA objects.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=var/venv
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/check-jsonschema" ]; then
  python3 -m venv "$venv" || { echo "python3 -m venv failed: install python3-venv (Debian)" >&2; exit 1; }
  "$venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.*' 'check-jsonschema==0.39.*'
fi
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
"$venv/bin/kubernetes-validate" --strict --quiet deploy/k8s/*.yaml && echo "kubernetes manifests: ok"
"$venv/bin/check-jsonschema" --schemafile deploy/k8s/keda/scaledobject.schema.json deploy/k8s/keda/mailer-scaledobject.yaml
"$venv/bin/check-jsonschema" --schemafile deploy/k8s/keda/triggerauthentication.schema.json deploy/k8s/keda/mailer-triggerauthentication.yaml
