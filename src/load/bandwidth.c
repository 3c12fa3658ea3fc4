/* Tier bandwidth measurements (include/zerostart/bandwidth.h): parallel file reads through
 * the same reader as the loader, and pinned host-to-GPU copies on several streams. */
#include "zerostart/bandwidth.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/clock.h"
#include "gpu/gpu_rt.h"
#include "io/file_reader.h"

typedef struct bw_piece {
    int file;
    uint64_t off;
    size_t len;
} bw_piece_t;

typedef struct bw_ctx {
    zs_io_file_t *files;
    bw_piece_t *pieces;
    size_t npieces;
    atomic_size_t next;
    zs_io_mode_t mode;
    size_t chunk;
    pthread_mutex_t mu;
    zs_err_t err;
} bw_ctx_t;

static void *bw_reader(void *arg) {
    bw_ctx_t *c = arg;
    size_t sz = zs_io_scratch_bytes(c->chunk);
    void *buf = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    zs_err_t err = {0};
    if (buf == MAP_FAILED) {
        zs_err_set(&err, ZS_ENOMEM, "read buffer of %zu bytes", sz);
    } else {
        size_t i;
        while ((i = atomic_fetch_add(&c->next, 1)) < c->npieces) {
            bw_piece_t *p = &c->pieces[i];
            void *data;
            int direct;
            if (zs_io_read(&c->files[p->file], c->mode, p->off, p->len, NULL, buf, &data, &direct, &err) != ZS_OK)
                break;
        }
        munmap(buf, sz);
    }
    if (err.code != ZS_OK) {
        pthread_mutex_lock(&c->mu);
        if (c->err.code == ZS_OK) c->err = err;
        pthread_mutex_unlock(&c->mu);
        atomic_store(&c->next, c->npieces);
    }
    return NULL;
}

int zs_bw_read_files(const char *const *paths, int n, int direct, int threads, size_t chunk,
                     zs_bw_result_t *out, zs_err_t *err) {
    if (n <= 0 || threads <= 0 || threads > 1024 || chunk == 0 || chunk % ZS_IO_ALIGN != 0)
        return zs_err_set(err, ZS_EINVAL, "bandwidth probe: bad arguments (files %d, threads %d, chunk %zu)",
                          n, threads, chunk);
    bw_ctx_t c = {.mode = direct ? ZS_IO_DIRECT : ZS_IO_BUFFERED, .chunk = chunk};
    pthread_mutex_init(&c.mu, NULL);
    c.files = calloc((size_t)n, sizeof *c.files);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    int rc = ZS_OK, opened = 0;
    uint64_t total = 0;
    if (c.files == NULL || th == NULL) {
        rc = zs_err_set(err, ZS_ENOMEM, "bandwidth probe: out of memory");
        goto done;
    }
    size_t cap = 0;
    for (int i = 0; i < n && rc == ZS_OK; i++, opened++) {
        rc = zs_io_open(&c.files[i], paths[i], c.mode, err);
        if (rc != ZS_OK) break;
        if (direct && c.files[i].fd_direct < 0) {
            rc = zs_err_set(err, ZS_EUNSUPPORTED, "%s: the file system refuses O_DIRECT", paths[i]);
            opened++;
            break;
        }
        for (uint64_t o = 0; o < c.files[i].size; o += chunk) {
            if (c.npieces == cap) {
                cap = cap ? cap * 2 : 1024;
                bw_piece_t *np = realloc(c.pieces, cap * sizeof *np);
                if (np == NULL) {
                    rc = zs_err_set(err, ZS_ENOMEM, "bandwidth probe: out of memory");
                    break;
                }
                c.pieces = np;
            }
            size_t len = c.files[i].size - o < chunk ? (size_t)(c.files[i].size - o) : chunk;
            c.pieces[c.npieces++] = (bw_piece_t){i, o, len};
            total += len;
        }
    }
    if (rc != ZS_OK) goto done;
    double t0 = zs_now();
    int started = 0;
    for (; started < threads; started++)
        if (pthread_create(&th[started], NULL, bw_reader, &c) != 0) break;
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    double dt = zs_now() - t0;
    if (started == 0) rc = zs_err_set(err, ZS_ENOMEM, "bandwidth probe: no thread could start");
    else if (c.err.code != ZS_OK) {
        rc = c.err.code;
        if (err) *err = c.err;
    } else {
        *out = (zs_bw_result_t){dt, (double)total, dt > 0 ? (double)total / dt / 1e9 : 0};
    }
done:
    for (int i = 0; i < opened; i++) zs_io_close(&c.files[i]);
    free(c.files);
    free(c.pieces);
    free(th);
    pthread_mutex_destroy(&c.mu);
    return rc;
}

int zs_bw_h2d(int dev, size_t bytes, int streams, int reps, zs_bw_result_t *out, zs_err_t *err) {
    if (bytes == 0 || streams <= 0 || streams > 64 || reps <= 0)
        return zs_err_set(err, ZS_EINVAL, "h2d probe: bad arguments");
    int rc = zs_gpu_set_device(dev, err);
    if (rc != ZS_OK) return rc;
    void *host = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (host == MAP_FAILED) return zs_err_set(err, ZS_ENOMEM, "h2d probe: %zu bytes of host memory", bytes);
    memset(host, 0x5a, bytes);
    void *devp = NULL;
    zs_gpu_stream_t *st[64] = {0};
    int registered = 0;
    rc = zs_gpu_host_register(host, bytes, err);
    registered = rc == ZS_OK;
    if (rc == ZS_OK) rc = zs_gpu_malloc(&devp, bytes, err);
    for (int s = 0; s < streams && rc == ZS_OK; s++) rc = zs_gpu_stream_create(&st[s], err);
    double best = 0;
    size_t part = (bytes / (size_t)streams) & ~(size_t)4095;
    for (int r = 0; r <= reps && rc == ZS_OK; r++) { /* repetition 0 warms up */
        double t0 = zs_now();
        for (int s = 0; s < streams && rc == ZS_OK; s++) {
            size_t off = part * (size_t)s, len = s == streams - 1 ? bytes - off : part;
            rc = zs_gpu_memcpy_h2d_async((char *)devp + off, (char *)host + off, len, st[s], err);
        }
        for (int s = 0; s < streams && rc == ZS_OK; s++) rc = zs_gpu_stream_sync(st[s], err);
        double dt = zs_now() - t0;
        if (r > 0 && rc == ZS_OK && (best == 0 || dt < best)) best = dt;
    }
    if (rc == ZS_OK) *out = (zs_bw_result_t){best, (double)bytes, (double)bytes / best / 1e9};
    for (int s = 0; s < streams; s++) zs_gpu_stream_destroy(st[s]);
    zs_gpu_free(devp);
    if (registered) zs_gpu_host_unregister(host);
    munmap(host, bytes);
    return rc;
}
