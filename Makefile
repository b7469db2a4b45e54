# make test:         ./setup.sh test (the install, the test suite and mypy; what .ci/run runs)
# make conformance:  the two external suites of $(CONFORMANCE) against the installed CLI,
#                    .venv/bin/aioruntime (./setup.sh makes it), as root; not run by .ci/run.
#                    Logs under conformance-results/; the counts are printed at the end.
#                    Fails when a suite cannot run or a manager step fails (the README lists
#                    the validation assertions every runtime fails on this machine).
#                    Needs apt (set SKIP_APT=1 in the environment once the packages are in).
SHELL := /bin/bash
CONFORMANCE ?= ../shared/conformance
RESULTS ?= conformance-results
RUNTIME ?= $(abspath .venv/bin/aioruntime)
OUT := $(abspath $(RESULTS))

.PHONY: test conformance hugetlb-v1

test:
	./setup.sh test

# The OCI hugetlb programs need the controller mounted: on a hybrid machine where no
# hierarchy holds it (v1 mount or the unified one), mount it as a v1 hierarchy.
hugetlb-v1:
	@if grep -q "^hugetlb\s" /proc/cgroups \
	  && ! awk '$$3 == "cgroup" && $$4 ~ /(^|,)hugetlb(,|$$)/ { found = 1 } END { exit !found }' /proc/mounts \
	  && ! cat /sys/fs/cgroup/cgroup.controllers /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null | grep -qw hugetlb; then \
	  echo "mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb"; \
	  mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb; \
	fi

conformance: hugetlb-v1
	@test -x $(RUNTIME) || { echo "make conformance: no $(RUNTIME): run ./setup.sh first" >&2; exit 2; }
	@test -x $(CONFORMANCE)/oci-validation.sh || { echo "make conformance: no suites in $(CONFORMANCE): set CONFORMANCE=DIR" >&2; exit 2; }
	rm -rf $(OUT) && mkdir -p $(OUT)
	RESULTS_DIR=$(OUT)/oci-validation $(CONFORMANCE)/oci-validation.sh $(RUNTIME) 2>&1 \
	  | tee $(OUT)/oci-validation.out; echo $${PIPESTATUS[0]} > $(OUT)/oci-validation.rc
	$(CONFORMANCE)/managers/setup.sh --criu 2>&1 | tee $(OUT)/managers-setup.out; exit $${PIPESTATUS[0]}
	E2E_LOG_DIR=$(OUT)/managers $(CONFORMANCE)/managers/run-e2e.sh $(RUNTIME) --docker --checkpoint 2>&1 \
	  | tee $(OUT)/managers.out; echo $${PIPESTATUS[0]} > $(OUT)/managers.rc
	@echo "== conformance (logs in $(OUT))"
	@echo "OCI validation: $$(tail -n 1 $(OUT)/oci-validation.out)"
	@grep -E "^[a-z]+: [0-9]+ steps" $(OUT)/managers.out | awk '!seen[$$0]++' || true
	@# the validation suite exits 1 when any assertion fails (runc and crun fail some here, see
	@# the README), 2 when it could not run; a manager step that fails is a failure
	@test "$$(cat $(OUT)/oci-validation.rc)" != 2 && test "$$(cat $(OUT)/managers.rc)" = 0
