#!/usr/bin/env bash
# deploy/ checked offline, against the real qtrain-server binary:
#  - kubernetes: every manifest against the Kubernetes schemas (npm kubernetes-models, installed
#    from deploy/kubernetes/package-lock.json when missing), the probes against the server's
#    health names, every container flag against `qtrain-server --helpfull`, and the kustomization
#    builds (kubectl kustomize, when kubectl is installed);
#  - systemd: `systemd-analyze verify` of the unit, with ExecStart pointed at the build.
# Usage: deploy_test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: deploy_test.sh BUILD_DIR}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if [ ! -d deploy/kubernetes/node_modules/kubernetes-models ]; then
  (cd deploy/kubernetes && npm ci --no-audit --no-fund --loglevel=error) ||
    { echo "deploy_test: npm ci failed (needs the npm registry)" >&2; exit 1; }
fi
"$BUILD/bin/qtrain-server" --helpfull > "$TMP/help.txt" 2>&1 || true
grep -q -- '--drain_grace_seconds' "$TMP/help.txt" || { echo "deploy_test: no --helpfull" >&2; exit 1; }
node deploy/kubernetes/validate.js "$TMP/help.txt"
if command -v kubectl > /dev/null; then
  kubectl kustomize deploy/kubernetes > "$TMP/all.yaml"
  echo "deploy_test: kustomize built $(grep -c '^kind:' "$TMP/all.yaml") objects"
else
  echo "deploy_test: kubectl not installed: the kustomization build was not checked"
fi

# The unit as shipped names /usr/local/bin (make install); verify needs the binary to exist.
sed "s|/usr/local/bin/qtrain-server|$(realpath "$BUILD/bin/qtrain-server")|" \
  deploy/systemd/qtrain-server.service > "$TMP/qtrain-server.service"
systemd-analyze verify "$TMP/qtrain-server.service"
echo "deploy_test: systemd unit verified"
echo "deploy_test: passed"
