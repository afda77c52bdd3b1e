# kvmlab.host_resources: developer, lab and CI entry points.
# `make demo` is the main job, `make test` runs every test (see README.md).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
PY          := $(VENV)/bin/python
BUILD       := .build
# The oldest ansible-core meta/runtime.yml claims (requirements-oldest.txt), under
# .build/ so that git (and the ansible-test tree made from git ls-files) ignores it.
VENV_OLDEST ?= $(BUILD)/venv-oldest
PY_OLDEST   := $(VENV_OLDEST)/bin/python
COLL_LINK   := $(BUILD)/collections/ansible_collections/kvmlab/host_resources
TEST_TREE   := $(BUILD)/ansible-test/ansible_collections/kvmlab/host_resources
LAB_DIR     ?= .lab
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

APT_PACKAGES := qemu-system-x86 qemu-utils mmdebstrap libvirt-daemon \
	libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config gcc \
	binutils openssh-client e2fsprogs rsync python3-venv

.PHONY: help deps apt venv collection-link test test-molecule-all test-unit test-sanity \
	test-units test-fast test-oldest test-molecule test-lint bench lab-up lab-down lab-status demo clean

help:
	@echo "make demo        build and boot the lab host, apply site.yml, print every layer's status"
	@echo "make test        unit, sanity, fast libvirt tier, oldest ansible-core and Molecule scenarios (what CI runs)"
	@echo "make lab-up      boot the lab host (Debian VM with libvirt and three guests)"
	@echo "make lab-down    stop the lab host and everything it started"
	@echo "make bench       rerunnable benchmarks (topology, pools, libvirt_pin, the role against virsh, the metrics collector; lab ones with KVMLAB_BENCH_INVENTORY)"

deps: apt venv collection-link

# Debian packages the harness needs; skipped when all are present.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# The collection under its FQCN for ansible-playbook (ansible.cfg points here).
collection-link:
	@mkdir -p $(dir $(COLL_LINK))
	@ln -sfn $(CURDIR) $(COLL_LINK)

# ansible-test needs a real ansible_collections/<ns>/<name> tree.
$(TEST_TREE): FORCE
	@rm -rf $(TEST_TREE) && mkdir -p $(TEST_TREE)
	@# the collection as it ships (galaxy.yml build_ignore) plus its unit and sanity tests;
	@# harness code (tools, molecule, CI, benchmarks, pytest integration tiers) is tested by pytest
	@# (docs/grafana stays: the dashboard ships and its unit test reads it)
	@(git ls-files -co --exclude-standard | grep -vE '^(\.build|\.ci|tools|molecule|docs|tests/(bench|integration))/'; \
		git ls-files -co --exclude-standard docs/grafana) \
		| rsync -a --files-from=- ./ $(TEST_TREE)/
	@# its own git index, so that ansible-test does not take this repository's ignores for it
	@cd $(TEST_TREE) && git init -q && git add -A
FORCE:

test: deps test-unit test-sanity test-units test-lint test-fast test-oldest test-molecule

test-unit: deps
	$(PY) -m pytest -q tests/unit

# ansible-test bootstraps pip in each of its venvs from a host these machines
# do not reach; give it a stand-in that uses ensurepip and PyPI instead.
ANSIBLE_TEST_GET_PIP := $(HOME)/.ansible/test/cache/get_pip_24_2.py
$(ANSIBLE_TEST_GET_PIP): tools/ansible-test-get-pip.py
	@mkdir -p $(dir $@) && cp $< $@

test-units: deps $(TEST_TREE) $(ANSIBLE_TEST_GET_PIP)
	cd $(TEST_TREE) && ansible-test units --venv --python 3.11 --color no

test-sanity: deps $(TEST_TREE) $(ANSIBLE_TEST_GET_PIP)
	cd $(TEST_TREE) && ansible-test sanity --venv --python 3.11 --color no

test-lint: deps
	ansible-lint --offline -q roles playbooks

test-fast: deps
	$(PY) -m pytest -q tests/integration/packaging tests/integration/playbooks tests/integration/fast

# The unit tier, the plan playbook and the installed-tarball tests under the
# oldest ansible-core that meta/runtime.yml claims, in a venv of its own.
$(VENV_OLDEST)/.stamp: requirements-oldest.txt
	rm -rf $(VENV_OLDEST)
	python3 -m venv $(VENV_OLDEST)
	@start=$$(date +%s.%N); $(PY_OLDEST) -m pip install -q -r requirements-oldest.txt && \
		awk -v a=$$start -v b=$$(date +%s.%N) 'BEGIN { printf "pip install (oldest ansible-core): %.1f s\n", b - a }'
	touch $@

test-oldest: collection-link $(VENV_OLDEST)/.stamp
	@$(VENV_OLDEST)/bin/ansible --version | head -n1
	PATH=$(CURDIR)/$(VENV_OLDEST)/bin:$$PATH $(PY_OLDEST) -m pytest -q -p no:cacheprovider \
		tests/unit tests/integration/playbooks tests/integration/packaging

# The scenarios CI runs, on one shared lab host (tools/run-molecule), in an
# order where each scenario that needs the host as booted follows one that
# leaves it so: one fresh boot, after host_resource_management (cpuset.cpus
# stays widened until a boot); contention, which leaves the foundation
# applied, last. `make test-molecule-all` runs every scenario, lab and
# metrics included (metrics is not yet proven green: see the closing note).
CI_SCENARIOS ?= memory shared_execution_pool lifecycle host_resource_management contention

test-molecule: deps
	tools/run-molecule $(CI_SCENARIOS)

test-molecule-all: deps
	tools/run-molecule

bench: deps
	$(PY) tests/bench/run_all.py

lab-up: deps
	tools/lab/lab-up --dir $(LAB_DIR)

lab-down:
	tools/lab/lab-down --dir $(LAB_DIR)

lab-status:
	tools/lab/lab-status --dir $(LAB_DIR)

demo: lab-up
	ansible-playbook -i $(LAB_DIR)/inventory.yml playbooks/site.yml
	ansible-playbook -i $(LAB_DIR)/inventory.yml playbooks/status.yml

clean: lab-down
	rm -rf $(BUILD)
