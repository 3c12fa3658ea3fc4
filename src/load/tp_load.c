/* Executing a tensor-parallel load plan (include/zerostart/tp.h). Reader threads take the
 * plan's read units in order from a shared counter, read each unit once (page-cache-aware
 * reads of io/file_reader.h) into a staging slot and deliver its 2-D pieces to every rank that
 * holds them: memcpy into host buffers (simulated ranks), or cudaMemcpy2DAsync from pinned
 * staging into each rank's single GPU allocation, on one stream per (reader, rank); a slot is
 * reused once the events recorded after its copies have completed. Every GPU receives from
 * every reader, so the GPUs fill in parallel. Also: the per-rank allocations, the weights
 * object and its per-rank tensor lookup. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/clock.h"
#include "gpu/gpu_rt.h"
#include "io/file_reader.h"
#include "zerostart/tp.h"

#define TP_DEFAULT_UNIT ((size_t)4 << 20)
#define TP_MAX_SLOTS 8
#define TP_ALLOC_ALIGN 256u

typedef struct tp_exec {
    const zs_ckpt_t *ck;
    const zs_tp_plan_t *p;
    zs_device_kind_t kind;
    const int *devices;          /* CUDA ordinal per rank */
    void *const *base;           /* per rank */
    zs_io_mode_t mode;
    zs_io_file_t *files;
    int nslots;
    size_t slot_bytes;
    atomic_size_t next;
    atomic_int abort;
    _Atomic uint64_t read, direct;
    _Atomic uint64_t delivered[ZS_TP_MAX_RANKS];
    pthread_mutex_t mu;
    int failed;
    zs_err_t err;                /* first error, under mu */
} tp_exec_t;

typedef struct tp_reader {
    tp_exec_t *x;
    pthread_t th;
    int started;
    void *slot[TP_MAX_SLOTS];
    int pinned[TP_MAX_SLOTS];
    zs_gpu_stream_t *stream[ZS_TP_MAX_RANKS];
    zs_gpu_event_t *ev[TP_MAX_SLOTS][ZS_TP_MAX_RANKS];
    unsigned char busy[TP_MAX_SLOTS][ZS_TP_MAX_RANKS];
} tp_reader_t;

static void exec_fail(tp_exec_t *x, const zs_err_t *e) {
    pthread_mutex_lock(&x->mu);
    if (!x->failed) {
        x->failed = 1;
        x->err = *e;
    }
    atomic_store(&x->abort, 1);
    pthread_mutex_unlock(&x->mu);
}

static void reader_teardown(tp_reader_t *rd) {
    tp_exec_t *x = rd->x;
    for (int r = 0; r < x->p->ranks && x->kind == ZS_DEV_CUDA; r++) {
        zs_err_t ignore = {0};
        (void)zs_gpu_use_device(x->devices[r], &ignore);
        for (int s = 0; s < TP_MAX_SLOTS; s++) {
            zs_gpu_event_destroy(rd->ev[s][r]);
            rd->ev[s][r] = NULL;
        }
        zs_gpu_stream_destroy(rd->stream[r]);
        rd->stream[r] = NULL;
    }
    for (int s = 0; s < TP_MAX_SLOTS; s++) {
        if (rd->slot[s] == NULL) continue;
        if (x->kind == ZS_DEV_CUDA) {
            if (rd->pinned[s]) zs_gpu_host_unregister(rd->slot[s]);
            munmap(rd->slot[s], x->slot_bytes);
        } else {
            free(rd->slot[s]);
        }
        rd->slot[s] = NULL;
    }
}

