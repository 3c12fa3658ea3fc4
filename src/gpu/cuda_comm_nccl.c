/* NCCL communicator (engine/comm.h) for CUDA ranks, one GPU each, all in this process:
 * ncclCommInitAll over the ranks' devices, all-reduce (sum) and all-gather of float32 buffers
 * enqueued on each rank's backend stream. libnccl.so.2 is opened with dlopen at first use, so
 * the binary runs (and explains) where NCCL is absent. NVLink multicast is kept off
 * (NCCL_NVLS_ENABLE=0, set before the communicators are created). Every NCCL and CUDA call is
 * checked; errors name the rank and its GPU. Built only in CUDA builds
 * (none_comm_nccl.c stands in otherwise). */
#include <cuda_runtime.h>
#include <dlfcn.h>
/* nccl.h declares a few functions without prototypes (`f()`); only its types are used here */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/comm.h"

typedef struct nccl_api {
    ncclResult_t (*get_version)(int *version);
    ncclResult_t (*comm_init_all)(ncclComm_t *comms, int ndev, const int *devlist);
    ncclResult_t (*all_reduce)(const void *send, void *recv, size_t count, ncclDataType_t dt,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t st);
    ncclResult_t (*all_gather)(const void *send, void *recv, size_t count, ncclDataType_t dt,
                               ncclComm_t comm, cudaStream_t st);
    ncclResult_t (*comm_abort)(ncclComm_t comm);
    ncclResult_t (*comm_destroy)(ncclComm_t comm);
    const char *(*error_string)(ncclResult_t r);
} nccl_api_t;

typedef struct nccl_comm {
    zs_comm_t base;              /* first member */
    nccl_api_t api;
    ncclComm_t *comms;           /* [nranks] */
    int *devices;                /* [nranks] */
    atomic_int aborted;
} nccl_comm_t;

static nccl_comm_t *NC(zs_comm_t *c) { return (nccl_comm_t *)c; }

static int nccl_fail(const nccl_api_t *api, zs_err_t *err, ncclResult_t r, const char *what, int rank,
                     int dev) {
    return zs_err_set(err, ZS_ECUDA, "nccl: rank %d (GPU %d): %s: %s (ncclResult %d)", rank, dev, what,
                      api->error_string ? api->error_string(r) : "?", (int)r);
}

/* Loads libnccl.so.2 and resolves the entry points used here. */
static int nccl_load(nccl_api_t *api, zs_err_t *err) {
    dlerror();
    void *lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        const char *why = dlerror();
        return zs_err_set(err, ZS_EUNSUPPORTED,
                          "tensor parallel on GPUs needs NCCL: dlopen(libnccl.so.2) failed: %s (install NCCL, "
                          "or add the directory holding libnccl.so.2 to LD_LIBRARY_PATH)",
                          why ? why : "unknown error");
    }
    struct {
        const char *name;
        void **slot;
    } syms[] = {
        {"ncclGetVersion", (void **)&api->get_version},
        {"ncclCommInitAll", (void **)&api->comm_init_all},
        {"ncclAllReduce", (void **)&api->all_reduce},
        {"ncclAllGather", (void **)&api->all_gather},
        {"ncclCommAbort", (void **)&api->comm_abort},
        {"ncclCommDestroy", (void **)&api->comm_destroy},
        {"ncclGetErrorString", (void **)&api->error_string},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        *syms[i].slot = dlsym(lib, syms[i].name);
        if (*syms[i].slot == NULL) {
            /* the library stays loaded: NCCL may have started threads of its own */
            return zs_err_set(err, ZS_EUNSUPPORTED, "libnccl.so.2 has no %s (NCCL too old?)", syms[i].name);
        }
    }
    return ZS_OK;
}

/* The backend's stream for a collective writing [p, p + bytes) on `rank`. */
static int nccl_stream(nccl_comm_t *c, int rank, zs_backend_t *be, void *p, size_t bytes, cudaStream_t *st,
                       zs_err_t *err) {
    if (rank < 0 || rank >= c->base.nranks)
        return zs_err_set(err, ZS_EINVAL, "nccl: rank %d of %d", rank, c->base.nranks);
    if (atomic_load(&c->aborted))
        return zs_err_set(err, ZS_ECANCELED, "nccl: rank %d: the group was aborted", rank);
    if (be == NULL || be->device != ZS_DEV_CUDA || be->ops->collective_stream == NULL)
        return zs_err_set(err, ZS_EINVAL, "nccl: rank %d: the backend is not a CUDA backend", rank);
    void *s = NULL;
    int rc = be->ops->collective_stream(be, p, bytes, &s, err);
    if (rc != ZS_OK) return rc;
    if (s == NULL) return zs_err_set(err, ZS_EINVAL, "nccl: rank %d: the backend has no stream", rank);
    *st = (cudaStream_t)s;
    return ZS_OK;
}

static int nc_all_reduce(zs_comm_t *cm, int rank, zs_backend_t *be, float *buf, size_t n, zs_err_t *err) {
    nccl_comm_t *c = NC(cm);
    cudaStream_t st;
    int rc = nccl_stream(c, rank, be, buf, n * sizeof(float), &st, err);
    if (rc != ZS_OK) return rc;
    ncclResult_t r = c->api.all_reduce(buf, buf, n, ncclFloat32, ncclSum, c->comms[rank], st);
    return r == ncclSuccess ? ZS_OK : nccl_fail(&c->api, err, r, "ncclAllReduce", rank, c->devices[rank]);
}

