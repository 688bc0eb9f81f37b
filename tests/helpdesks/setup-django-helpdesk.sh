#!/bin/bash
# setup-django-helpdesk.sh: a private django-helpdesk (PyPI, SQLite, its DRF API, gunicorn) on 127.0.0.1:$DH_PORT
# for svcbridge's tests. Adapted from ../shared/reference/real-helpdesks/setup-django-helpdesk.sh: project, DB,
# logs and django-helpdesk's outgoing mail live in $DH_STATE; the server venv ($DH_VENV, shared by test runs,
# pinned versions) is installed under a lock when missing. Besides the agent "admin" (superuser) it makes a
# dedicated staff user "svcbridge" (the API requires is_staff) with its own token, like the RT script.
# HELPDESK_FOLLOWUP_WEBHOOK_URLS / HELPDESK_NEW_TICKET_WEBHOOK_URLS in the environment pass through to the server.
# Usage: setup-django-helpdesk.sh [install|start|stop|reset|status]; idempotent. `start`/`reset` print KEY=VALUE lines.
set -euo pipefail
PORT=${DH_PORT:-8090}
STATE=${DH_STATE:-/tmp/helpdesks/dh}
VENV=${DH_VENV:-/tmp/svcbridge-dh-venv}
PW=${DH_ADMIN_PW:-adminpw}
WORKERS=${DH_WORKERS:-2}
PROJ=$STATE/proj
BASE="http://127.0.0.1:$PORT"
PINS="django-helpdesk==2.6.1 Django==5.2.19 djangorestframework==3.18.3 gunicorn==27.0.1"
export DH_STATE=$STATE DJANGO_SETTINGS_MODULE=dhsite.settings PYTHONPATH=$PROJ

venv_ok() { [ -x "$VENV/bin/gunicorn" ] && "$VENV/bin/python" -c 'import helpdesk, rest_framework' 2>/dev/null; }

install_venv() {  # several test runs may start at once: one installs, the others wait on the lock
  venv_ok && return 0
  mkdir -p "$(dirname "$VENV")"
  (
    flock -w 900 9 || { echo "timed out waiting for $VENV.lock" >&2; exit 1; }
    venv_ok && exit 0
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install -q --disable-pip-version-check $PINS 2>&1 | grep -v "is ignored" >&2 || true
    venv_ok || { echo "django-helpdesk install into $VENV failed" >&2; exit 1; }
  ) 9>"$VENV.lock"
}

write_project() {
  mkdir -p "$PROJ/dhsite" "$STATE/outbox" "$STATE/media"
  : > "$PROJ/dhsite/__init__.py"
  cat > "$PROJ/dhsite/settings.py.new" <<'EOF'
# written by tests/helpdesks/setup-django-helpdesk.sh: minimal project hosting django-helpdesk and its DRF API
import os
STATE = os.environ["DH_STATE"]
SECRET_KEY = "svcbridge-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
    "django.contrib.sites", "django.contrib.humanize",
    "rest_framework", "rest_framework.authtoken", "helpdesk",
]
SITE_ID = 1
HELPDESK_TEAMS_MODE_ENABLED = False          # else it needs pinax-teams
HELPDESK_API_ENABLED = True                  # the default; routes under /helpdesk/api/
REST_FRAMEWORK = {"DEFAULT_AUTHENTICATION_CLASSES": [
    "rest_framework.authentication.TokenAuthentication",   # Authorization: Token <key>
    "rest_framework.authentication.BasicAuthentication",
    "rest_framework.authentication.SessionAuthentication",
]}
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "dhsite.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {"context_processors": [
                  "django.template.context_processors.request",
                  "django.contrib.auth.context_processors.auth",
                  "django.contrib.messages.context_processors.messages"]}}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.path.join(STATE, "db.sqlite3"),
                         "OPTIONS": {"timeout": 20}}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"
MEDIA_ROOT = os.path.join(STATE, "media")
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"   # nothing leaves the box
EMAIL_FILE_PATH = os.path.join(STATE, "outbox")
DEFAULT_FROM_EMAIL = "helpdesk@svcbridge.test"
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"console": {"class": "logging.StreamHandler"}},
           "root": {"handlers": ["console"], "level": "WARNING"}}
EOF
  cat > "$PROJ/dhsite/urls.py" <<'EOF'
from django.contrib import admin
from django.urls import include, path
urlpatterns = [path("admin/", admin.site.urls),
               path("helpdesk/", include("helpdesk.urls", namespace="helpdesk"))]
