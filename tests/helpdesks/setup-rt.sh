#!/bin/bash
# setup-rt.sh: a private Request Tracker 5 (Debian packages, SQLite, standalone Starlet) on 127.0.0.1:$RT_PORT
# for svcbridge's tests. Adapted from ../shared/reference/real-helpdesks/setup-rt.sh: everything (config, DB,
# logs, outgoing mail) lives in $RT_STATE, nothing is written to /etc, and besides root it makes a dedicated
# "svcbridge" API user (its own token) and a ticket custom field "svcbridge-ref".
# Usage: setup-rt.sh [install|start|stop|reset|status]; idempotent, as root. `start` prints KEY=VALUE lines.
set -euo pipefail
PORT=${RT_PORT:-8080}
STATE=${RT_STATE:-/tmp/helpdesks/rt}
PW=${RT_ROOT_PW:-rtrootpw}
WORKERS=${RT_WORKERS:-2}
BASE="http://127.0.0.1:$PORT"
RTLIB=/usr/share/request-tracker5/lib
SERVER=/usr/share/request-tracker5/libexec/rt-server
PKGS="request-tracker5 rt5-db-sqlite rt5-clients rt5-standalone"
# RT reads this dir instead of /etc/request-tracker5/RT_SiteConfig.d
export RT_SITE_CONFIG_DIR=$STATE/RT_SiteConfig.d

install_pkgs() {
  local missing="" p
  for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'ok installed' >/dev/null || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  [ "$(id -u)" = 0 ] || { echo "RT packages missing ($missing) and not root" >&2; exit 1; }
  apt-cache policy request-tracker5 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null || apt-get update -q
  debconf-set-selections <<EOF || true
request-tracker5 request-tracker5/rtname string svcbridge.test
request-tracker5 request-tracker5/webbaseurl string http://127.0.0.1:8080
request-tracker5 request-tracker5/install-cronjobs boolean false
EOF
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing </dev/null
}

write_config() {
  mkdir -p "$RT_SITE_CONFIG_DIR"
  local f=$RT_SITE_CONFIG_DIR/99-svcbridge.pm
  cat > "$f.new" <<EOF
# written by tests/helpdesks/setup-rt.sh: loopback only, own SQLite DB, outgoing mail to a file
Set(\$rtname, "svcbridge.test");
Set(\$Organization, "svcbridge.test");
Set(\$CorrespondAddress, 'rt@svcbridge.test');
Set(\$CommentAddress, 'rt-comment@svcbridge.test');
Set(\$Timezone, "UTC");
Set(\$WebPath, "");
Set(\$WebDomain, "127.0.0.1");
Set(\$WebPort, $PORT);
Set(\$WebBaseURL, "$BASE");
Set(\$DatabaseType, "SQLite");
Set(\$DatabaseName, "$STATE/rtdb");
Set(\$MailCommand, sub { open(my \$fh, ">>", "$STATE/outgoing.mbox") or return 0;
                         print \$fh "From rt\@localhost\n", \$_[0]->stringify, "\n"; close \$fh; return 1; });
Set(\$LogDir, "$STATE");
Set(\$LogToFile, "info");
Set(\$LogToFileNamed, "rt.log");
Set(\$LogToSTDERR, "warning");
Set(\$BcryptCost, 4);              # default 12 costs ~0.2 s on EVERY token/basic-auth request
1;
EOF
  if cmp -s "$f.new" "$f"; then rm "$f.new"; else mv "$f.new" "$f"; stop_server; fi
}

bootstrap_perl() {  # root password, rights, the svcbridge API user, a ref custom field, two tokens (printed)
  perl -I"$RTLIB" - "$PW" <<'EOF' 2>&1 | grep -v 'internal HTML converter'
use strict; use warnings; use RT; RT::LoadConfig(); RT::Init();
my $pw = shift;
my $root = RT::User->new(RT->SystemUser); $root->Load('root') or die "no root user\n";
my ($ok, $msg) = $root->SetPassword($pw); $ok or die "password: $msg\n";
my $q = RT::Queue->new(RT->SystemUser); $q->Load('General') or die "no General queue\n";
my $every = RT::Group->new(RT->SystemUser); $every->LoadSystemInternalGroup('Everyone');
for my $r (qw(CreateTicket ReplyToTicket CommentOnTicket)) {   # rt-mailgate senders are unprivileged
    $every->PrincipalObj->GrantRight(Right => $r, Object => $q)
        unless $every->PrincipalObj->HasRight(Right => $r, Object => $q);
}
my $svc = RT::User->new(RT->SystemUser);
($ok, $msg) = $svc->Create(Name => 'svcbridge', EmailAddress => 'svcbridge@svcbridge.test',
                           RealName => 'svcbridge', Privileged => 1);
$ok or die "svcbridge user: $msg\n";
for my $r (qw(SeeQueue ShowTicket CreateTicket ModifyTicket ReplyToTicket CommentOnTicket ShowTicketComments
              ShowOutgoingEmail Watch SeeCustomField ModifyCustomField)) {
    $svc->PrincipalObj->GrantRight(Right => $r, Object => $q);
}
my $cf = RT::CustomField->new(RT->SystemUser);
($ok, $msg) = $cf->Create(Name => 'svcbridge-ref', Type => 'FreeformSingle', LookupType => 'RT::Queue-RT::Ticket',
                          Description => "svcbridge's ticket reference");
$ok or die "custom field: $msg\n";
($ok, $msg) = $cf->AddToObject($q); $ok or die "custom field on queue: $msg\n";
for my $pair ([$root, 'TOKEN'], [$svc, 'SVC_TOKEN']) {
    my ($u, $label) = @$pair;
    my $t = RT::AuthToken->new(RT->SystemUser);
    my ($id, $m, $tok) = $t->Create(Owner => $u->Id, Description => 'svcbridge-tests');
    $id or die "token: $m\n";
    print "$label $tok\n";
}
EOF
}

