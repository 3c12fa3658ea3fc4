/* The weight loader (include/zerostart/load.h): reader threads pull chunks in priority order
 * and either read them straight into host memory (CPU device) or into a few pinned staging
 * slots each and copy them to the GPU on the thread's own stream, so reads and copies
 * overlap. A chunk counts as resident once the event recorded after its copy has completed
 * (checked when its slot is reused, and at the end); resident chunks count down per-tensor
 * and per-layer byte totals, and a layer is ready when its last byte is resident. */
#include "zerostart/load.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/clock.h"
#include "gpu/gpu_rt.h"
#include "io/file_reader.h"
#include "load/plan.h"

#define ZS_DEFAULT_CHUNK (4u << 20)
#define ZS_DEFAULT_STAGING ((size_t)1 << 30)
#define ZS_DEFAULT_SLOTS 2
#define ZS_READAHEAD_WINDOW ((uint64_t)1 << 30) /* bytes fetched ahead of the readers */
#define ZS_MAX_SLOTS 8

typedef struct zs_load_worker zs_load_worker_t;

struct zs_load {
    const zs_ckpt_t *ck;
    zs_load_opts_t opts;
    zs_io_mode_t io_mode;
    zs_plan_t plan;
    zs_weights_t *w;
    size_t map_bytes;            /* host allocation size (CPU device) */
    zs_io_file_t *files;
    _Atomic uint64_t *tensor_left;
    int32_t *layer_left;         /* [0]: non-layer tensors, [L + 1]: layer L */
    double *layer_done_at;       /* when layer_left reached 0 (zs_now), same indexing */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int nthreads;
    int threads_running;
    pthread_t *threads;
    zs_load_worker_t *workers;
    pthread_t prefetcher;
    int prefetching;
    uint64_t *chunk_end_bytes;   /* readahead: bytes of chunks [0, i] in schedule order */
    atomic_size_t next_chunk;
    atomic_int abort;
    _Atomic uint64_t bytes_done;
    _Atomic uint64_t bytes_direct;
    int failed;
    zs_err_t err;                /* first error, under mu */
    double t_begin, t_read_end, t_resident;
};

struct zs_load_worker {
    zs_load_t *ld;
    int id;
    int nslots;
    void *slot[ZS_MAX_SLOTS];
    size_t slot_bytes;
    zs_gpu_stream_t *stream;
    zs_gpu_event_t *ev[ZS_MAX_SLOTS];
    size_t slot_chunk[ZS_MAX_SLOTS];   /* chunk whose copy from the slot is in flight */
    int slot_busy[ZS_MAX_SLOTS];
};

void zs_load_opts_default(zs_load_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->device.kind = ZS_DEV_CPU;
    o->direct_io = -1;
}

int zs_cuda_device_count(void) { return zs_gpu_count(); }

int zs_load_alloc_bytes(const zs_ckpt_t *ck, uint64_t *bytes, zs_err_t *err) {
    zs_plan_t p;
    int rc = zs_plan_build(ck, NULL, ZS_DEFAULT_CHUNK, &p, err);
    if (rc == ZS_OK) *bytes = p.alloc_bytes;
    zs_plan_free(&p);
    return rc;
}

static void load_fail(zs_load_t *ld, const zs_err_t *e) {
    pthread_mutex_lock(&ld->mu);
    if (!ld->failed) {
        ld->failed = 1;
        ld->err = *e;
    }
    atomic_store(&ld->abort, 1);
    pthread_cond_broadcast(&ld->cv);
    pthread_mutex_unlock(&ld->mu);
}

