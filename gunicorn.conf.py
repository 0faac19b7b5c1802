"""gunicorn settings for production (`gunicorn -c gunicorn.conf.py`); the Procfile uses this file.

gevent workers hold many open event streams each (a sync worker holds one, and kills it at `timeout`);
`timeout` only watches each worker's heartbeat, so long streams are fine. Override with the usual
environment variables: PORT, WEB_CONCURRENCY, WORKER_CONNECTIONS, GUNICORN_CMD_ARGS.
"""
import os
import resource

from dotenv import load_dotenv

load_dotenv(".env")  # PORT, HOST, WEB_CONCURRENCY may live there too

wsgi_app = "app:create_app(cli=False)"  # no `flask db` commands (Flask-Migrate, Alembic) in a worker
bind = os.environ.get("BIND") or f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gevent"
# gunicorn's control socket (for `gunicornc`) is one path per user by default, so a second server on the
# same host took over the first one's. One per address instead, in the app's instance folder.
control_socket = os.path.join(os.path.dirname(os.path.abspath(__file__)), "instance",
                              "gunicorn-" + bind.replace(":", "-").replace("/", "_") + ".ctl")
# SQLite (the default) gets one worker: one gevent process holds thousands of streams, and a stream
# served by another process than the one running its run only learns of new tokens by polling (1 s).
# PostgreSQL wakes every process at once (LISTEN/NOTIFY), so there two workers use both cores.
_postgres = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql"))
workers = int(os.environ.get("WEB_CONCURRENCY") or (2 if _postgres else 1))
# Each open event stream is one connection (~30 KiB in a gevent worker), so allow thousands, and
# the file descriptors they need: many systems start processes with a soft limit of 1,024.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS") or 4000)
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
_wanted = worker_connections + 256  # the connections plus database files, sockets to the model, logs
if _soft != resource.RLIM_INFINITY and _soft < _wanted:
    resource.setrlimit(resource.RLIMIT_NOFILE,
                       (_wanted if _hard == resource.RLIM_INFINITY else min(_wanted, _hard), _hard))
# Behind a reverse proxy that terminates HTTPS: the addresses of the proxies whose X-Forwarded-Proto
# gunicorn believes (so the app knows a request came over HTTPS: Secure cookies, HSTS). Gunicorn's
# default trusts only this machine; "*" trusts anyone who can connect, so only use it when nothing but
# the proxy can reach the port. The app's PROXY_FIX setting (Werkzeug ProxyFix) additionally takes the
# client's address (X-Forwarded-For, for per-address limits) and host from the proxy.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1"
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"
# No preload: gevent must patch the standard library before the app (and psycopg, httpx) import it.
preload_app = False
