/* Byte-for-byte verification of loaded weights against a plain buffered read of each
 * tensor from its file (GPU tensors are copied back to the host first): a whole model in one
 * allocation, or the shards of a tensor-parallel load (each rank's slice of each tensor). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu/gpu_rt.h"
#include "zerostart/load.h"
#include "zerostart/tp.h"
#include "zerostart/verify.h"

#define VERIFY_BUF (16u << 20)

static int verify_read(int fd, const char *path, char *buf, size_t len, uint64_t off, zs_err_t *err) {
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, buf + got, len - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0)
            return zs_err_set(err, zs_status_from_errno(errno), "read %s at offset %llu: %s", path,
                              (unsigned long long)(off + got), strerror(errno));
        if (r == 0)
            return zs_err_set(err, ZS_EIO, "read %s at offset %llu: unexpected end of file", path,
                              (unsigned long long)(off + got));
        got += (size_t)r;
    }
    return ZS_OK;
}

/* Every checkpoint file opened for reading (fds[nfiles], -1 where not open). */
static int verify_open(const zs_ckpt_t *ck, int **fds_out, zs_err_t *err) {
    int *fds = malloc((ck->nfiles + 1) * sizeof *fds);
    *fds_out = fds;
    if (fds == NULL) return zs_err_set(err, ZS_ENOMEM, "out of memory for verification");
    for (uint32_t i = 0; i < ck->nfiles; i++) fds[i] = -1;
    for (uint32_t i = 0; i < ck->nfiles; i++) {
        fds[i] = open(ck->files[i].path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0)
            return zs_err_set(err, zs_status_from_errno(errno), "open %s: %s", ck->files[i].path, strerror(errno));
    }
    return ZS_OK;
}

static void verify_close(const zs_ckpt_t *ck, int *fds) {
    if (fds != NULL)
        for (uint32_t i = 0; i < ck->nfiles; i++)
            if (fds[i] >= 0) close(fds[i]);
    free(fds);
}

int zs_weights_verify(const zs_weights_t *w, uint64_t *bytes_checked, zs_err_t *err) {
    const zs_ckpt_t *ck = w->ckpt;
    char *file_buf = malloc(VERIFY_BUF), *dev_buf = malloc(VERIFY_BUF);
    int *fds = NULL;
    int rc = verify_open(ck, &fds, err);
    if (rc == ZS_OK && (file_buf == NULL || dev_buf == NULL))
        rc = zs_err_set(err, ZS_ENOMEM, "out of memory for verification buffers");
    uint64_t checked = 0;
    for (size_t t = 0; t < w->ntensors && rc == ZS_OK; t++) {
        const zs_tensor_t *ten = &w->tensors[t];
        const zs_tensor_info_t *ti = ten->info;
        for (uint64_t o = 0; o < ti->nbytes && rc == ZS_OK; o += VERIFY_BUF) {
            size_t n = ti->nbytes - o < VERIFY_BUF ? (size_t)(ti->nbytes - o) : VERIFY_BUF;
            rc = verify_read(fds[ti->file], ck->files[ti->file].path, file_buf, n, ti->file_offset + o, err);
            if (rc != ZS_OK) break;
            const char *got = (const char *)ten->data + o;
            if (w->device.kind == ZS_DEV_CUDA) {
                rc = zs_gpu_memcpy_d2h(dev_buf, got, n, err);
                if (rc != ZS_OK) break;
                got = dev_buf;
            }
            if (memcmp(got, file_buf, n) != 0) {
                size_t k = 0;
                while (k < n && got[k] == file_buf[k]) k++;
                rc = zs_err_set(err, ZS_EIO, "tensor '%s': loaded byte %llu differs from %s offset %llu",
                                ti->name, (unsigned long long)(o + k), ck->files[ti->file].path,
                                (unsigned long long)(ti->file_offset + o + k));
            }
            checked += n;
        }
    }
    if (bytes_checked) *bytes_checked = checked;
    verify_close(ck, fds);
    free(file_buf);
    free(dev_buf);
    return rc;
}

