#!/usr/bin/env bash
# The local demo: the real `rdscred` binary against the Kubernetes API emulator served on
# loopback (driven with kubectl), moto for AWS and the local PostgreSQL server.
# It provisions a credential, shows the status and the synced Secret's keys (never the
# password), rotates it on demand and shows the workload being rolled.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
STATE="$ROOT/.test-env/demo"
mkdir -p "$STATE"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

bash scripts/test-env.sh up
# shellcheck disable=SC1091
source .test-env/env

say "building rdscred and the Kubernetes API emulator"
cargo build --locked -q --bin rdscred && cargo build --locked -q -p kube-emulator --bin kube-emulator

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

say "serving the Kubernetes API emulator on loopback (CRDs from crds/)"
export KUBECONFIG="$STATE/kubeconfig"
rm -f "$KUBECONFIG"
./target/debug/kube-emulator --listen 127.0.0.1:0 --crds crds --kubeconfig "$KUBECONFIG" --simulate-workloads 2s >"$STATE/emulator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$KUBECONFIG" ] && kubectl get ns >/dev/null 2>&1 && break; sleep 0.1; done
kubectl get crd

say "admin login for PostgreSQL stored in Secrets Manager (moto)"
ADMIN_SECRET="demo/postgres-admin-$$"
"$RDSCRED_TEST_VENV/bin/python" - "$ADMIN_SECRET" <<'PY'
import json, os, sys, boto3
sm = boto3.client("secretsmanager", endpoint_url=os.environ["RDSCRED_TEST_AWS_ENDPOINT"], region_name="us-east-1")
sm.create_secret(Name=sys.argv[1], SecretString=json.dumps({
    "engine": "postgres", "host": os.environ["RDSCRED_TEST_PG_HOST"], "port": int(os.environ["RDSCRED_TEST_PG_PORT"]),
    "username": os.environ["RDSCRED_TEST_PG_ADMIN_USER"], "password": os.environ["RDSCRED_TEST_PG_ADMIN_PASSWORD"],
    "dbname": os.environ["RDSCRED_TEST_PG_DB"]}))
print("created", sys.argv[1])
PY

say "starting the controller (rdscred run)"
RDSCRED_AWS_ENDPOINT_URL=$RDSCRED_TEST_AWS_ENDPOINT ./target/debug/rdscred run \
  --cluster-name demo --log-format text --http-addr 127.0.0.1:0 \
  --poll-interval 5s --drift-interval 10s --min-rotation-interval 5s >"$STATE/rdscred.log" 2>&1 &
pids+=($!)

say "platform team: an RdsDatabase; app team: a namespace, an RdsCredential and a Deployment"
USERNAME="demo_app_$$"
kubectl apply -f - <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: { rdscred.io/allowed: "true" }
---
apiVersion: rdscred.io/v1alpha1
kind: RdsDatabase
metadata:
  name: orders-db
spec:
  endpoint: { host: "$RDSCRED_TEST_PG_HOST", port: $RDSCRED_TEST_PG_PORT }
  engine: postgres
  databaseName: $RDSCRED_TEST_PG_DB
  adminLogin: { secretId: "$ADMIN_SECRET" }
  tls: { mode: prefer }
  namespaceSelector: { matchLabels: { rdscred.io/allowed: "true" } }
  secretNamePrefix: rdscred/orders-db/
  tags: { cost-center: "1234" }
---
apiVersion: rdscred.io/v1alpha1
kind: RdsCredential
metadata:
  name: orders-app
  namespace: shop
spec:
  databaseRef: { name: orders-db }
  username: $USERNAME
  privileges:
    - { database: $RDSCRED_TEST_PG_DB, privileges: [CONNECT, CREATE] }
  secret: { name: "rdscred/orders-db/$USERNAME", deletionPolicy: Delete, recoveryWindowInDays: 7 }
  rotation:
    strategy: alternating-users
    schedule: { automaticallyAfterDays: 30 }
    minimumInterval: 5s
  target:
    name: orders-db
    templates:
      DATABASE_URL: "postgres://{{ username | urlencode }}:{{ password | urlencode }}@{{ host }}:{{ port }}/{{ dbname }}"
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: orders, namespace: shop }
spec:
  replicas: 2
  selector: { matchLabels: { app: orders } }
  template:
    metadata: { labels: { app: orders } }
    spec:
      containers:
        - name: app
          image: example/orders:1.0
          envFrom: [{ secretRef: { name: orders-db } }]
EOF

wait_ready() {
  for _ in $(seq 300); do
    [ "$(kubectl -n shop get rdscred orders-app -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] && return 0
    sleep 0.2
  done
  echo "not Ready in time; controller log:"; tail -n 30 "$STATE/rdscred.log"; return 1
}
wait_ready
kubectl get rdsdb
kubectl -n shop get rdscred

say "status of the credential (no secret value in it)"
kubectl -n shop get rdscred orders-app -o jsonpath='{.status}' | "$RDSCRED_TEST_VENV/bin/python" -m json.tool

say "the synced Kubernetes Secret: keys and metadata only"
kubectl -n shop get secret orders-db -o json | "$RDSCRED_TEST_VENV/bin/python" -c '
import json, sys
s = json.load(sys.stdin)
print("keys:", ", ".join(sorted(s["data"])))
print("version:", s["metadata"]["annotations"]["rdscred.io/version-id"])
print("owner:", s["metadata"]["ownerReferences"][0]["kind"], s["metadata"]["ownerReferences"][0]["name"])'

say "rotate on demand (annotation); the Deployment is rolled once the new value is synced"
before=$(kubectl -n shop get rdscred orders-app -o jsonpath='{.status.syncedVersionId}')
kubectl -n shop annotate rdscred orders-app rdscred.io/rotate-requested-at="$(date -u +%FT%TZ)" --overwrite
for _ in $(seq 300); do
  after=$(kubectl -n shop get rdscred orders-app -o jsonpath='{.status.syncedVersionId}')
  [ "$after" != "$before" ] && break
  sleep 0.2
done
kubectl -n shop get rdscred orders-app
echo "AWSCURRENT moved: $before -> $after (user now $(kubectl -n shop get rdscred orders-app -o jsonpath='{.status.currentUsername}'))"
for _ in $(seq 100); do
  anns=$(kubectl -n shop get deploy orders -o jsonpath='{.spec.template.metadata.annotations}')
  [ -n "$anns" ] && break
  sleep 0.2
done
echo "Deployment pod-template annotations: $anns"

say "events"
kubectl -n shop get events.events.k8s.io -o custom-columns=REASON:.reason,NOTE:.note 2>/dev/null || kubectl -n shop get events

say "cleaning up (deletionPolicy: Delete drops the user and schedules the secret for deletion)"
kubectl -n shop delete rdscred orders-app --wait=false
for _ in $(seq 150); do kubectl -n shop get rdscred orders-app >/dev/null 2>&1 || break; sleep 0.2; done
grep -c . "$STATE/rdscred.log" >/dev/null && echo "controller log: $STATE/rdscred.log"
say "demo done"