/* Staging slots; for GPUs pinned for every GPU, with a stream and an event per slot per rank. */
static int reader_setup(tp_reader_t *rd, zs_err_t *err) {
    tp_exec_t *x = rd->x;
    /* page-locking needs a current device: one of ours, not an idle GPU 0 */
    if (x->kind == ZS_DEV_CUDA) {
        int rc = zs_gpu_use_device(x->devices[0], err);
        if (rc != ZS_OK) return rc;
    }
    for (int s = 0; s < x->nslots; s++) {
        if (x->kind == ZS_DEV_CUDA) {
            void *m = mmap(NULL, x->slot_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) return zs_err_set(err, ZS_ENOMEM, "tensor parallel: staging buffer of %zu bytes", x->slot_bytes);
            rd->slot[s] = m;
            int rc = zs_gpu_host_register_portable(m, x->slot_bytes, err);
            if (rc != ZS_OK) return rc;
            rd->pinned[s] = 1;
        } else {
            rd->slot[s] = aligned_alloc(ZS_IO_ALIGN, x->slot_bytes);
            if (rd->slot[s] == NULL)
                return zs_err_set(err, ZS_ENOMEM, "tensor parallel: staging buffer of %zu bytes", x->slot_bytes);
        }
    }
    for (int r = 0; r < x->p->ranks && x->kind == ZS_DEV_CUDA; r++) {
        int rc = zs_gpu_use_device(x->devices[r], err);
        if (rc == ZS_OK) rc = zs_gpu_stream_create(&rd->stream[r], err);
        for (int s = 0; s < x->nslots && rc == ZS_OK; s++) rc = zs_gpu_event_create(&rd->ev[s][r], err);
        if (rc != ZS_OK) return rc;
    }
    return ZS_OK;
}

/* Waits for the copies still reading from slot s. */
static int reader_retire(tp_reader_t *rd, int s, zs_err_t *err) {
    for (int r = 0; r < rd->x->p->ranks; r++) {
        if (!rd->busy[s][r]) continue;
        int rc = zs_gpu_event_sync(rd->ev[s][r], err);
        if (rc != ZS_OK) return rc;
        rd->busy[s][r] = 0;
    }
    return ZS_OK;
}

/* The unit's pieces (data: its bytes, in slot s) to the ranks that hold them. */
static int reader_deliver(tp_reader_t *rd, const zs_tp_unit_t *u, const char *data, int s, zs_err_t *err) {
    tp_exec_t *x = rd->x;
    for (size_t d = u->first; d < u->first + u->count; d++) {
        const zs_tp_delivery_t *dv = &x->p->deliveries[d];
        char *dst = (char *)x->base[dv->rank] + dv->dst;
        const char *src = data + dv->src_off;
        if (x->kind == ZS_DEV_CUDA) {
            zs_err_t e = {0};
            int rc = zs_gpu_use_device(x->devices[dv->rank], &e);
            /* whole rows are one contiguous range; a column block is one 2-D copy */
            if (rc == ZS_OK && dv->rows == 1)
                rc = zs_gpu_memcpy_h2d_async(dst, src, dv->width, rd->stream[dv->rank], &e);
            else if (rc == ZS_OK)
                rc = zs_gpu_memcpy2d_h2d_async(dst, dv->dst_pitch, src, dv->src_pitch, dv->width, dv->rows,
                                               rd->stream[dv->rank], &e);
            if (rc != ZS_OK)
                return zs_err_set(err, rc, "tensor parallel: tensor %s to rank %d (GPU %d): %s",
                                  x->ck->tensors[u->tensor].name, dv->rank, x->devices[dv->rank], e.msg);
            /* one event per (slot, rank), recorded after the unit's last copy to the rank */
            rd->busy[s][dv->rank] = 2;
        } else {
            for (uint64_t row = 0; row < dv->rows; row++)
                memcpy(dst + row * dv->dst_pitch, src + row * dv->src_pitch, dv->width);
        }
        atomic_fetch_add(&x->delivered[dv->rank], dv->width * dv->rows);
    }
    for (int r = 0; r < x->p->ranks && x->kind == ZS_DEV_CUDA; r++) {
        if (rd->busy[s][r] != 2) continue;
        int rc = zs_gpu_event_record(rd->ev[s][r], rd->stream[r], err);
        if (rc != ZS_OK) return rc;
        rd->busy[s][r] = 1;
    }
    return ZS_OK;
}

static void *reader_main(void *arg) {
    tp_reader_t *rd = arg;
    tp_exec_t *x = rd->x;
    zs_err_t err = {0};
    int rc = reader_setup(rd, &err);
    for (size_t k = 0; rc == ZS_OK && !atomic_load(&x->abort); k++) {
        size_t i = atomic_fetch_add(&x->next, 1);
        if (i >= x->p->nunits) break;
        const zs_tp_unit_t *u = &x->p->units[i];
        const int s = (int)(k % (size_t)x->nslots);
        if ((rc = reader_retire(rd, s, &err)) != ZS_OK) break;
        void *data = NULL;
        int direct = 0;
        rc = zs_io_read(&x->files[u->file], x->mode, u->src, (size_t)u->len, NULL, rd->slot[s], &data, &direct, &err);
        if (rc != ZS_OK) break;
        atomic_fetch_add(&x->read, u->len);
        if (direct) atomic_fetch_add(&x->direct, u->len);
        rc = reader_deliver(rd, u, data, s, &err);
    }
    for (int s = 0; s < x->nslots && rc == ZS_OK; s++) rc = reader_retire(rd, s, &err);
    if (rc != ZS_OK) exec_fail(x, &err);
    reader_teardown(rd);
    return NULL;
}