/* Counts a resident chunk down from its tensors and layers (called on loader threads). */
static void load_chunk_resident(zs_load_t *ld, size_t ci) {
    const zs_chunk_t *c = &ld->plan.chunks[ci];
    int wake = 0;
    for (size_t t = c->t_first; t < c->t_end; t++) {
        const zs_tensor_info_t *ti = &ld->ck->tensors[t];
        uint64_t b = ti->file_offset > c->src ? ti->file_offset : c->src;
        uint64_t e = ti->file_offset + ti->nbytes < c->src + c->len ? ti->file_offset + ti->nbytes
                                                                     : c->src + c->len;
        if (e <= b) continue;
        if (atomic_fetch_sub(&ld->tensor_left[t], e - b) == e - b) {
            pthread_mutex_lock(&ld->mu);
            if (--ld->layer_left[ti->layer + 1] == 0) ld->layer_done_at[ti->layer + 1] = zs_now();
            pthread_mutex_unlock(&ld->mu);
            wake = 1; /* a tensor or a layer is complete */
        }
    }
    if (wake) {
        pthread_mutex_lock(&ld->mu);
        pthread_cond_broadcast(&ld->cv);
        pthread_mutex_unlock(&ld->mu);
    }
}

static void load_progress(zs_load_t *ld, uint64_t n, int direct) {
    uint64_t done = atomic_fetch_add(&ld->bytes_done, n) + n;
    if (direct) atomic_fetch_add(&ld->bytes_direct, n);
    if (ld->opts.on_progress) ld->opts.on_progress(ld->opts.progress_ctx, done, ld->plan.read_bytes);
}

/* Aligned host buffer from mmap (so it can be page-locked cheaply with cudaHostRegister). */
static void *load_map(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    madvise(p, bytes, MADV_HUGEPAGE);
    return p;
}

/* Host weights: faulting the pages in up front (one kernel pass, huge pages where possible)
 * is far cheaper than taking a page fault inside every read that lands in fresh memory. */
static void *load_map_populated(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    (void)madvise(p, bytes, MADV_POPULATE_WRITE); /* kernels before 5.14: pages fault in on first read */
    return p;
}

static int worker_setup_gpu(zs_load_worker_t *wk, zs_err_t *err) {
    zs_load_t *ld = wk->ld;
    int rc = zs_gpu_set_device(ld->opts.device.index, err);
    if (rc == ZS_OK) rc = zs_gpu_stream_create(&wk->stream, err);
    for (int s = 0; s < wk->nslots && rc == ZS_OK; s++) {
        wk->slot[s] = load_map(wk->slot_bytes);
        if (wk->slot[s] == NULL) {
            rc = zs_err_set(err, ZS_ENOMEM, "staging buffer of %zu bytes", wk->slot_bytes);
            break;
        }
        rc = zs_gpu_host_register(wk->slot[s], wk->slot_bytes, err);
        if (rc != ZS_OK) {
            munmap(wk->slot[s], wk->slot_bytes);
            wk->slot[s] = NULL;
            break;
        }
        rc = zs_gpu_event_create(&wk->ev[s], err);
    }
    return rc;
}

static void worker_teardown(zs_load_worker_t *wk) {
    for (int s = 0; s < ZS_MAX_SLOTS; s++) {
        zs_gpu_event_destroy(wk->ev[s]);
        if (wk->slot[s] != NULL) {
            if (wk->ld->opts.device.kind == ZS_DEV_CUDA) zs_gpu_host_unregister(wk->slot[s]);
            munmap(wk->slot[s], wk->slot_bytes);
        }
        wk->slot[s] = NULL;
        wk->ev[s] = NULL;
    }
    zs_gpu_stream_destroy(wk->stream);
    wk->stream = NULL;
}

/* Waits for the copy out of slot s and marks its chunk resident. */
static int worker_retire_slot(zs_load_worker_t *wk, int s, zs_err_t *err) {
    if (!wk->slot_busy[s]) return ZS_OK;
    int rc = zs_gpu_event_sync(wk->ev[s], err);
    if (rc != ZS_OK) return rc;
    wk->slot_busy[s] = 0;
    load_chunk_resident(wk->ld, wk->slot_chunk[s]);
    return ZS_OK;
}

