# zerostart build. `make` builds build/rel/zerostart; `make demo` and `make test` also
# install what is missing (Debian packages, a Python venv for test tools) first.
#
#   ZS_CUDA=1|0   build the CUDA path (default: 1 when $(CUDA_HOME)/bin/nvcc exists)
#   STATIC_DEPS=1 link jansson/pcre2 statically (for machines without those libraries)

SHELL      := /bin/bash
CUDA_HOME  ?= /usr/local/cuda
NVCC       ?= $(CUDA_HOME)/bin/nvcc
ZS_CUDA    ?= $(if $(wildcard $(NVCC)),1,0)
CUDA_ARCH  ?= sm_90
CC         ?= gcc
CLANG      ?= clang
PYTHON     ?= python3
VENV       := .venv
VPY        := $(VENV)/bin/python
DEBS       := libjansson-dev libpcre2-dev libmicrohttpd-dev libxxhash-dev libssl-dev pkg-config clang libclang-rt-dev
PKGS       := jansson libpcre2-8 libmicrohttpd libxxhash libcrypto
FUZZ_SECONDS ?= 20

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
ifeq ($(STATIC_DEPS),1)
# Static archives of the Debian libraries; libmicrohttpd's own TLS dependency (gnutls) stays
# dynamic: it is part of common base images, unlike the -dev libraries.
PKG_LIBS   := -Wl,-Bstatic -ljansson -lpcre2-8 -lxxhash -lmicrohttpd -lcrypto -Wl,-Bdynamic -lgnutls
else
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
endif

WARN       := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wformat=2 -Wvla
BASE_CFLAGS := -std=c17 -D_GNU_SOURCE $(WARN) -Iinclude -Isrc -pthread $(PKG_CFLAGS)
BASE_LIBS  := $(PKG_LIBS) -lpthread -lm