/* Runs the plan with nthreads readers (1: on the calling thread). */
static int exec_run(tp_exec_t *x, int nthreads, zs_err_t *err) {
    const uint64_t align = ZS_IO_ALIGN;
    uint64_t maxlen = 1;
    for (size_t i = 0; i < x->p->nunits; i++)
        if (x->p->units[i].len > maxlen) maxlen = x->p->units[i].len;
    x->slot_bytes = (zs_io_scratch_bytes((size_t)maxlen) + align - 1) / align * align;
    if (x->nslots < 1) x->nslots = 1;
    if ((size_t)nthreads > x->p->nunits) nthreads = x->p->nunits ? (int)x->p->nunits : 1;
    int rc = pthread_mutex_init(&x->mu, NULL) == 0 ? ZS_OK : zs_err_set(err, ZS_ENOMEM, "tensor parallel: mutex");
    if (rc != ZS_OK) return rc;
    x->files = calloc(x->ck->nfiles + 1, sizeof *x->files);
    tp_reader_t *rds = calloc((size_t)nthreads, sizeof *rds);
    if (x->files == NULL || rds == NULL) rc = zs_err_set(err, ZS_ENOMEM, "tensor parallel: out of memory");
    uint32_t opened = 0;
    while (rc == ZS_OK && opened < x->ck->nfiles) {
        rc = zs_io_open(&x->files[opened], x->ck->files[opened].path, x->mode, err);
        if (rc == ZS_OK) opened++;
    }
    int started = 0;
    for (int t = 0; rc == ZS_OK && t < nthreads; t++) {
        rds[t].x = x;
        if (nthreads == 1) {
            reader_main(&rds[t]);
        } else if (pthread_create(&rds[t].th, NULL, reader_main, &rds[t]) != 0) {
            zs_err_t e = {0};
            zs_err_set(&e, ZS_ENOMEM, "tensor parallel: cannot start reader thread %d", t);
            exec_fail(x, &e);
            break;
        } else {
            rds[t].started = 1;
            started++;
        }
    }
    for (int t = 0; t < nthreads && started > 0; t++)
        if (rds[t].started) pthread_join(rds[t].th, NULL);
    if (rc == ZS_OK && x->failed) rc = zs_err_set(err, x->err.code, "%s", x->err.msg);
    for (uint32_t f = 0; f < opened; f++) zs_io_close(&x->files[f]);
    free(x->files);
    free(rds);
    pthread_mutex_destroy(&x->mu);
    return rc;
}

int zs_tp_load_host(const zs_ckpt_t *ck, const zs_tp_plan_t *p, void *const *rank_bufs, zs_err_t *err) {
    tp_exec_t *x = calloc(1, sizeof *x);
    if (x == NULL) return zs_err_set(err, ZS_ENOMEM, "tensor parallel: out of memory");
    x->ck = ck;
    x->p = p;
    x->kind = ZS_DEV_CPU;
    x->base = rank_bufs;
    x->mode = ZS_IO_BUFFERED;
    int rc = exec_run(x, 1, err);
    free(x);
    return rc;
}

/* --- the weights --------------------------------------------------------------------------- */

void zs_tp_load_opts_default(zs_tp_load_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->kind = ZS_DEV_CPU;
    o->ranks = 1;
    o->direct_io = -1;
}

void zs_tp_weights_free(zs_tp_weights_t *w) {
    if (w == NULL) return;
    for (int r = 0; r < w->ranks && r < ZS_TP_MAX_RANKS; r++) {
        if (w->base[r] == NULL) continue;
        if (w->kind == ZS_DEV_CUDA) {
            zs_err_t ignore = {0};
            (void)zs_gpu_use_device(w->devices[r], &ignore);
            zs_gpu_free(w->base[r]);
        } else {
            free(w->base[r]);
        }
    }
    zs_tp_plan_free(&w->plan);
    free(w);
}

typedef struct tp_alloc_job {
    zs_tp_weights_t *w;
    int rank;
    int rc;
    zs_err_t err;
} tp_alloc_job_t;