/* One chunk to the GPU through staging slot s (or straight from pinned source memory). */
static int worker_chunk_gpu(zs_load_worker_t *wk, size_t ci, int s, zs_err_t *err) {
    zs_load_t *ld = wk->ld;
    const zs_chunk_t *c = &ld->plan.chunks[ci];
    int rc = worker_retire_slot(wk, s, err);
    if (rc != ZS_OK) return rc;
    void *data;
    int direct = 0;
    if (ld->opts.source != NULL && ld->opts.source_pinned) {
        data = (char *)ld->opts.source + c->dst;
    } else if (ld->opts.source != NULL) {
        memcpy(wk->slot[s], (const char *)ld->opts.source + c->dst, c->len);
        data = wk->slot[s];
    } else {
        rc = zs_io_read(&ld->files[c->file], ld->io_mode, c->src, c->len, NULL, wk->slot[s], &data, &direct, err);
        if (rc != ZS_OK) return rc;
    }
    load_progress(ld, c->len, direct);
    rc = zs_gpu_memcpy_h2d_async((char *)ld->w->base + c->dst, data, c->len, wk->stream, err);
    if (rc == ZS_OK) rc = zs_gpu_event_record(wk->ev[s], wk->stream, err);
    if (rc == ZS_OK) {
        wk->slot_busy[s] = 1;
        wk->slot_chunk[s] = ci;
    }
    return rc;
}

static int worker_chunk_host(zs_load_worker_t *wk, size_t ci, zs_err_t *err) {
    zs_load_t *ld = wk->ld;
    const zs_chunk_t *c = &ld->plan.chunks[ci];
    if (ld->opts.source != NULL) {
        memcpy((char *)ld->w->base + c->dst, (const char *)ld->opts.source + c->dst, c->len);
        load_progress(ld, c->len, 0);
        load_chunk_resident(ld, ci);
        return ZS_OK;
    }
    int direct;
    int rc = zs_io_read(&ld->files[c->file], ld->io_mode, c->src, c->len, (char *)ld->w->base + c->dst,
                        wk->slot[0], NULL, &direct, err);
    if (rc != ZS_OK) return rc;
    load_progress(ld, c->len, direct);
    load_chunk_resident(ld, ci);
    return ZS_OK;
}

static void *worker_main(void *arg) {
    zs_load_worker_t *wk = arg;
    zs_load_t *ld = wk->ld;
    zs_err_t err = {0};
    int gpu = ld->opts.device.kind == ZS_DEV_CUDA;
    int rc = ZS_OK, s = 0;
    if (gpu) {
        rc = worker_setup_gpu(wk, &err);
    } else {
        wk->slot[0] = load_map(wk->slot_bytes);
        if (wk->slot[0] == NULL) rc = zs_err_set(&err, ZS_ENOMEM, "read buffer of %zu bytes", wk->slot_bytes);
    }
    while (rc == ZS_OK && !atomic_load(&ld->abort)) {
        size_t ci = atomic_fetch_add(&ld->next_chunk, 1);
        if (ci >= ld->plan.nchunks) break;
        if (gpu) {
            rc = worker_chunk_gpu(wk, ci, s, &err);
            s = (s + 1) % wk->nslots;
        } else {
            rc = worker_chunk_host(wk, ci, &err);
        }
    }
    double t_read = zs_now();
    if (gpu && wk->stream != NULL) {
        zs_err_t serr = {0};
        int src = zs_gpu_stream_sync(wk->stream, &serr);
        for (int k = 0; k < wk->nslots && src == ZS_OK && rc == ZS_OK; k++)
            src = worker_retire_slot(wk, (s + k) % wk->nslots, &serr);
        if (rc == ZS_OK && src != ZS_OK) {
            rc = src;
            err = serr;
        }
    }
    if (rc != ZS_OK) load_fail(ld, &err);
    worker_teardown(wk);
    pthread_mutex_lock(&ld->mu);
    if (t_read > ld->t_read_end) ld->t_read_end = t_read;
    if (--ld->threads_running == 0) {
        ld->t_resident = zs_now();
        pthread_cond_broadcast(&ld->cv);
    }
    pthread_mutex_unlock(&ld->mu);
    return NULL;
}

/* Readahead strategy: asks the kernel to fetch chunks not in the page cache, in schedule
 * order, staying at most ZS_READAHEAD_WINDOW bytes ahead of the chunk the readers take next. */