/* Compares n shard bytes of `rank` at offset off of its allocation with want. */
static int verify_shard(const zs_tp_weights_t *w, int rank, uint64_t off, const char *want, size_t n, char *dev_buf,
                        const zs_tensor_info_t *ti, zs_err_t *err) {
    const char *got = (const char *)w->base[rank] + off;
    if (w->kind == ZS_DEV_CUDA) {
        int rc = zs_gpu_use_device(w->devices[rank], err);
        if (rc == ZS_OK) rc = zs_gpu_memcpy_d2h(dev_buf, got, n, err);
        if (rc != ZS_OK) return rc;
        got = dev_buf;
    }
    if (memcmp(got, want, n) == 0) return ZS_OK;
    size_t k = 0;
    while (k < n && got[k] == want[k]) k++;
    return zs_err_set(err, ZS_EIO, "tensor '%s': rank %d's shard differs from the file at shard byte %llu", ti->name,
                      rank, (unsigned long long)(off + k));
}

int zs_tp_weights_verify(const zs_tp_weights_t *w, uint64_t *bytes_checked, zs_err_t *err) {
    const zs_ckpt_t *ck = w->ckpt;
    const zs_tp_plan_t *p = &w->plan;
    size_t cap = VERIFY_BUF; /* room for at least one row of any tensor */
    for (size_t t = 0; t < ck->ntensors; t++) {
        const zs_tensor_info_t *ti = &ck->tensors[t];
        uint64_t rb = ti->nbytes / (uint64_t)(ti->ndim >= 1 && ti->shape[0] > 0 ? ti->shape[0] : 1);
        if (rb > cap) cap = (size_t)rb;
    }
    char *file_buf = malloc(cap), *dev_buf = malloc(cap), *cols = malloc(cap);
    int *fds = NULL;
    int rc = verify_open(ck, &fds, err);
    if (rc == ZS_OK && (file_buf == NULL || dev_buf == NULL || cols == NULL))
        rc = zs_err_set(err, ZS_ENOMEM, "out of memory for verification buffers");
    uint64_t checked = 0;
    for (size_t t = 0; t < ck->ntensors && rc == ZS_OK; t++) {
        const zs_tensor_info_t *ti = &ck->tensors[t];
        const int64_t rows = ti->ndim >= 1 && ti->shape[0] > 0 ? ti->shape[0] : 1;
        const uint64_t rb = ti->nbytes / (uint64_t)rows, item = zs_dtype_size(ti->dtype);
        if (ti->nbytes == 0) continue;
        const int64_t k = (int64_t)(cap / rb);
        for (int64_t a = 0; a < rows && rc == ZS_OK; a += k) { /* rows [a, e) of the file */
            const int64_t e = rows - a < k ? rows : a + k;
            rc = verify_read(fds[ti->file], ck->files[ti->file].path, file_buf, (size_t)((uint64_t)(e - a) * rb),
                             ti->file_offset + (uint64_t)a * rb, err);
            for (int r = 0; r < p->ranks && rc == ZS_OK; r++) {
                const zs_tp_slice_t *s = &p->slices[(size_t)r * p->ntensors + t];
                if (s->kind == ZS_TP_COLS) { /* the column block of each row, densely in the shard */
                    const uint64_t width = (uint64_t)(s->end - s->begin) * item;
                    for (int64_t i = a; i < e; i++)
                        memcpy(cols + (uint64_t)(i - a) * width, file_buf + (uint64_t)(i - a) * rb + (uint64_t)s->begin * item,
                               width);
                    rc = verify_shard(w, r, s->dst + (uint64_t)a * width, cols, (size_t)((uint64_t)(e - a) * width), dev_buf,
                                      ti, err);
                    checked += (uint64_t)(e - a) * width;
                    continue;
                }
                /* whole rows: all of them (replicated) or the rank's range */
                const int64_t b0 = s->kind == ZS_TP_ROWS ? s->begin : 0, b1 = s->kind == ZS_TP_ROWS ? s->end : rows;
                const int64_t lo = a > b0 ? a : b0, hi = e < b1 ? e : b1;
                if (lo >= hi) continue;
                rc = verify_shard(w, r, s->dst + (uint64_t)(lo - b0) * rb, file_buf + (uint64_t)(lo - a) * rb,
                                  (size_t)((uint64_t)(hi - lo) * rb), dev_buf, ti, err);
                checked += (uint64_t)(hi - lo) * rb;
            }
        }
    }
    if (bytes_checked) *bytes_checked = checked;
    verify_close(ck, fds);
    free(file_buf);
    free(dev_buf);
    free(cols);
    return rc;
}
