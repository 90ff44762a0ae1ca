#!/bin/sh
# Refuses to start the aerialdet stack with a placeholder or a short secret.
#
#   sh deploy/check-env.sh [EXAMPLE_FILE]
#
# docker-compose.yml runs it (from the image, as the one-shot service
# check-env) before every service that holds a secret. It reads
# RAY_AUTH_TOKEN, MINIO_ROOT_PASSWORD and S3_SECRET_KEY from the environment
# and refuses, with one line per problem naming the variable, a value that is
# unset, still contains the .env.example placeholder `replace-with`, equals
# the value EXAMPLE_FILE (the .env.example) gives it, or is shorter than 32
# characters (the token) or 24 (the passwords). Values are never printed.
# Exit status: 0 all accepted, 1 a secret refused, 2 EXAMPLE_FILE unreadable.
set -u

example=${1:-}
if [ -n "$example" ] && [ ! -r "$example" ]; then
  echo "check-env: cannot read $example (the .env.example to compare with); pass a readable file or none" >&2
  exit 2
fi
failed=0

refuse() { # NAME PROBLEM HOW
  echo "check-env: $1 in .env $2; replace it with a fresh secret: $3" >&2
  failed=1
}

check() { # NAME MIN_CHARS HOW
  name=$1
  min=$2
  how=$3
  eval "value=\${$name-}"
  if [ -z "$value" ]; then
    refuse "$name" "is not set" "$how"
    return
  fi
  case $value in
    *replace-with*)
      refuse "$name" "is still the placeholder from .env.example" "$how"
      return
      ;;
  esac
  if [ -n "$example" ]; then
    example_value=$(sed -n "s/^$name=//p" "$example" | tail -n 1)
    if [ -n "$example_value" ] && [ "$value" = "$example_value" ]; then
      refuse "$name" "is the value from .env.example, which is public" "$how"
      return
    fi
  fi
  if [ "${#value}" -lt "$min" ]; then
    refuse "$name" "is ${#value} characters long, shorter than $min" "$how"
  fi
}

check RAY_AUTH_TOKEN 32 "openssl rand -hex 32"
check MINIO_ROOT_PASSWORD 24 "openssl rand -hex 24"
check S3_SECRET_KEY 24 "openssl rand -hex 24"

if [ "$failed" -eq 0 ]; then
  echo "check-env: RAY_AUTH_TOKEN, MINIO_ROOT_PASSWORD and S3_SECRET_KEY accepted"
fi
exit "$failed"