static void *prefetch_main(void *arg) {
    zs_load_t *ld = arg;
    for (size_t i = 0; i < ld->plan.nchunks && !atomic_load(&ld->abort); i++) {
        const zs_chunk_t *c = &ld->plan.chunks[i];
        for (;;) {
            size_t next = atomic_load(&ld->next_chunk);
            if (next >= ld->plan.nchunks || atomic_load(&ld->abort)) return NULL;
            uint64_t done = next ? ld->chunk_end_bytes[next - 1] : 0;
            if (ld->chunk_end_bytes[i] - c->len <= done + ZS_READAHEAD_WINDOW) break;
            struct timespec ts = {0, 200 * 1000};
            nanosleep(&ts, NULL);
        }
        if (zs_io_resident(&ld->files[c->file], c->src, c->len) < 1.0)
            (void)posix_fadvise(ld->files[c->file].fd, (off_t)c->src, (off_t)c->len, POSIX_FADV_WILLNEED);
    }
    return NULL;
}

static int load_default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    return n * 2 > 16 ? 16 : (int)n * 2;
}

static void load_free(zs_load_t *ld) {
    if (ld->files != NULL)
        for (uint32_t i = 0; i < ld->ck->nfiles; i++)
            if (ld->files[i].path != NULL) zs_io_close(&ld->files[i]);
    free(ld->files);
    free((void *)ld->tensor_left);
    free(ld->layer_left);
    free(ld->layer_done_at);
    free(ld->threads);
    free(ld->workers);
    free(ld->chunk_end_bytes);
    zs_plan_free(&ld->plan);
    pthread_mutex_destroy(&ld->mu);
    pthread_cond_destroy(&ld->cv);
    free(ld);
}

void zs_weights_free(zs_weights_t *w) {
    if (w == NULL) return;
    if (w->base != NULL && !w->base_borrowed) {
        if (w->device.kind == ZS_DEV_CUDA) zs_gpu_free(w->base);
        else munmap(w->base, w->bytes);
    }
    free(w->tensors);
    free(w);
}

/* Sizes threads, chunk and staging so that the pinned staging stays within its bound. */
static int load_size_staging(zs_load_t *ld, zs_err_t *err) {
    zs_load_opts_t *o = &ld->opts;
    if (o->threads < 0 || o->threads > 256)
        return zs_err_set(err, ZS_EINVAL, "threads %d out of range 1..256", o->threads);
    if (o->threads == 0) o->threads = load_default_threads();
    if (o->chunk_bytes == 0) o->chunk_bytes = ZS_DEFAULT_CHUNK;
    if (o->chunk_bytes % 4096 != 0 || o->chunk_bytes > ((size_t)1 << 30))
        return zs_err_set(err, ZS_EINVAL, "chunk size %zu must be a multiple of 4096 up to 1 GiB",
                          o->chunk_bytes);
    if (o->staging_bytes == 0) o->staging_bytes = ZS_DEFAULT_STAGING;
    if (o->staging_slots == 0) o->staging_slots = ZS_DEFAULT_SLOTS;
    if (o->staging_slots < 1 || o->staging_slots > ZS_MAX_SLOTS)
        return zs_err_set(err, ZS_EINVAL, "staging slots %d out of range 1..%d", o->staging_slots, ZS_MAX_SLOTS);
    if (o->device.kind == ZS_DEV_CUDA) {
        size_t per_thread = (size_t)o->staging_slots * zs_io_scratch_bytes(o->chunk_bytes);
        if (per_thread > o->staging_bytes)
            return zs_err_set(err, ZS_EINVAL,
                              "staging %zu bytes cannot hold %d %zu-byte chunks; raise staging or lower the chunk size",
                              o->staging_bytes, o->staging_slots, o->chunk_bytes);
        if ((size_t)o->threads * per_thread > o->staging_bytes)
            o->threads = (int)(o->staging_bytes / per_thread);
    }
    return ZS_OK;
}