ALL_SRC    := $(sort $(shell find src -name '*.c' -not -path 'src/cli/*'))
CUDA_C_SRC := $(filter src/gpu/cuda_%.c,$(ALL_SRC))
NOCUDA_SRC := $(filter src/gpu/none_%.c,$(ALL_SRC))
CU_SRC     := $(sort $(shell find src -name '*.cu'))
CLI_SRC    := $(sort $(wildcard src/cli/*.c))
UNIT_SRC   := $(sort $(wildcard tests/unit/test_*.c))
FUZZ_SRC   := $(sort $(wildcard tests/fuzz/fuzz_*.c))
HEADERS    := $(shell find include src tests/unit -name '*.h')

# Library sources for a CUDA build and for a build without CUDA.
LIB_SRC_CUDA   := $(filter-out $(NOCUDA_SRC),$(ALL_SRC))
LIB_SRC_NOCUDA := $(filter-out $(CUDA_C_SRC),$(ALL_SRC))

ifeq ($(ZS_CUDA),1)
REL_LIB_SRC := $(LIB_SRC_CUDA)
REL_CU      := $(CU_SRC)
REL_CFLAGS  := -DZS_HAVE_CUDA=1 -I$(CUDA_HOME)/include
REL_LIBS    := -L$(CUDA_HOME)/lib64 -lcublas -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart_static -lstdc++ -ldl -lrt
else
REL_LIB_SRC := $(LIB_SRC_NOCUDA)
REL_CU      :=
REL_CFLAGS  := -DZS_HAVE_CUDA=0
REL_LIBS    :=
endif

# --- release build -------------------------------------------------------------------
REL        := build/rel
REL_OBJ    := $(REL_LIB_SRC:%.c=$(REL)/%.o) $(REL_CU:%.cu=$(REL)/%.cu.o)
ZS_BIN     := $(REL)/zerostart

.PHONY: all deps venv demo test test-build test-gpu gpu-build clean fuzz
all: $(ZS_BIN)

$(REL)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(REL_CFLAGS) -O2 -g -c $< -o $@

$(REL)/%.cu.o: %.cu $(HEADERS)
	@mkdir -p $(dir $@)
	$(NVCC) -std=c++17 -O3 -arch=$(CUDA_ARCH) -Iinclude -Isrc -Xcompiler -Wall,-Wextra,-Werror -c $< -o $@

$(REL)/libzs.a: $(REL_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(ZS_BIN): $(CLI_SRC:%.c=$(REL)/%.o) $(REL)/libzs.a
	$(CC) -pthread -o $@ $^ $(BASE_LIBS) $(REL_LIBS)

# --- sanitizer build for tests (no CUDA: CI has no GPU, and ASan and the CUDA runtime clash) --
ASAN       := build/asan
SAN_FLAGS  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ASAN_OBJ   := $(LIB_SRC_NOCUDA:%.c=$(ASAN)/%.o)
UNIT_BINS  := $(UNIT_SRC:tests/unit/%.c=$(ASAN)/tests/%)

$(ASAN)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -DZS_HAVE_CUDA=0 -O1 -g $(SAN_FLAGS) -c $< -o $@

$(ASAN)/libzs.a: $(ASAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(ASAN)/tests/%: tests/unit/%.c $(ASAN)/libzs.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -DZS_HAVE_CUDA=0 -Itests/unit -O1 -g $(SAN_FLAGS) -o $@ $< $(ASAN)/libzs.a $(BASE_LIBS)

$(ASAN)/zerostart: $(CLI_SRC:%.c=$(ASAN)/%.o) $(ASAN)/libzs.a
	$(CC) $(SAN_FLAGS) -pthread -o $@ $^ $(BASE_LIBS)

# --- libFuzzer targets (clang, no CUDA) ----------------------------------------------
FUZZ       := build/fuzz
FUZZ_FLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
FUZZ_OBJ   := $(LIB_SRC_NOCUDA:%.c=$(FUZZ)/%.o)
FUZZ_BINS  := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ)/%)

$(FUZZ)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CLANG) $(BASE_CFLAGS) -Wno-unknown-warning-option -DZS_HAVE_CUDA=0 -O1 -g $(FUZZ_FLAGS) -c $< -o $@

$(FUZZ)/libzs.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ)/libzs.a
	@mkdir -p $(dir $@)
	$(CLANG) $(BASE_CFLAGS) -DZS_HAVE_CUDA=0 -O1 -g -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ)/libzs.a $(BASE_LIBS)

fuzz: $(FUZZ_BINS)

# --- set-up ---------------------------------------------------------------------------
deps:
	@if ! pkg-config --exists $(PKGS) || ! command -v $(CLANG) >/dev/null \
	    || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then \
	  echo "deps: installing $(DEBS)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(DEBS) >/dev/null; \
	fi

$(VENV)/.stamp: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r tests/requirements.txt
	touch $@

venv: $(VENV)/.stamp

# --- user-facing jobs -------------------------------------------------------------------
demo: deps
	$(MAKE) $(ZS_BIN)
	$(ZS_BIN) demo --dir build/demo-model
	$(PYTHON) tools/demo_serve.py $(ZS_BIN) build/demo-model

test: deps venv
	$(MAKE) test-build
	bash tests/run_all.sh

test-build: $(ZS_BIN) $(ASAN)/zerostart $(UNIT_BINS) $(FUZZ_BINS)
	$(MAKE) ZS_CUDA=0 REL=build/nocuda build/nocuda/zerostart

$(REL)/test_gpu_loader: tests/gpu/test_gpu_loader.c $(REL)/libzs.a $(HEADERS)
	$(CC) $(BASE_CFLAGS) $(REL_CFLAGS) -Itests/unit -O1 -g -o $@ $< $(REL)/libzs.a $(BASE_LIBS) $(REL_LIBS)

$(REL)/test_cuda_engine: tests/gpu/test_cuda_engine.c $(REL)/libzs.a $(HEADERS)
	$(CC) $(BASE_CFLAGS) $(REL_CFLAGS) -Itests/unit -O1 -g -o $@ $< $(REL)/libzs.a $(BASE_LIBS) $(REL_LIBS)

gpu-build: $(ZS_BIN) $(REL)/test_gpu_loader $(REL)/test_cuda_engine

test-gpu: gpu-build
	ZS_BIN=$(ZS_BIN) bash tests/gpu/run.sh

clean:
	rm -rf build
