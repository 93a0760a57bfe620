#!/bin/sh
# Entrypoint of the mailsvc image: the first argument picks what runs.
# Every branch ends in `exec`, so the Python process is PID 1 and gets SIGTERM
# directly (graceful Kafka consumer shutdown on `docker stop` / pod deletion).
set -eu

usage() {
    cat <<'EOF'
usage: <image> COMMAND [ARGS...]

  mass_mailer | mail_scanner | event_triggers
        run that service (FastStream ASGI app) on 0.0.0.0:8080;
        /healthz /readyz /metrics /docs /asyncapi.
        Runs `mailsvc migrate` first unless MAILSVC_MIGRATE_ON_START=false.
  migrate
        apply database migrations and exit.
  help
        this text, then `mailsvc --help`.
  anything else
        passed verbatim to the `mailsvc` CLI.
EOF
}

migrate_on_start() {
    # Off when a dedicated migration job already ran (compose / k8s), so that
    # N replicas do not all race to migrate the same database at start-up.
    case "${MAILSVC_MIGRATE_ON_START:-true}" in
        false | False | FALSE | 0 | no) ;;
        *) mailsvc migrate ;;
    esac
}

cmd="${1:-help}"
[ "$#" -gt 0 ] && shift

case "$cmd" in
    mass_mailer | mail_scanner | event_triggers)
        migrate_on_start
        # The container port is fixed at 8080; remap it outside (compose ports,
        # k8s Service). Extra arguments go to `faststream run` (e.g. --log-level).
        exec faststream run "services.${cmd}.app:app" --host 0.0.0.0 --port 8080 "$@"
        ;;
    migrate)
        exec mailsvc migrate "$@"
        ;;
    help | -h | --help)
        usage
        echo
        exec mailsvc --help
        ;;
    *)
        exec mailsvc "$cmd" "$@"
        ;;
esac