static int load_setup(zs_load_t *ld, zs_err_t *err) {
    const zs_ckpt_t *ck = ld->ck;
    int rc = zs_plan_build(ck, ld->opts.priority, ld->opts.chunk_bytes, &ld->plan, err);
    if (rc != ZS_OK) return rc;
    zs_weights_t *w = calloc(1, sizeof *w);
    ld->w = w;
    ld->files = calloc(ck->nfiles ? ck->nfiles : 1, sizeof *ld->files);
    ld->tensor_left = calloc(ck->ntensors + 1, sizeof *ld->tensor_left);
    ld->layer_left = calloc((size_t)ck->nlayers + 1, sizeof *ld->layer_left);
    ld->layer_done_at = calloc((size_t)ck->nlayers + 1, sizeof *ld->layer_done_at);
    if (w == NULL || ld->files == NULL || ld->tensor_left == NULL ||
        ld->layer_left == NULL || ld->layer_done_at == NULL || (w->tensors = calloc(ck->ntensors + 1, sizeof *w->tensors)) == NULL)
        return zs_err_set(err, ZS_ENOMEM, "%s: out of memory for the loader", ck->dir);
    w->ckpt = ck;
    w->device = ld->opts.device;
    w->ntensors = ck->ntensors;
    w->bytes = ld->plan.alloc_bytes;
    for (size_t i = 0; i < ck->ntensors; i++) {
        ld->tensor_left[i] = ck->tensors[i].nbytes;
        if (ck->tensors[i].nbytes > 0) ld->layer_left[ck->tensors[i].layer + 1]++;
    }
    for (uint32_t i = 0; i < ck->nfiles && ld->opts.source == NULL; i++) {
        rc = zs_io_open(&ld->files[i], ck->files[i].path, ld->io_mode, err);
        if (rc != ZS_OK) return rc;
    }
    if (ld->opts.device.kind == ZS_DEV_CUDA) {
        if (ld->opts.device.index >= zs_gpu_count())
            return zs_err_set(err, ZS_EINVAL, "cuda:%d requested but %d CUDA device(s) are usable",
                              ld->opts.device.index, zs_gpu_count());
        rc = zs_gpu_set_device(ld->opts.device.index, err);
        if (rc == ZS_OK) rc = zs_gpu_malloc(&w->base, w->bytes, err);
        if (rc != ZS_OK) return rc;
    } else if (ld->opts.host_dest != NULL) {
        if ((uintptr_t)ld->opts.host_dest % ZS_TENSOR_ALIGN != 0)
            return zs_err_set(err, ZS_EINVAL, "host destination is not %u-byte aligned", ZS_TENSOR_ALIGN);
        w->base = ld->opts.host_dest;
        w->base_borrowed = 1;
    } else {
        w->base = load_map_populated(w->bytes);
        if (w->base == NULL)
            return zs_err_set(err, ZS_ENOMEM, "%s: cannot allocate %llu bytes of host memory",
                              ck->dir, (unsigned long long)w->bytes);
    }
    for (size_t i = 0; i < ck->ntensors; i++)
        w->tensors[i] = (zs_tensor_t){&ck->tensors[i], (char *)w->base + ld->plan.dst[i], ld->plan.dst[i]};
    return ZS_OK;
}

static int load_start_prefetch(zs_load_t *ld, zs_err_t *err) {
    ld->chunk_end_bytes = malloc((ld->plan.nchunks + 1) * sizeof *ld->chunk_end_bytes);
    if (ld->chunk_end_bytes == NULL) return zs_err_set(err, ZS_ENOMEM, "out of memory for the readahead schedule");
    uint64_t acc = 0;
    for (size_t i = 0; i < ld->plan.nchunks; i++) ld->chunk_end_bytes[i] = acc += ld->plan.chunks[i].len;
    int e = pthread_create(&ld->prefetcher, NULL, prefetch_main, ld);
    if (e != 0) return zs_err_set(err, ZS_ENOMEM, "pthread_create for the readahead thread failed (error %d)", e);
    ld->prefetching = 1;
    return ZS_OK;
}

