# The two commands of the README: `make demo` and `make test`. Both do the whole set-up first (apt packages,
# the virtualenv, guest assets) and are quick when it is already done.

SHELL := /bin/bash
PYTHON_SYS ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
ISOLA := $(VENV)/bin/isola
PYTEST_ARGS ?=

# Debian packages the project needs on the host. Guest assets are *not* here: `isola assets fetch` downloads
# those without installing them.
APT_PACKAGES := python3 python3-venv python3-dev ca-certificates apt dpkg xz-utils zstd \
	cpio iproute2 libseccomp2 util-linux \
	binutils-riscv64-linux-gnu gcc libc6-dev gcc-riscv64-linux-gnu qemu-user qemu-system-x86 acpica-tools \
	golang-github-opencontainers-specs-dev runc python3-jsonschema podman crun

.PHONY: all setup apt venv assets demo test test-nested bench-vmm lint clean

all: setup

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

venv: apt $(VENV)/.installed

assets: venv
	$(ISOLA) assets fetch --all

setup: apt venv assets

demo: setup
	$(ISOLA) doctor
	$(ISOLA) tour

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) test-nested

# Tests that need a hardware-assisted KVM (pytest -m real_kvm) run inside the nested lane's L1: Debian's kernel
# under QEMU/TCG with an AMD CPU that has SVM, so L1's /dev/kvm is kvm_amd (isola.vmm.nested). On a host with
# VMX/SVM they also run directly in `make test`. Two plugins are left out in L1: they cost ~20 s of start-up
# under TCG.
NESTED_TESTS ?= tests/nested tests/integration/test_process_vm_svm.py tests/integration/test_kvm_linux.py tests/integration/test_kvm_vmlinux.py tests/integration/test_vmm_cli.py tests/integration/test_vmm_api_socket.py tests/integration/test_kvm_keyboard.py tests/integration/test_kvm_virtio.py
NESTED_TIMEOUT ?= 1500
NESTED_PYTEST := -p no:cacheprovider -p no:anyio -p no:hypothesispytest -m real_kvm

test-nested: setup
	$(PY) -m isola.vmm.nested --timeout $(NESTED_TIMEOUT) --retries 2 -- \
		python -m pytest $(NESTED_PYTEST) $(NESTED_TESTS)

# isola-vmm beside QEMU (-M microvm -enable-kvm) in the nested lane's L1: boot to /init, virtio-blk read MB/s,
# VMM RSS; writes bench/results/vmm.json and vmm.png (docs/vmm.md, Benchmarks). A few minutes.
BENCH_VMM_ARGS ?=
bench-vmm: setup
	$(PY) bench/vmm_bench.py $(BENCH_VMM_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