/* One rank's allocation; on a GPU this creates its context (about 0.2 s), so ranks do it in
 * parallel. */
static void *tp_alloc_rank(void *arg) {
    tp_alloc_job_t *j = arg;
    zs_tp_weights_t *w = j->w;
    const uint64_t bytes = w->plan.rank_bytes[j->rank] ? w->plan.rank_bytes[j->rank] : 1;
    if (w->kind == ZS_DEV_CUDA) {
        j->rc = zs_gpu_set_device(w->devices[j->rank], &j->err);
        if (j->rc == ZS_OK) j->rc = zs_gpu_malloc(&w->base[j->rank], (size_t)bytes, &j->err);
        return NULL;
    }
    w->base[j->rank] = aligned_alloc(TP_ALLOC_ALIGN, (size_t)((bytes + TP_ALLOC_ALIGN - 1) / TP_ALLOC_ALIGN * TP_ALLOC_ALIGN));
    if (w->base[j->rank] == NULL)
        j->rc = zs_err_set(&j->err, ZS_ENOMEM, "out of memory for %llu bytes", (unsigned long long)bytes);
    return NULL;
}

static int tp_alloc(zs_tp_weights_t *w, zs_err_t *err) {
    tp_alloc_job_t jobs[ZS_TP_MAX_RANKS];
    pthread_t th[ZS_TP_MAX_RANKS];
    int started[ZS_TP_MAX_RANKS] = {0};
    memset(jobs, 0, sizeof jobs);
    for (int r = 0; r < w->ranks; r++) {
        jobs[r].w = w;
        jobs[r].rank = r;
        if (w->kind != ZS_DEV_CUDA || w->ranks == 1) tp_alloc_rank(&jobs[r]);
        else if (pthread_create(&th[r], NULL, tp_alloc_rank, &jobs[r]) == 0) started[r] = 1;
        else jobs[r].rc = zs_err_set(&jobs[r].err, ZS_ENOMEM, "cannot start a thread");
    }
    for (int r = 0; r < w->ranks; r++)
        if (started[r]) pthread_join(th[r], NULL);
    for (int r = 0; r < w->ranks; r++)
        if (jobs[r].rc != ZS_OK)
            return zs_err_set(err, jobs[r].rc, "tensor parallel: rank %d%s: %s", r,
                              w->kind == ZS_DEV_CUDA ? " allocation on its GPU" : " allocation", jobs[r].err.msg);
    return ZS_OK;
}

/* The checkpoint's tensors as zs_model_check_weights sees them, before anything is read: data
 * is the tensor's description (never dereferenced; the check only wants it present). */
static int ckpt_shape_lookup(void *ctx, const char *name, zs_wref_t *out) {
    const zs_tensor_info_t *t = zs_ckpt_find((const zs_ckpt_t *)ctx, name);
    if (t == NULL) return 1;
    out->data = t;
    out->dtype = t->dtype;
    out->ndim = t->ndim;
    memcpy(out->shape, t->shape, sizeof out->shape);
    return 0;
}