static int load_start_threads(zs_load_t *ld, zs_err_t *err) {
    int n = ld->opts.threads;
    ld->threads = calloc((size_t)n, sizeof *ld->threads);
    ld->workers = calloc((size_t)n, sizeof *ld->workers);
    if (ld->threads == NULL || ld->workers == NULL)
        return zs_err_set(err, ZS_ENOMEM, "out of memory for %d loader threads", n);
    for (int i = 0; i < n; i++) {
        ld->workers[i] = (zs_load_worker_t){.ld = ld, .id = i, .nslots = ld->opts.staging_slots,
                                            .slot_bytes = zs_io_scratch_bytes(ld->opts.chunk_bytes)};
        pthread_mutex_lock(&ld->mu);
        ld->threads_running++;
        pthread_mutex_unlock(&ld->mu);
        int e = pthread_create(&ld->threads[i], NULL, worker_main, &ld->workers[i]);
        if (e != 0) {
            pthread_mutex_lock(&ld->mu);
            ld->threads_running--;
            pthread_mutex_unlock(&ld->mu);
            zs_err_t te = {0};
            zs_err_set(&te, ZS_ENOMEM, "pthread_create for loader thread %d failed (error %d)", i, e);
            load_fail(ld, &te);
            ld->nthreads = i;
            return te.code;
        }
        ld->nthreads = i + 1;
    }
    return ZS_OK;
}

int zs_load_begin(const zs_ckpt_t *ck, const zs_load_opts_t *opts, zs_load_t **out, zs_err_t *err) {
    *out = NULL;
    zs_load_t *ld = calloc(1, sizeof *ld);
    if (ld == NULL) return zs_err_set(err, ZS_ENOMEM, "out of memory for the loader");
    ld->t_begin = zs_now();
    ld->ck = ck;
    if (opts) ld->opts = *opts;
    else zs_load_opts_default(&ld->opts);
    ld->io_mode = ld->opts.direct_io < 0 ? ZS_IO_AUTO : ld->opts.direct_io ? ZS_IO_DIRECT : ZS_IO_BUFFERED;
    if (ld->opts.readahead && ld->io_mode == ZS_IO_AUTO) ld->io_mode = ZS_IO_CACHED;
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->cv, NULL);
    int rc = load_size_staging(ld, err);
    if (rc == ZS_OK) rc = load_setup(ld, err);
    if (rc != ZS_OK) {
        zs_weights_free(ld->w);
        load_free(ld);
        return rc;
    }
    ld->w->stats.setup_s = zs_now() - ld->t_begin;
    if (ld->opts.readahead && ld->io_mode != ZS_IO_DIRECT && ld->opts.source == NULL) rc = load_start_prefetch(ld, err);
    if (rc == ZS_OK) rc = load_start_threads(ld, err);
    if (rc != ZS_OK) {
        zs_weights_t *w = NULL;
        return zs_load_finish(ld, &w, err);
    }
    *out = ld;
    return ZS_OK;
}

zs_weights_t *zs_load_weights(zs_load_t *ld) { return ld->w; }

int zs_load_done(zs_load_t *ld) {
    pthread_mutex_lock(&ld->mu);
    int done = ld->threads_running == 0;
    pthread_mutex_unlock(&ld->mu);
    return done;
}

void zs_load_cancel(zs_load_t *ld) {
    pthread_mutex_lock(&ld->mu);
    if (ld->threads_running > 0 && !ld->failed) {
        ld->failed = 1;
        zs_err_clear(&ld->err);
        zs_err_set(&ld->err, ZS_ECANCELED, "%s: load cancelled", ld->ck->dir);
        atomic_store(&ld->abort, 1);
        pthread_cond_broadcast(&ld->cv);
    }
    pthread_mutex_unlock(&ld->mu);
}

int zs_load_wait_layer(zs_load_t *ld, int32_t layer, zs_err_t *err) {
    if (layer < -1 || layer >= ld->ck->nlayers)
        return zs_err_set(err, ZS_EINVAL, "layer %d is outside the model's %d layers", layer,
                          ld->ck->nlayers);
    pthread_mutex_lock(&ld->mu);
    while (ld->layer_left[layer + 1] > 0 && !ld->failed && ld->threads_running > 0)
        pthread_cond_wait(&ld->cv, &ld->mu);
    int rc = ZS_OK;
    if (ld->failed) {
        rc = ld->err.code;
        if (err != NULL && err->code == ZS_OK) *err = ld->err;
    } else if (ld->layer_left[layer + 1] > 0) {
        rc = zs_err_set(err, ZS_ESTATE, "load ended with layer %d incomplete", layer);
    }
    pthread_mutex_unlock(&ld->mu);
    return rc;
}

