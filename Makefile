# pt — one GNU Makefile.
#
#   make            build everything into build/ (installs missing Debian
#                   packages first)
#   make test       the whole suite: unit tests, fault scenarios, ASan/UBSan
#   make demo       the main job: a cluster on loopback, a trainer and the
#                   controller killed mid-run, restored (demo-node: one node)
#   make bench      ptbench at full size
#   make fuzz       libFuzzer on frame parsing, message decoding, handshake,
#                   bulk headers, and bulk frames through a real conn, 60 s
#   make install    PREFIX=/usr/local DESTDIR=
#   make deps       install the Debian packages the build needs (idempotent)
#
# V=1 shows full commands. Local overrides go in config.mak.

-include config.mak

BUILD    ?= build
PREFIX   ?= /usr/local
DESTDIR  ?=
CC       ?= cc
NVCC     ?= $(shell command -v nvcc 2>/dev/null)
CUDA     ?= $(if $(NVCC),yes,no)
SAN      ?= no
OPT      ?= -O2

DEPS_PKGS := libisal-dev libuv1-dev libprotobuf-c-dev protobuf-c-compiler \
             check libsystemd-dev libsodium-dev pkg-config systemd \
             python3 python3-dev python3-venv
FUZZ_PKGS := clang libclang-rt-14-dev

CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g $(OPT) -Wall -Wextra -fPIC -pthread \
               -MMD -MP -I. -Iclient
ifeq ($(SAN),yes)
CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer \
               -fno-sanitize-recover=undefined
LDFLAGS_SAN := -fsanitize=address,undefined
endif
CFLAGS  += $(CFLAGS_BASE)
LDFLAGS += -pthread $(LDFLAGS_SAN)
LIBS     = -lisal -lprotobuf-c -lrt -lm
DLIBS    = -luv -lsystemd -lsodium $(LIBS)
TLIBS    = $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit)

ifeq ($(V),1)
Q :=
say :=@true
else
Q := @
say = @printf '  %-7s %s\n'
endif

# ---- sources -------------------------------------------------------------

PROTO_C   := rpc/pt.pb-c.c
RPC_LIB   := rpc/rpc_frame.c rpc/rpc_sock.c $(PROTO_C)
RPC_UV    := $(filter-out $(RPC_LIB),$(wildcard rpc/*.c))
SNAP_SRC  := $(wildcard snapshot/*.c)
EC_SRC    := $(wildcard ec/*.c)
KERN_CPU  := kernels/kernels_cpu.c kernels/kernels_host.c
KERN_CUDA := $(wildcard kernels/*.cu)
CLIENT    := $(filter-out client/ptctl%.c,$(wildcard client/*.c))
# ptctl: its main in ptctl.c, its parts in ptctl_*.c (also for its tests)
PTCTL_SRC := $(wildcard client/ptctl_*.c)
# common/: what every layer uses. libpt takes the errors, the clock and
# CRC32C; the daemons also the log and the state-file writer.
COMMON_LIB := common/pt_error.c common/monotime.c common/crc32c.c
COMMON_D  := $(filter-out $(COMMON_LIB),$(wildcard common/*.c))
# daemon/: ptd's roles, one folder each (smp/, node/, commit/), and what
# they share at the top.
DAEMON    := $(filter-out daemon/ptd_main.c,$(wildcard daemon/*.c daemon/*/*.c))

# libpt: what a trainer links. No libuv, no daemon code.
LIBPT_SRC := $(COMMON_LIB) $(CLIENT) $(SNAP_SRC) $(RPC_LIB) $(KERN_CPU)
# everything but the mains, for the daemons, tools and tests
CORE_SRC  := $(sort $(LIBPT_SRC) $(COMMON_D) $(RPC_UV) $(EC_SRC) $(DAEMON))