EOF
  printf 'from django.core.wsgi import get_wsgi_application\napplication = get_wsgi_application()\n' \
    > "$PROJ/dhsite/wsgi_app.py"
  if cmp -s "$PROJ/dhsite/settings.py.new" "$PROJ/dhsite/settings.py"; then rm "$PROJ/dhsite/settings.py.new"
  else mv "$PROJ/dhsite/settings.py.new" "$PROJ/dhsite/settings.py"; stop_server; fi
}

init_db() {  # migrate once into a pristine copy (users, tokens, queue 'general' = id 1); resets copy it back
  if [ ! -s "$STATE/db.pristine" ]; then
    rm -f "$STATE/db.sqlite3" "$STATE/tokens"
    "$VENV/bin/django-admin" migrate -v0
    "$VENV/bin/python" - "$PW" > "$STATE/tokens" <<'EOF'
import sys
import django
django.setup()
from django.contrib.auth import get_user_model
from helpdesk.models import Queue
from rest_framework.authtoken.models import Token
User = get_user_model()
admin = User.objects.create_superuser("admin", "admin@svcbridge.test", sys.argv[1])
svc = User.objects.create_user("svcbridge", "svcbridge@svcbridge.test", None, is_staff=True)
Queue.objects.get_or_create(slug="general", defaults=dict(title="General", allow_public_submission=True))
print("TOKEN", Token.objects.create(user=admin).key)
print("SVC_TOKEN", Token.objects.create(user=svc).key)
EOF
    cp "$STATE/db.sqlite3" "$STATE/db.pristine"
  fi
  [ -s "$STATE/db.sqlite3" ] || cp "$STATE/db.pristine" "$STATE/db.sqlite3"
}

# process checks straight from /proc (no procps needed); a zombie counts as stopped
proc_state() {
  local line rest
  read -r line < "/proc/$1/stat" 2>/dev/null || return 0
  rest=${line##*) }; echo "${rest%% *}"
}
running() { local st; st=$(proc_state "$1"); [ -n "$st" ] && [ "$st" != Z ]; }
alive() { [ -s "$STATE/server.pid" ] && running "$(cat "$STATE/server.pid")"; }

stop_server() {
  if alive; then
    local pid; pid=$(cat "$STATE/server.pid")
    kill -- "-$pid" 2>/dev/null || kill "$pid"       # its own session: the workers go too
    for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
  fi
  rm -f "$STATE/server.pid"
}

ready() {  # GET /helpdesk/api/tickets/ with the agent's token answers 200
  "$VENV/bin/python" - "$BASE/helpdesk/api/tickets/" "$(sed -n 's/^TOKEN //p' "$STATE/tokens")" <<'EOF'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Token " + sys.argv[2]})
try:
    sys.exit(0 if urllib.request.urlopen(req, timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

start_server() {
  alive && return 0
  local t0; t0=$(date +%s.%N)
  # gunicorn writes its own pid file; setsid makes the master a session leader so stop can kill the group
  nohup setsid "$VENV/bin/gunicorn" --bind "127.0.0.1:$PORT" --workers "$WORKERS" --chdir "$PROJ" \
    --pid "$STATE/server.pid" --no-control-socket dhsite.wsgi_app >"$STATE/server.out" 2>&1 </dev/null &
  for _ in $(seq 300); do
    if [ -s "$STATE/server.pid" ] && ready; then
      echo "STARTED_IN=$(awk "BEGIN{print $(date +%s.%N) - $t0}")"; return 0
    fi
    sleep 0.1
  done
  echo "django-helpdesk did not come up; see $STATE/server.out" >&2; tail -20 "$STATE/server.out" >&2; exit 1
}

print_env() {
  echo "DH_URL=$BASE/helpdesk/api"
  echo "DH_TOKEN=$(sed -n 's/^TOKEN //p' "$STATE/tokens")"
  echo "DH_SVC_TOKEN=$(sed -n 's/^SVC_TOKEN //p' "$STATE/tokens")"
  echo "DH_OUTBOX=$STATE/outbox"
}

case "${1:-start}" in
  install) install_venv ;;
  start)   mkdir -p "$STATE"; install_venv; write_project; init_db; start_server; print_env ;;
  stop)    stop_server ;;
  reset)   stop_server; rm -f "$STATE/db.sqlite3"; rm -rf "$STATE/outbox" "$STATE/media"
           mkdir -p "$STATE/outbox" "$STATE/media"; init_db; start_server; print_env ;;
  status)  alive && echo "running pid $(cat "$STATE/server.pid")" || { echo stopped; exit 1; } ;;
  *) echo "usage: $0 [install|start|stop|reset|status]" >&2; exit 2 ;;
esac
