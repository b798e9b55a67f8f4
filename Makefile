# hagenkit: PGXS build.
#
#   make && make install      build and install the extension and hagen-compile
#   make installcheck         regress and isolation tests against a running
#                             server (see REGRESS below), and the TAP tests
#   dpkg-buildpackage -us -uc -b   the Debian package (debian/, pg_buildext)
#   test/run.sh               the whole test suite (what .ci/run calls)
#
# The install script sql/hagenkit--$(EXTVERSION).sql is built by
# concatenating src/sql/*.sql in name order; edit those, never the output.
# The other files in sql/ are pg_regress inputs.

EXTENSION = hagenkit
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)
MODULE_big = hagenkit
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
PGFILEDESC = "hagenkit - AI video pipeline inside PostgreSQL"

DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(filter-out $(DATA_built), $(wildcard sql/$(EXTENSION)--*.sql))

PG_CPPFLAGS = -std=gnu11 -Wall -Wextra \
	-isystem $(shell $(PG_CONFIG) --includedir-server) -DHAGEN_VERSION=\"$(EXTVERSION)\" -Isrc $(shell pkg-config --cflags libcurl openssl)
SHLIB_LINK = $(shell pkg-config --libs libcurl libcrypto)

# `make installcheck` runs the regress and isolation tests against the
# running server that PGHOST/PGPORT/PGUSER name (the PGXS convention); that
# server must have hagenkit preloaded and the settings of test/hagenkit.conf
# (`include` it in postgresql.conf): the expected outputs show them.
# TEMP_INSTANCE=1 makes pg_regress and the isolation tester start their own
# throwaway server with test/hagenkit.conf instead (what test/run.sh does).
# The TAP tests (test/t) always make their own clusters; TAP_TESTS= leaves
# them out.
REGRESS = api engine pipeline privileges storage hostile rooms projects models budgets music framing scale
ISOLATION = concurrent_start concurrent_claim notify concurrent_budget concurrent_cancel concurrent_complete
ISOLATION_OPTS = --inputdir=test --outputdir=output_iso
ifneq ($(TEMP_INSTANCE),)
REGRESS_OPTS += --temp-instance=tmp_check --temp-config=test/hagenkit.conf
ISOLATION_OPTS += --temp-instance=tmp_check_iso --temp-config=test/hagenkit.conf
endif
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl
# The provider simulators render 1280x720 clips by default (the demo's
# size); the TAP tests make dozens of clips each and take them at 320x180,
# a tenth of the time (test/sim/README.md).
export HAGEN_SIM_VIDEO_SIZE ?= small
EXTRA_CLEAN = tmp_check tmp_check_iso output_iso

# No LLVM bitcode: the JIT gains nothing here and it needs clang.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/$(EXTENSION)--$(EXTVERSION).sql: $(sort $(wildcard src/sql/*.sql))
	cat $^ > $@

# hagen-compile, the FFmpeg helper, has its own Makefile.
ifneq ($(wildcard src/hagen-compile/Makefile),)
all: hagen-compile
hagen-compile:
	$(MAKE) -C src/hagen-compile
install: install-hagen-compile
install-hagen-compile:
	$(MAKE) -C src/hagen-compile install
clean: clean-hagen-compile
clean-hagen-compile:
	$(MAKE) -C src/hagen-compile clean
.PHONY: hagen-compile install-hagen-compile clean-hagen-compile
endif
