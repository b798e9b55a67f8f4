#!/usr/bin/env bash
# Installs what hagenkit needs to build, test and run its demo on Debian 12,
# and nothing when everything is there already.  Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
	make gcc pkg-config
	postgresql-15 postgresql-server-dev-15
	libpq-dev
	libcurl4-openssl-dev libssl-dev
	libjansson-dev
	libavformat-dev libavcodec-dev libavfilter-dev libavutil-dev libswscale-dev libswresample-dev
	ffmpeg
	libipc-run-perl
	nodejs
	python3 python3-psycopg2 python3-pil fonts-dejavu-core
	curl
	awscli
	# the Debian package (debian/, pg_buildext) and test/t/013_package.pl
	dpkg-dev debhelper postgresql-server-dev-all lintian
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
# Node may come from another repository than Debian's; any node >= 18 with npm will do.
if command -v node >/dev/null && command -v npm >/dev/null; then
	missing=("${missing[@]/nodejs}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))

if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}" >&2
	if [ "$(id -u)" != 0 ]; then
		echo "deps: run as root to install packages" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if ! command -v npm >/dev/null; then
		apt-get install -y -qq --no-install-recommends npm >/dev/null
	fi
fi

# The npm test servers (pinned in package-lock.json).
if [ -f package-lock.json ]; then
	if [ ! -d node_modules/@20minutes/s3rver ] || [ package-lock.json -nt node_modules ]; then
		echo "deps: npm ci" >&2
		npm ci --no-audit --no-fund --loglevel=error >/dev/null
		touch node_modules
	fi
fi