TRAIN_SRC := $(wildcard tests/trainer/*.c)
BENCH_SRC := $(wildcard tests/bench/*.c)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_COMMON := $(filter-out $(UNIT_SRC),$(wildcard tests/unit/*.c))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIBPT_OBJ := $(call obj,$(LIBPT_SRC))
CORE_OBJ  := $(call obj,$(CORE_SRC))
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

BINS := $(BUILD)/bin/ptd $(BUILD)/bin/ptctl $(BUILD)/bin/pt-train $(BUILD)/bin/ptbench \
        $(BUILD)/tests/pt-ec-verify $(BUILD)/tests/pt-peer-hostile
LIBS_OUT := $(BUILD)/lib/libpt.so $(BUILD)/lib/libpt.so.0 $(BUILD)/lib/libpt.a
ifeq ($(CUDA),yes)
ifneq ($(KERN_CUDA),)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
LIBS_OUT += $(BUILD)/lib/libpt_cuda.so $(BUILD)/lib/libpt_cuda.so.0 $(BUILD)/lib/libpt_cuda.a
endif
endif
# libpt exports the pt_* functions of pt.h only (client/libpt.map).
LIBPT_MAP := client/libpt.map
LIBPT_LDFLAGS = -Wl,--version-script=$(LIBPT_MAP)

.PHONY: all deps test unit unit-bins scenarios soak demo demo-node bench fuzz install clean proto gpu-test python
# keep intermediate objects (test objects are only reached through patterns)
.SECONDARY:
all: $(BINS) $(LIBS_OUT) $(UNIT_BINS)

# ---- packages ------------------------------------------------------------

# Installs only what is missing; a set-up machine pays one dpkg-query.
define apt_ensure
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "  APT    $$missing"; \
	  sudo= ; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null || exit 1; \
	fi
endef

deps: $(BUILD)/.deps
$(BUILD)/.deps: Makefile
	$(call apt_ensure,$(DEPS_PKGS))
	@mkdir -p $(@D) && touch $@

# ---- generated code --------------------------------------------------------

# Committed; regenerated only when the schema changes and protoc-c exists.
rpc/pt.pb-c.c rpc/pt.pb-c.h: rpc/pt.proto | $(BUILD)/.deps
	$(Q)if command -v protoc-c >/dev/null; then \
	  printf '  %-7s %s\n' PROTOC $<; protoc-c --c_out=. $<; \
	else touch $@; fi
proto: rpc/pt.pb-c.c

# ---- compile ---------------------------------------------------------------

$(BUILD)/obj/%.o: %.c | $(BUILD)/.deps rpc/pt.pb-c.h
	$(say) CC $<
	$(Q)mkdir -p $(@D) && $(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.cu.o: %.cu kernels/kernels.h $(wildcard kernels/*.cuh)
	$(say) NVCC $<
	$(Q)mkdir -p $(@D) && $(NVCC) -O2 -std=c++17 -Xcompiler -fPIC -I. -Iclient -c $< -o $@

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- link ------------------------------------------------------------------

$(BUILD)/lib/libpt.a: $(LIBPT_OBJ)
	$(say) AR $@
	$(Q)mkdir -p $(@D) && rm -f $@ && ar rcs $@ $^

$(BUILD)/lib/libpt.so: $(LIBPT_OBJ) $(LIBPT_MAP)
	$(say) LD $@
	$(Q)mkdir -p $(@D) && $(CC) -shared -Wl,-soname,libpt.so.0 $(LIBPT_LDFLAGS) $(LDFLAGS) \
	  -o $@ $(filter %.o,$^) $(LIBS)

# The soname, so that a program linked against the build tree runs from it.
$(BUILD)/lib/%.so.0: $(BUILD)/lib/%.so
	$(Q)ln -sf $(<F) $@

$(BUILD)/lib/libptcore.a: $(CORE_OBJ)
	$(say) AR $@
	$(Q)mkdir -p $(@D) && rm -f $@ && ar rcs $@ $^

$(BUILD)/lib/libpt_cuda.so: $(filter-out $(call obj,$(KERN_CPU)),$(LIBPT_OBJ)) \
                            $(call obj,kernels/kernels_host.c) \
                            $(patsubst %.cu,$(BUILD)/obj/%.cu.o,$(KERN_CUDA)) \
                            $(LIBPT_MAP)
	$(say) LD $@
	$(Q)mkdir -p $(@D) && $(CC) -shared -Wl,-soname,libpt_cuda.so.0 $(LIBPT_LDFLAGS) \
	  $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIBS) -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lstdc++

# The same objects as an archive, for the Python package's CUDA build
# (PT_CUDA=1: client/python/setup.py links it with -lcudart).
$(BUILD)/lib/libpt_cuda.a: $(filter-out $(call obj,$(KERN_CPU)),$(LIBPT_OBJ)) \
                           $(call obj,kernels/kernels_host.c) \
                           $(patsubst %.cu,$(BUILD)/obj/%.cu.o,$(KERN_CUDA))
	$(say) AR $@
	$(Q)mkdir -p $(@D) && rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/ptd: $(call obj,daemon/ptd_main.c) $(BUILD)/lib/libptcore.a
	$(say) LD $@
	$(Q)mkdir -p $(@D) && $(CC) $(LDFLAGS) -o $@ $^ $(DLIBS)

$(BUILD)/bin/ptctl: $(call obj,client/ptctl.c $(PTCTL_SRC)) $(BUILD)/lib/libptcore.a
	$(say) LD $@
	$(Q)mkdir -p $(@D) && $(CC) $(LDFLAGS) -o $@ $^ $(DLIBS)

$(BUILD)/bin/pt-train: $(call obj,$(TRAIN_SRC)) $(BUILD)/lib/libpt.a
	$(say) LD $@
	$(Q)mkdir -p $(@D) && $(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# Test tools (tests/tools/): run by the scenarios, not installed.
$(BUILD)/tests/pt-ec-verify: $(call obj,tests/tools/pt_ec_verify.c) $(BUILD)/lib/libptcore.a
	$(say) LD $@
	$(Q)mkdir -p $(@D) && $(CC) $(LDFLAGS) -o $@ $^ $(DLIBS)

$(BUILD)/tests/pt-peer-hostile: $(call obj,tests/tools/pt_peer_hostile.c) $(BUILD)/lib/libptcore.a
	$(say) LD $@
	$(Q)mkdir -p $(@D) && $(CC) $(LDFLAGS) -o $@ $^ $(DLIBS)

$(BUILD)/bin/ptbench: $(call obj,$(BENCH_SRC)) $(BUILD)/lib/libptcore.a
	$(say) LD $@
	$(Q)mkdir -p $(@D) && $(CC) $(LDFLAGS) -o $@ $^ $(DLIBS)

# A unit test tests/unit/test_<mod>[_topic].c links only its module's objects
# when MOD_<mod> names them (so each module builds and tests alone), else all.
MOD_common := $(COMMON_LIB) $(COMMON_D)
MOD_ec     := $(EC_SRC) $(COMMON_LIB) $(KERN_CPU)
MOD_snap   := $(SNAP_SRC) $(COMMON_LIB) $(KERN_CPU)
MOD_kern   := $(KERN_CPU) $(COMMON_LIB)
MOD_rpc    := $(RPC_LIB) $(RPC_UV) $(COMMON_LIB) tests/unit/fixture/rpc_tcp_srv.c
MOD_ptctl  := $(PTCTL_SRC) $(CORE_SRC)
MOD_smp    := $(CORE_SRC) tests/unit/fixture/smp_fx.c
MOD_ctl    := $(CORE_SRC) tests/unit/fixture/ctl_fx.c
test_mod    = $(call obj,$(or $(MOD_$(firstword $(subst _, ,$(1)))),$(CORE_SRC)))

.SECONDEXPANSION:
$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(call obj,$(UNIT_COMMON)) $$(call test_mod,$$*)
	$(say) LD $@
	$(Q)mkdir -p $(@D) && $(CC) $(LDFLAGS) -o $@ $^ $(DLIBS) $(TLIBS)

# The CUDA backend against the CPU oracle (tests/gpu): built where nvcc
# exists; the binary exits 77 when no GPU is usable.
GPU_TEST := $(BUILD)/tests/gpu/gpu_kern_test
ifneq ($(NVCC),)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
gpu-test: $(GPU_TEST)
$(GPU_TEST): $(BUILD)/obj/tests/gpu/gpu_kern_test.cu.o \
             $(patsubst %.cu,$(BUILD)/obj/%.cu.o,$(KERN_CUDA)) \
             $(call obj,kernels/kernels_host.c $(COMMON_LIB))
	$(say) LD $@
	$(Q)mkdir -p $(@D) && $(CC) $(LDFLAGS) -o $@ $^ $(LIBS) \
	  -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lstdc++
else
gpu-test:
	@echo "gpu-test: nvcc not found" >&2; exit 1
endif

# ---- run -------------------------------------------------------------------

# The whole suite: unit tests, then the ASan/UBSan build of the unit tests,
# then the fault scenarios. Closes with "N passed, N failed, N skipped".
test: all
	$(Q)$(MAKE) --no-print-directory BUILD=build-asan SAN=yes CUDA=no OPT=-O1 unit-bins
	$(Q)tests/run.sh --build $(BUILD) --asan-build build-asan

unit: all
	$(Q)tests/run.sh --build $(BUILD) --only unit

unit-bins: $(UNIT_BINS)

scenarios: all
	$(Q)tests/run.sh --build $(BUILD) --only scenario

# A long fault campaign on a loopback cluster (tests/soak.sh): seeded
# campaigns of every fault class, one after the other, each ending with
# the digests against a fault-free run, for MINUTES minutes.
MINUTES ?= 30
soak: all
	$(Q)tests/soak.sh --build $(BUILD) --minutes $(MINUTES)

# The main job: a controller and 3 nodes on loopback, a trainer and then the
# controller killed, the digests against a fault-free run. demo-node: the
# single-node demo (ptd node alone, a trainer killed).
demo: all
	$(Q)tests/demo_cluster.sh $(BUILD)

demo-node: all
	$(Q)tests/demo.sh $(BUILD)

# The Python package (client/python, import names `pt` and `pt.torch`) into
# $(PYTHON)'s environment (a virtual environment's python, where the system's
# is externally managed), with libpt linked in (PT_BUILD tells setup.py
# where it is).
PYTHON ?= python3
python: all
	$(Q)$(PYTHON) -m pip --version >/dev/null 2>&1 || { echo "make python: $(PYTHON) has no pip: \
	  make python PYTHON=/path/to/venv/bin/python (python3 -m venv makes one)"; exit 1; }
	$(Q)PT_BUILD=$(abspath $(BUILD)) PT_ROOT=$(CURDIR) $(PYTHON) -m pip install ./client/python

bench: all
	$(Q)$(BUILD)/bin/ptbench

fuzz: $(BUILD)/.deps
	$(call apt_ensure,$(FUZZ_PKGS))
	$(Q)mkdir -p $(BUILD)/fuzz
	$(Q)clang -std=c11 -D_GNU_SOURCE -g -O1 -I. -Iclient -fsanitize=fuzzer,address,undefined \
	  -o $(BUILD)/fuzz/fuzz_frame tests/fuzz/fuzz_frame.c $(RPC_LIB) $(RPC_UV) \
	  $(COMMON_LIB) -luv -lisal -lprotobuf-c -lsodium
	$(Q)mkdir -p $(BUILD)/fuzz/corpus
	$(BUILD)/fuzz/fuzz_frame -max_total_time=$${FUZZ_SECONDS:-60} -print_final_stats=1 \
	  $(BUILD)/fuzz/corpus tests/fuzz/seeds

# ---- install ---------------------------------------------------------------

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib \
	  $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig \
	  $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 0755 $(BUILD)/bin/ptd $(BUILD)/bin/ptctl $(BUILD)/bin/pt-train \
	  $(BUILD)/bin/ptbench $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 $(BUILD)/lib/libpt.so $(DESTDIR)$(PREFIX)/lib/libpt.so.0
	ln -sf libpt.so.0 $(DESTDIR)$(PREFIX)/lib/libpt.so
	install -m 0644 $(BUILD)/lib/libpt.a $(DESTDIR)$(PREFIX)/lib/
	install -m 0644 client/pt.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|g' client/pt.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/pt.pc
	sed -e 's|@BINDIR@|$(PREFIX)/bin|g' systemd/ptd.service > \
	  $(DESTDIR)$(PREFIX)/lib/systemd/system/ptd.service
	install -d $(DESTDIR)$(PREFIX)/share/pt
	install -m 0644 systemd/ptd.default $(DESTDIR)$(PREFIX)/share/pt/ptd.default
	sed -e 's|@BINDIR@|$(PREFIX)/bin|g' systemd/ptd-controller.service > \
	  $(DESTDIR)$(PREFIX)/lib/systemd/system/ptd-controller.service
	install -m 0644 systemd/ptd-controller.default \
	  $(DESTDIR)$(PREFIX)/share/pt/ptd-controller.default
	if [ -f $(BUILD)/lib/libpt_cuda.so ]; then \
	  install -m 0755 $(BUILD)/lib/libpt_cuda.so $(DESTDIR)$(PREFIX)/lib/libpt_cuda.so.0 && \
	  ln -sf libpt_cuda.so.0 $(DESTDIR)$(PREFIX)/lib/libpt_cuda.so; fi

clean:
	rm -rf $(BUILD) build-asan
