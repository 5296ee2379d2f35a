# lvsha: set-up and checks for a Debian 12 machine, run as root.
#   make drill   install what is needed, validate the shipped configurations and run the
#                failover drill on the two-director lab in network namespaces
#   make test    install what is needed, run ruff, mypy --strict and the whole test suite,
#                then the real-IPVS tests inside a VM running Debian's kernel
# Every step is idempotent: apt runs only for missing packages, pip only when
# pyproject.toml changed.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin

# Debian packages lvsha itself needs: Python and venv, iproute2 (namespaces for the drill).
APT_RUN := python3 python3-venv python3-pip iproute2 ca-certificates
# ... and the tests: iputils-ping to probe namespaces, systemd for `systemd-analyze verify`,
# openssl for test certificates, keepalived as the VRRP peer of the interop tests, nftables
# to split brains on purpose (and for accept: false, which lvsha runs only when asked), dnsmasq as the DNS server of the check tests. The real-IPVS
# tests boot Debian's kernel (which has ip_vs) under qemu with virtme-ng: qemu, busybox
# and udev for the guest, ipvsadm as the independent reader of the table; tiny-initramfs
# satisfies the kernel's initramfs dependency without initramfs-tools. prometheus brings
# promtool, which checks the /metrics exposition. frr is the routing daemon lvsha drives for
# BGP announcements, and the router of the BGP tests.
APT_TEST := $(APT_RUN) iputils-ping systemd openssl keepalived nftables dnsmasq-base \
  qemu-system-x86 busybox-static udev linux-image-amd64 tiny-initramfs ipvsadm prometheus frr

.PHONY: apt apt-test venv lint typecheck test drill reference clean

# Install whichever of the packages in $(1) are missing; nothing (not even apt-get
# update) when all are there.
define apt_install
	@missing=""; \
	for pkg in $(1); do \
	  dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "install ok installed" \
	    || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

apt:
	$(call apt_install,$(APT_RUN))

apt-test:
	$(call apt_install,$(APT_TEST))

venv: apt $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

test: apt-test lint typecheck
	$(BIN)/pytest
	$(BIN)/python tests/vm/run_in_vm.py

drill: venv
	$(BIN)/lvsha check-config conf/*.yaml conf/lab/*.yaml
	$(BIN)/lvsha drill

# Regenerate conf/REFERENCE.md after changing the configuration model.
reference: venv
	$(BIN)/python -m lvsha.config.reference > conf/REFERENCE.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
