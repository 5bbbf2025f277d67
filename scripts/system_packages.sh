#!/bin/sh
# What the sandbox's isolated network needs from the system: pasta, and a /dev/net/tun any uid
# opens. Without them the executor's default (EXECUTOR_SANDBOX_NETWORK=auto) falls back to the
# host's network and warns; so this never fails the set-up, it says what is missing.
set -u

if [ "$(id -u)" != 0 ]; then
	if ! command -v pasta >/dev/null 2>&1 || [ ! -r /dev/net/tun ] || [ ! -w /dev/net/tun ]; then
		echo "sandbox network: install Debian's passt (pasta) and make /dev/net/tun mode 0666 (as root: $0)"
	fi
	exit 0
fi
if ! command -v pasta >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
	export DEBIAN_FRONTEND=noninteractive
	# A fresh machine may have no package lists yet.
	apt-get install -y -qq passt >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq passt >/dev/null 2>&1; } ||
		echo "sandbox network: passt could not be installed"
fi
if [ ! -e /dev/net/tun ]; then
	mkdir -p /dev/net && mknod -m 0666 /dev/net/tun c 10 200 2>/dev/null ||
		echo "sandbox network: /dev/net/tun is missing and could not be made"
fi
# Debian's own default mode: workers' pasta runs under their own uid, never root.
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
	chmod 0666 /dev/net/tun || echo "sandbox network: /dev/net/tun could not be made mode 0666"
fi
exit 0