int zs_tp_load(const zs_ckpt_t *ck, const zs_tp_load_opts_t *opts, zs_tp_weights_t **out, zs_err_t *err) {
    *out = NULL;
    const double t0 = zs_now();
    zs_tp_load_opts_t o;
    if (opts) o = *opts;
    else zs_tp_load_opts_default(&o);
    if (o.ranks < 1 || o.ranks > ZS_TP_MAX_RANKS)
        return zs_err_set(err, ZS_EINVAL, "tensor parallel: %d ranks (1 to %d supported)", o.ranks, ZS_TP_MAX_RANKS);
    if (o.kind != ZS_DEV_CPU && o.kind != ZS_DEV_CUDA)
        return zs_err_set(err, ZS_EINVAL, "tensor parallel: unknown device kind %d", (int)o.kind);
    if (ck->config_json == NULL)
        return zs_err_set(err, ZS_ENOENT, "tensor parallel: %s has no config.json", ck->dir ? ck->dir : "checkpoint");
    if (o.staging_slots < 0 || o.staging_slots > TP_MAX_SLOTS)
        return zs_err_set(err, ZS_EINVAL, "tensor parallel: %d staging slots (1 to %d)", o.staging_slots, TP_MAX_SLOTS);
    zs_tp_weights_t *w = calloc(1, sizeof *w);
    if (w == NULL) return zs_err_set(err, ZS_ENOMEM, "tensor parallel: out of memory");
    w->ckpt = ck;
    w->kind = o.kind;
    w->ranks = o.ranks;
    int rc = zs_model_config_parse(ck->config_json, strlen(ck->config_json), &w->cfg, err);
    /* every tensor the config needs, with its shape, before a byte is read */
    if (rc == ZS_OK) rc = zs_model_check_weights(&w->cfg, ckpt_shape_lookup, (void *)ck, err);
    if (rc == ZS_OK && o.kind == ZS_DEV_CUDA) {
        const int ngpu = zs_gpu_count();
        for (int r = 0; r < o.ranks && rc == ZS_OK; r++) {
            w->devices[r] = o.devices ? o.devices[r] : r;
            if (w->devices[r] < 0 || w->devices[r] >= ngpu)
                rc = zs_err_set(err, ZS_EINVAL,
                                "tensor parallel: rank %d wants GPU %d, but %d GPU%s usable (a build without CUDA, or "
                                "no driver, has none)",
                                r, w->devices[r], ngpu, ngpu == 1 ? " is" : "s are");
            for (int q = 0; q < r && rc == ZS_OK; q++)
                if (w->devices[q] == w->devices[r])
                    rc = zs_err_set(err, ZS_EINVAL, "tensor parallel: ranks %d and %d both on GPU %d", q, r, w->devices[r]);
        }
    } else {
        for (int r = 0; r < o.ranks; r++) w->devices[r] = -1;
    }
    const size_t unit = o.unit_bytes ? o.unit_bytes : TP_DEFAULT_UNIT;
    if (rc == ZS_OK) rc = zs_tp_plan_build(ck, &w->cfg, o.ranks, unit, &w->plan, err);
    if (rc == ZS_OK) rc = tp_alloc(w, err);
    if (rc != ZS_OK) {
        zs_tp_weights_free(w);
        return rc;
    }
    w->stats.setup_s = zs_now() - t0;
    int threads = o.threads;
    if (threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        threads = nc > 0 ? (int)(nc * 2 < 16 ? nc * 2 : 16) : 4;
    }
    tp_exec_t *x = calloc(1, sizeof *x);
    if (x == NULL) rc = zs_err_set(err, ZS_ENOMEM, "tensor parallel: out of memory");
    if (rc == ZS_OK) {
        x->ck = ck;
        x->p = &w->plan;
        x->kind = o.kind;
        x->devices = w->devices;
        x->base = w->base;
        x->mode = o.direct_io < 0 ? ZS_IO_AUTO : o.direct_io ? ZS_IO_DIRECT : ZS_IO_BUFFERED;
        x->nslots = o.kind == ZS_DEV_CUDA ? (o.staging_slots ? o.staging_slots : 2) : 1;
        const double t1 = zs_now();
        rc = exec_run(x, threads, err);
        w->stats.read_s = zs_now() - t1;
        w->stats.read_bytes = atomic_load(&x->read);
        w->stats.bytes_direct = atomic_load(&x->direct);
        for (int r = 0; r < w->ranks; r++) w->delivered[r] = atomic_load(&x->delivered[r]);
        w->stats.threads = (size_t)threads > w->plan.nunits ? (int)w->plan.nunits : threads;
    }
    free(x);
    if (rc != ZS_OK) {
        zs_tp_weights_free(w);
        return rc;
    }
    w->stats.total_s = zs_now() - t0;
    *out = w;
    return ZS_OK;
}

int zs_tp_lookup(void *rank_view, const char *name, zs_wref_t *out) {
    const zs_tp_rank_view_t *v = rank_view;
    const zs_tp_weights_t *w = v->w;
    const zs_tensor_info_t *t = zs_ckpt_find(w->ckpt, name);
    if (t == NULL) return 1;
    const size_t ti = (size_t)(t - w->ckpt->tensors);
    const zs_tp_slice_t *s = &w->plan.slices[(size_t)v->rank * w->plan.ntensors + ti];
    out->data = (const char *)w->base[v->rank] + s->dst;
    out->dtype = t->dtype;
    out->ndim = t->ndim;
    memcpy(out->shape, t->shape, sizeof out->shape);
    if (s->kind != ZS_TP_REPLICATE) {
        out->shape[0] = s->shape[0];
        if (t->ndim == 2) out->shape[1] = s->shape[1];
    }
    return 0;
}
