# lvsha: set-up and checks for a Debian 12 machine, run as root.
#   make drill   install what is needed, validate the shipped configurations
#   make test    install what is needed, run ruff, mypy --strict and the whole test suite,
#                then the real-IPVS tests inside a VM running Debian's kernel
# Every step is idempotent: apt runs only for missing packages, pip only when
# pyproject.toml changed.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin

# Debian packages the code and the tests use: Python and venv; iproute2 for network
# namespaces and iputils-ping to probe them; systemd for `systemd-analyze verify`; openssl
# for test certificates.
APT_PACKAGES := python3 python3-venv python3-pip iproute2 iputils-ping systemd openssl \
  ca-certificates
# The real-IPVS tests boot Debian's kernel (which has ip_vs) under qemu with virtme-ng:
# qemu, busybox and udev for the guest, ipvsadm as the independent reader of the table.
# tiny-initramfs satisfies the kernel's initramfs dependency without initramfs-tools.
APT_PACKAGES += qemu-system-x86 busybox-static udev linux-image-amd64 tiny-initramfs ipvsadm
# keepalived is the VRRP peer of the interop tests; nftables splits brains on purpose.
APT_PACKAGES += keepalived nftables

.PHONY: apt venv lint typecheck test drill reference clean

apt:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "install ok installed" \
	    || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

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

test: lint typecheck
	$(BIN)/pytest
	$(BIN)/python tests/vm/run_in_vm.py

drill: venv
	$(BIN)/lvsha check-config conf/*.yaml conf/lab/*.yaml

# Regenerate conf/REFERENCE.md after changing the configuration model.
reference: venv
	$(BIN)/python -m lvsha.config.reference > conf/REFERENCE.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