double zs_load_layer_time(zs_load_t *ld, int32_t layer) {
    if (layer < -1 || layer >= ld->ck->nlayers) return -1;
    pthread_mutex_lock(&ld->mu);
    /* a layer without bytes (no tensors) was resident from the start */
    double t = ld->layer_left[layer + 1] > 0 ? -1 : ld->layer_done_at[layer + 1] > 0 ? ld->layer_done_at[layer + 1] - ld->t_begin : 0;
    pthread_mutex_unlock(&ld->mu);
    return t;
}

int zs_load_wait_tensor(zs_load_t *ld, const char *name, zs_err_t *err) {
    const zs_tensor_info_t *t = zs_ckpt_find(ld->ck, name);
    if (t == NULL) return zs_err_set(err, ZS_ENOENT, "no tensor '%s' in %s", name, ld->ck->dir);
    size_t i = (size_t)(t - ld->ck->tensors);
    pthread_mutex_lock(&ld->mu);
    while (atomic_load(&ld->tensor_left[i]) > 0 && !ld->failed && ld->threads_running > 0)
        pthread_cond_wait(&ld->cv, &ld->mu);
    int rc = ZS_OK;
    if (ld->failed) {
        rc = ld->err.code;
        if (err != NULL && err->code == ZS_OK) *err = ld->err;
    } else if (atomic_load(&ld->tensor_left[i]) > 0) {
        rc = zs_err_set(err, ZS_ESTATE, "load ended with tensor '%s' incomplete", name);
    }
    pthread_mutex_unlock(&ld->mu);
    return rc;
}

int zs_load_finish(zs_load_t *ld, zs_weights_t **out, zs_err_t *err) {
    *out = NULL;
    for (int i = 0; i < ld->nthreads; i++) pthread_join(ld->threads[i], NULL);
    if (ld->prefetching) pthread_join(ld->prefetcher, NULL);
    int rc = ZS_OK;
    if (ld->failed) {
        rc = ld->err.code;
        if (err != NULL && err->code == ZS_OK) *err = ld->err;
    } else {
        for (int32_t l = 0; l <= ld->ck->nlayers; l++)
            if (ld->layer_left[l] != 0) {
                rc = zs_err_set(err, ZS_ESTATE, "%s: load finished with tensors of layer %d missing",
                                ld->ck->dir, l - 1);
                break;
            }
    }
    zs_weights_t *w = ld->w;
    if (rc == ZS_OK) {
        zs_load_stats_t *s = &w->stats;
        s->bytes = ld->plan.read_bytes;
        s->bytes_direct = atomic_load(&ld->bytes_direct);
        s->chunks = ld->plan.nchunks;
        s->threads = ld->nthreads;
        s->chunk_bytes = ld->opts.chunk_bytes;
        s->staging_bytes = ld->opts.device.kind == ZS_DEV_CUDA
                               ? (size_t)ld->nthreads * (size_t)ld->opts.staging_slots * zs_io_scratch_bytes(ld->opts.chunk_bytes)
                               : 0;
        double t_res = ld->t_resident > 0 ? ld->t_resident : zs_now();
        double t_start = ld->t_begin + s->setup_s;
        s->read_s = ld->t_read_end > t_start ? ld->t_read_end - t_start : 0;
        s->copy_tail_s = t_res > ld->t_read_end ? t_res - ld->t_read_end : 0;
        s->total_s = t_res - ld->t_begin;
        *out = w;
    } else {
        zs_weights_free(w);
    }
    load_free(ld);
    return rc;
}

int zs_load(const zs_ckpt_t *ck, const zs_load_opts_t *opts, zs_weights_t **out, zs_err_t *err) {
    zs_load_t *ld;
    int rc = zs_load_begin(ck, opts, &ld, err);
    if (rc != ZS_OK) {
        *out = NULL;
        return rc;
    }
    return zs_load_finish(ld, out, err);
}

const zs_tensor_t *zs_weights_find(const zs_weights_t *w, const char *name) {
    const zs_tensor_info_t *t = zs_ckpt_find(w->ckpt, name);
    return t ? &w->tensors[t - w->ckpt->tensors] : NULL;
}