static int nc_all_gather(zs_comm_t *cm, int rank, zs_backend_t *be, float *dst, const float *src, size_t n,
                         zs_err_t *err) {
    nccl_comm_t *c = NC(cm);
    cudaStream_t st;
    int rc = nccl_stream(c, rank, be, dst, n * (size_t)c->base.nranks * sizeof(float), &st, err);
    if (rc != ZS_OK) return rc;
    ncclResult_t r = c->api.all_gather(src, dst, n, ncclFloat32, c->comms[rank], st);
    return r == ncclSuccess ? ZS_OK : nccl_fail(&c->api, err, r, "ncclAllGather", rank, c->devices[rank]);
}

/* ncclCommAbort ends the collectives the other ranks are blocked in (their next stream
 * synchronisation then fails); the aborted communicators are not used again. No lock guards the
 * communicators against a rank that is entering a collective at that moment (NCCL wants abort
 * callable while other threads are blocked inside it): a failure path only, and the engine
 * refuses every later step. */
static void nc_abort(zs_comm_t *cm) {
    nccl_comm_t *c = NC(cm);
    if (atomic_exchange(&c->aborted, 1)) return;
    for (int r = 0; r < c->base.nranks && c->comms != NULL; r++)
        if (c->comms[r] != NULL) (void)c->api.comm_abort(c->comms[r]);
}

static void nc_destroy(zs_comm_t *cm) {
    nccl_comm_t *c = NC(cm);
    if (c == NULL) return;
    if (!atomic_load(&c->aborted) && c->comms != NULL)
        for (int r = 0; r < c->base.nranks; r++)
            if (c->comms[r] != NULL) {
                if (cudaSetDevice(c->devices[r]) != cudaSuccess) (void)cudaGetLastError();
                (void)c->api.comm_destroy(c->comms[r]);
            }
    free(c->comms);
    free(c->devices);
    free(c);
}

static const zs_comm_ops_t nccl_ops = {
    .name = "nccl",
    .destroy = nc_destroy,
    .all_reduce_sum = nc_all_reduce,
    .all_gather = nc_all_gather,
    .abort = nc_abort,
};

int zs_comm_nccl_create(int nranks, const int *devices, zs_comm_t **out, zs_err_t *err) {
    *out = NULL;
    if (nranks < 1 || devices == NULL) return zs_err_set(err, ZS_EINVAL, "nccl: %d ranks", nranks);
    int ndev = 0;
    cudaError_t ce = cudaGetDeviceCount(&ndev);
    if (ce != cudaSuccess) {
        (void)cudaGetLastError();
        return zs_err_set(err, ZS_ECUDA, "nccl: cudaGetDeviceCount: %s", cudaGetErrorString(ce));
    }
    for (int r = 0; r < nranks; r++) {
        if (devices[r] < 0 || devices[r] >= ndev)
            return zs_err_set(err, ZS_EINVAL, "nccl: rank %d: GPU %d does not exist (%d GPUs)", r, devices[r], ndev);
        for (int q = 0; q < r; q++)
            if (devices[q] == devices[r])
                return zs_err_set(err, ZS_EINVAL, "nccl: ranks %d and %d both on GPU %d", q, r, devices[r]);
    }
    nccl_comm_t *c = calloc(1, sizeof *c);
    if (c == NULL) return zs_err_set(err, ZS_ENOMEM, "nccl: out of memory");
    c->base.ops = &nccl_ops;
    c->base.nranks = nranks;
    c->comms = calloc((size_t)nranks, sizeof *c->comms);
    c->devices = calloc((size_t)nranks, sizeof *c->devices);
    int rc = c->comms && c->devices ? ZS_OK : zs_err_set(err, ZS_ENOMEM, "nccl: out of memory");
    if (rc == ZS_OK) memcpy(c->devices, devices, (size_t)nranks * sizeof *devices);
    if (rc == ZS_OK) rc = nccl_load(&c->api, err);
    int version = 0;
    if (rc == ZS_OK) {
        ncclResult_t r = c->api.get_version(&version);
        if (r != ncclSuccess) rc = nccl_fail(&c->api, err, r, "ncclGetVersion", 0, devices[0]);
    }
    /* never NVLink SHARP / multicast: keep NCCL on its plain ring/tree algorithms */
    if (rc == ZS_OK && setenv("NCCL_NVLS_ENABLE", "0", 1) != 0)
        rc = zs_err_set(err, ZS_ENOMEM, "nccl: cannot set NCCL_NVLS_ENABLE=0");
    if (rc == ZS_OK) {
        ncclResult_t r = c->api.comm_init_all(c->comms, nranks, c->devices);
        if (r != ncclSuccess) {
            memset(c->comms, 0, (size_t)nranks * sizeof *c->comms);
            rc = zs_err_set(err, ZS_ECUDA, "nccl %d: ncclCommInitAll over %d GPUs: %s (ncclResult %d)", version,
                            nranks, c->api.error_string(r), (int)r);
        }
    }
    if (rc != ZS_OK) {
        nc_destroy(&c->base);
        return rc;
    }
    *out = &c->base;
    return ZS_OK;
}