init_db() {  # schema + initial data once into rtdb.pristine; later resets copy it
  if [ ! -s "$STATE/rtdb.pristine" ]; then
    rm -f "$STATE/rtdb" "$STATE/tokens"
    /usr/sbin/rt-setup-database --action init --skip-create </dev/null >"$STATE/setup-db.log" 2>&1 \
      || { tail -20 "$STATE/setup-db.log" >&2; exit 1; }
    bootstrap_perl > "$STATE/bootstrap.out" || { cat "$STATE/bootstrap.out" >&2; exit 1; }
    grep -q '^SVC_TOKEN ' "$STATE/bootstrap.out" || { cat "$STATE/bootstrap.out" >&2; exit 1; }
    grep -E '^(TOKEN|SVC_TOKEN) ' "$STATE/bootstrap.out" > "$STATE/tokens"
    cp "$STATE/rtdb" "$STATE/rtdb.pristine"
  fi
  [ -s "$STATE/rtdb" ] || cp "$STATE/rtdb.pristine" "$STATE/rtdb"
}

# process checks straight from /proc (no procps needed); a zombie counts as stopped
proc_state() {  # the state letter of pid $1, nothing when it is gone
  local line rest
  read -r line < "/proc/$1/stat" 2>/dev/null || return 0
  rest=${line##*) }; echo "${rest%% *}"
}
running() { local st; st=$(proc_state "$1"); [ -n "$st" ] && [ "$st" != Z ]; }
live_in_session() {  # true while any live process is in session $1 (the server and its workers)
  local f line st ppid pgrp sid
  for f in /proc/[0-9]*/stat; do
    read -r line < "$f" 2>/dev/null || continue
    read -r st ppid pgrp sid _ <<<"${line##*) }"
    [ "$sid" = "$1" ] && [ "$st" != Z ] && return 0
  done
  return 1
}
alive() { [ -s "$STATE/server.pid" ] && running "$(cat "$STATE/server.pid")"; }

stop_server() {
  if alive; then
    local pid; pid=$(cat "$STATE/server.pid")
    kill -- "-$pid" 2>/dev/null || kill "$pid"       # its own session: the workers go too
    for _ in $(seq 10); do live_in_session "$pid" || break; sleep 0.1; done
    # a throw-away test server: no need to wait for Starlet's graceful worker shutdown (~2 s)
    if live_in_session "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
    for _ in $(seq 50); do live_in_session "$pid" || break; sleep 0.1; done
  fi
  rm -f "$STATE/server.pid"
}

ready() {  # GET /REST/2.0/rt with the root token answers 200
  python3 - "$BASE/REST/2.0/rt" "$(sed -n 's/^TOKEN //p' "$STATE/tokens")" <<'EOF'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "token " + sys.argv[2]})
try:
    sys.exit(0 if urllib.request.urlopen(req, timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

start_server() {
  alive && return 0
  local t0; t0=$(date +%s.%N)
  nohup setsid "$SERVER" --host 127.0.0.1 --port "$PORT" --max-workers "$WORKERS" \
    >"$STATE/server.out" 2>&1 </dev/null & echo $! > "$STATE/server.pid"
  for _ in $(seq 300); do
    if ready; then echo "STARTED_IN=$(awk "BEGIN{print $(date +%s.%N) - $t0}")"; return 0; fi
    alive || break; sleep 0.1
  done
  echo "RT did not come up; see $STATE/server.out" >&2; tail -20 "$STATE/server.out" >&2; exit 1
}

print_env() {
  echo "RT_URL=$BASE"
  echo "RT_TOKEN=$(sed -n 's/^TOKEN //p' "$STATE/tokens")"
  echo "RT_SVC_TOKEN=$(sed -n 's/^SVC_TOKEN //p' "$STATE/tokens")"
  echo "RT_MBOX=$STATE/outgoing.mbox"
}

mkdir -p "$STATE"
case "${1:-start}" in
  install) install_pkgs ;;
  start)   install_pkgs; write_config; init_db; start_server; print_env ;;
  stop)    stop_server ;;
  reset)   stop_server; rm -f "$STATE/rtdb" "$STATE/outgoing.mbox"; init_db; start_server; print_env ;;
  status)  alive && echo "running pid $(cat "$STATE/server.pid")" || { echo stopped; exit 1; } ;;
  *) echo "usage: $0 [install|start|stop|reset|status]" >&2; exit 2 ;;
esac
